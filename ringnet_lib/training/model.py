"""The model a config describes: its decoder (FLAME + landmarks) and its encoder (trunk + regressor)."""
from __future__ import annotations

import torch

from ..decoder import Decoder
from ..encoder import RingNetEncoder
from .config import TrainConfig


def build_decoder(config: TrainConfig) -> Decoder:
    """``config.flame_model`` (None: the embedded default head) with 68 or 51 landmarks."""
    return Decoder(config.flame_model, landmarks68=config.landmarks68)


def build_encoder(config: TrainConfig, decoder: Decoder, mean_camera: torch.Tensor | None = None) -> RingNetEncoder:
    """The encoder, starting from the mean head seen through ``mean_camera`` (3) when the dataset
    provides one, else through a camera that frames the mean head's landmarks."""
    return RingNetEncoder(trunk=config.trunk, weights_path=config.trunk_weights, n_iterations=config.n_iterations,
                          dropout=config.dropout, initial_params=decoder.initial_params(camera=mean_camera))


def set_train_mode(encoder: torch.nn.Module, bn_mode: str) -> None:
    """Training mode, except BatchNorm with ``bn_mode="eval"`` (running statistics, per-image maths)."""
    encoder.train()
    if bn_mode == "eval":
        for module in encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
