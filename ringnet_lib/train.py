"""RingNet training: one loop for every front door (Python, CLI, papermill, torchrun).

    python -m ringnet_lib.train --preset quick                       # CPU minutes, on in-memory renders
    python -m ringnet_lib.train --preset quick --epochs 1 --ring-size 3 --out-dir runs/try
    python -m ringnet_lib.train --preset quick --data synthetic      # the shipped textured sample (data_samples/synthetic)
    python -m ringnet_lib.train --preset paper --device cuda         # R=6, 224 px, ResNet-50, 10 epochs
    python -m ringnet_lib.train --preset quick --resume auto         # continue runs/quick/checkpoint.pt exactly
    torchrun --standalone --nproc_per_node 2 -m ringnet_lib.train --preset quick   # DDP (gloo on CPU, NCCL on GPU)

    from ringnet_lib.train import TrainConfig, train
    result = train(TrainConfig.from_preset("quick", epochs=1))

The fields of :class:`TrainConfig` are at once the papermill parameters of
``notebooks/06_training.ipynb`` and the CLI flags (``--ring-size`` for
``ring_size``; booleans as ``--flag/--no-flag``); an unknown flag is an error.
A preset sets many fields at once; explicit values override it.

Choices (say them once): Adam at lr 1e-4 (the paper's); the encoder alone is
trained (FLAME holds buffers only); BatchNorm statistics are per process
(``bn_mode="train"``), or synchronised (``"sync"``, SyncBatchNorm) or frozen
(``"eval"``, running statistics) on request; bf16 autocast and channels_last
only on CUDA (the trunk only; FLAME and the losses stay float32).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import losses
from .encoder import TRUNK_FEATURES, RingNetEncoder
from .flame import FLAME
from .params import SHAPE
from .training import checkpoint as ckpt
from .training.data import RingBatchSampler, collate_rings, make_dataset
from .training.distributed import (any_process, cleanup_distributed, gather_objects, mean_over_processes,
                                   setup_distributed)
from .training.step import LandmarkHead, initial_params_from_flame, ring_step


@dataclass
class TrainConfig:
    """Everything a run depends on. Field names = papermill parameters = CLI flags."""

    preset: str = "quick"
    # data
    data: str = "memory"  # "memory", "synthetic" (data_samples/synthetic) or a dataset folder
    flip_probability: float = 0.0  # horizontal flips of folder datasets
    n_identities: int = 48
    images_per_identity: int = 6
    n_rings: int = 0  # rings per epoch (0: one per identity)
    data_seed: int = 0
    image_size: int = 64
    ring_size: int = 4  # R
    batch_size: int = 4  # rings per optimiser step, over all processes
    # model
    trunk: str = "resnet18"
    trunk_weights: str = ""  # local ImageNet weights file; never downloaded
    n_iterations: int = 3
    dropout: float = 0.5
    flame_model: str = ""  # FLAME folder; "" = the embedded default head
    landmarks68: bool = True  # False: FLAME's 51 static landmarks (a model without flame_dynamic_embedding.npy)
    bn_mode: str = "train"  # "train" (per process), "sync" (SyncBatchNorm under DDP) or "eval" (frozen stats)
    # loss
    consistency: str = "ring"  # "ring", "swap", "mean" or "none" (ablations)
    margin: float = losses.RING_MARGIN
    w_consistency: float = 1.0
    w_landmarks: float = 60.0
    w_shape: float = 1e-4
    w_expression: float = 1e-4
    w_true_shape: float = 0.0  # not RingNet's: weight of the error to the true β (synthetic data), a diagnostic
    # optimisation
    lr: float = 1e-4
    epochs: int = 1
    max_steps: int = 0  # > 0: stop after this many steps in total (overrides epochs)
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    threads: int = 0  # torch CPU threads (0: leave as is)
    # bookkeeping
    out_dir: str = "runs/quick"
    resume: str = ""  # "", "auto" (out_dir's checkpoint if any) or a checkpoint path
    checkpoint_every: int = 50
    log_every: int = 10
    image_every: int = 100
    eval_rings: int = 16  # rings for the start/end metrics (0: skip)
    tensorboard: bool = True
    progress: bool = True
    progress_interval: float = 10.0  # tqdm mininterval, seconds

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides) -> "TrainConfig":
        """The preset's values, then ``overrides`` (unknown names are an error)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown config fields {sorted(unknown)}")
        return cls(**{**PRESETS[preset], **overrides, "preset": preset})

    def loss_weights(self) -> losses.LossWeights:
        return losses.LossWeights(self.w_consistency, self.w_landmarks, self.w_shape, self.w_expression,
                                  self.w_true_shape)


PRESETS = {
    # CPU minutes (about 6 on 2 cores): ResNet-18 at 64 px, rings of 4, 4 rings a step, on 1,000
    # in-memory identities x 5 grey renders (5 epochs of 250 steps), the paper's lr 1e-4 (1e-3
    # learned slower here: landmark loss 0.122 vs 0.100 after 500 steps).
    "quick": dict(trunk="resnet18", image_size=64, ring_size=4, batch_size=4, epochs=5, data="memory",
                  n_identities=1000, images_per_identity=5, dropout=0.1, eval_rings=32,
                  out_dir="runs/quick", log_every=10, image_every=250, checkpoint_every=250),
    # The paper's set-up, for a GPU: R = 6, 224 px, ResNet-50, 10 epochs, lr 1e-4.
    "paper": dict(trunk="resnet50", image_size=224, ring_size=6, batch_size=8, epochs=10, data="synthetic",
                  dropout=0.5, device="cuda", n_identities=2000, out_dir="runs/paper", checkpoint_every=500,
                  log_every=20, image_every=500, eval_rings=64),
}

# Fields that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = {"preset", "epochs", "max_steps", "resume", "out_dir", "checkpoint_every", "log_every",
                     "image_every", "eval_rings", "tensorboard", "progress", "progress_interval", "threads",
                     "device"}


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict of loss terms per step
    checkpoint: Path | None = None
    initial_metrics: dict = field(default_factory=dict)
    final_metrics: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN/Inf; the last good checkpoint is kept."""


def validate_config(config: TrainConfig) -> None:
    """Clear errors for values that would only fail later."""
    checks = [(config.trunk in TRUNK_FEATURES, f"trunk must be one of {sorted(TRUNK_FEATURES)}"),
              (config.consistency in losses.CONSISTENCY_MODES,
               f"consistency must be one of {losses.CONSISTENCY_MODES}"),
              (config.bn_mode in ("train", "sync", "eval"), "bn_mode must be 'train', 'sync' or 'eval'"),
              (config.ring_size >= 2, "ring_size must be >= 2 (one identity plus one other)"),
              (config.batch_size >= 1 and config.image_size >= 16, "batch_size >= 1 and image_size >= 16"),
              (config.epochs >= 1 or config.max_steps > 0, "epochs or max_steps must be positive"),
              (config.w_true_shape >= 0, "w_true_shape must be >= 0 (0: RingNet's losses only)")]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{message}; got {config}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={config.device!r} but CUDA is not available; use --device cpu")


def check_compatible(saved: dict, config: TrainConfig) -> None:
    """A checkpoint resumes only the run it came from: same model, data, loss and optimiser settings."""
    saved = {**dataclasses.asdict(TrainConfig()), **saved}  # a field newer than the checkpoint had its default
    different = {k: (saved[k], v) for k, v in dataclasses.asdict(config).items()
                 if k not in RESUMABLE_CHANGES and saved[k] != v}
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(different.items()))
        raise ValueError(f"the checkpoint comes from another config ({detail}); start a new out_dir or match them")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_encoder(config: TrainConfig, flame: FLAME, head: LandmarkHead,
                  mean_camera: torch.Tensor | None = None) -> RingNetEncoder:
    """The encoder, starting from the mean head seen through ``mean_camera`` (3) when the
    dataset provides one, else through a camera that frames the mean head's landmarks."""
    return RingNetEncoder(trunk=config.trunk, weights_path=config.trunk_weights or None,
                          n_iterations=config.n_iterations, dropout=config.dropout,
                          initial_params=initial_params_from_flame(flame, head, camera=mean_camera))


def set_train_mode(encoder: torch.nn.Module, bn_mode: str) -> None:
    """Training mode, except BatchNorm with ``bn_mode="eval"`` (running statistics, per-image maths)."""
    encoder.train()
    if bn_mode == "eval":
        for module in encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def evaluate(encoder, flame: FLAME, head: LandmarkHead, dataset, n_rings: int, device) -> dict:
    """Landmark loss and shape error on the first rings, in eval mode.

    ``shape_error_mm`` (datasets with ground truth): the mean vertex distance between the
    predicted and the true neutral meshes over the face, after a similarity fit
    (:func:`ringnet_lib.evaluation.benchmark.face_region_error_mm`).
    """
    from .evaluation.benchmark import face_region_error_mm

    was_training = encoder.training
    encoder.eval()
    batch = collate_rings([dataset[i] for i in range(min(n_rings, len(dataset)))])
    batch = {k: v.to(device) for k, v in batch.items()}
    prediction = ring_step(encoder, flame, head, batch)
    metrics = {"landmarks": prediction.terms["landmarks"].item()}
    if "shape" in batch:
        predicted = prediction.params[..., SHAPE].flatten(0, 1)
        truth = batch["shape"].flatten(0, 1).to(predicted.dtype)
        metrics["shape_error_mm"] = face_region_error_mm(flame, predicted, truth).mean().item()
        metrics["mean_shape_error_mm"] = face_region_error_mm(flame, torch.zeros_like(truth), truth).mean().item()
    encoder.train(was_training)
    return metrics


def train(config: TrainConfig, on_step=None, flame: FLAME | None = None) -> TrainResult:
    """Train the encoder.

    Args:
        config: the run.
        on_step: ``on_step(step, record)`` after every step (live plots); raising stops the run.
        flame: an already loaded decoder for ``config.flame_model`` (saves loading it twice in a notebook).
    Returns:
        :class:`TrainResult`.
    """
    validate_config(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    context = setup_distributed(device.type)
    try:
        return _train(config, on_step, device, context, flame)
    finally:
        cleanup_distributed(context)


def _train(config: TrainConfig, on_step, device, context, flame: FLAME | None) -> TrainResult:
    from .training.logging import RunLogger

    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    checkpoint_path = out_dir / ckpt.CHECKPOINT_NAME
    saved = None
    if config.resume:
        resume_path = checkpoint_path if config.resume == "auto" else Path(config.resume)
        if config.resume != "auto" or resume_path.is_file():
            saved = ckpt.load_checkpoint(resume_path)
            check_compatible(saved["config"], config)
    flame = FLAME(config.flame_model or None) if flame is None else flame
    dataset = make_dataset(config, flame)  # bad paths / ring sizes fail here, before any training
    flame = flame.to(device)
    head = LandmarkHead(flame, use_68=config.landmarks68).to(device)
    seed_everything(config.seed)  # the same initial weights in every process
    encoder = build_encoder(config, flame, head, getattr(dataset, "mean_camera", None)).to(device)
    use_cuda = device.type == "cuda"
    if use_cuda and config.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    if context.enabled and config.bn_mode == "sync":
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    sampler = RingBatchSampler(len(dataset), config.batch_size, config.seed, context.rank, context.world_size)
    total_steps = config.max_steps if config.max_steps > 0 else config.epochs * sampler.batches_per_epoch
    result = TrainResult(checkpoint=checkpoint_path)

    step = 0
    if saved is not None:
        encoder.load_state_dict(ckpt.strip_wrappers(saved["model"]))
        optimizer.load_state_dict(saved["optimizer"])
        sampler.load_state_dict(saved["sampler"])
        step, result.history = saved["step"], list(saved["history"])
        result.initial_metrics = saved.get("initial_metrics", {})
    elif context.is_main and config.eval_rings:
        result.initial_metrics = evaluate(encoder, flame, head, dataset, config.eval_rings, device)
    model = encoder
    if context.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            encoder, device_ids=[context.local_rank] if use_cuda else None)
    if saved is not None:
        states = saved["rng"]
        ckpt.set_rng_state(states[context.rank] if len(states) == context.world_size else states[0])
    else:
        seed_everything(config.seed + context.rank)  # dropout differs between processes, as it should

    def save() -> None:
        states = gather_objects(ckpt.rng_state(), context)
        if context.is_main:
            ckpt.save_checkpoint(checkpoint_path, {
                "model": encoder.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
                "step": step, "rng": states, "history": result.history, "config": dataclasses.asdict(config),
                "initial_metrics": result.initial_metrics})

    logger = RunLogger(config, out_dir, total_steps, step, enabled=context.is_main)
    amp_dtype = torch.bfloat16 if use_cuda and config.amp else None
    weights = config.loss_weights()
    set_train_mode(encoder, config.bn_mode)
    try:
        while step < total_steps:
            indices = sampler.next_indices()
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(sampler.epoch)
            batch = collate_rings([dataset[i] for i in indices])
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if use_cuda and config.channels_last:
                images = batch["images"]
                batch["images"] = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(images.shape)
            prediction = ring_step(model, flame, head, batch, config.consistency, weights, config.margin, amp_dtype)
            optimizer.zero_grad(set_to_none=True)
            prediction.total.backward()
            # One device sync for the loss and all gradients (not one per tensor).
            checks = [torch.isfinite(prediction.total.detach())]
            checks += [torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None]
            finite = bool(torch.stack(checks).all())
            if any_process(not finite, context, device):
                terms = {k: float(v.detach()) for k, v in prediction.terms.items()}
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at step {step + 1} (terms: {terms}); stopped before the "
                    "optimiser step. "
                    f"The last good checkpoint is kept: {checkpoint_path if checkpoint_path.exists() else 'none yet'}")
            optimizer.step()
            step += 1
            record = {k: float(v.detach()) for k, v in prediction.terms.items()}
            record["total"] = float(prediction.total.detach())
            record = mean_over_processes(record, context, device)
            record["step"] = step
            result.history.append(record)
            logger.step(step, record, batch, prediction, head.target_index)
            if step % config.checkpoint_every == 0 or step == total_steps:
                save()
            if on_step is not None:
                on_step(step, record)
    finally:
        logger.close()
    if context.is_main and config.eval_rings:
        result.final_metrics = evaluate(encoder, flame, head, dataset, config.eval_rings, device)
    result.steps, result.seconds = step, time.perf_counter() - started
    return result


# --------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field; unset flags keep the preset's value."""
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.train", description=__doc__.split("\n")[0],
                                     argument_default=argparse.SUPPRESS, allow_abbrev=False)
    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = type(item.default)
        if kind is bool:
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction)
        elif item.name == "preset":
            parser.add_argument(flag, dest=item.name, choices=sorted(PRESETS))
        else:
            parser.add_argument(flag, dest=item.name, type=kind, metavar=kind.__name__.upper())
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    values = vars(build_parser().parse_args(argv))  # unknown flags: argparse exits with an error
    return TrainConfig.from_preset(values.pop("preset", "quick"), **values)


def changed_fields(config: TrainConfig) -> dict:
    """The fields of ``config`` that differ from its preset (or from the dataclass default where the preset is silent)."""
    preset = PRESETS[config.preset]
    return {key: value for key, value in dataclasses.asdict(config).items()
            if key != "preset" and value != preset.get(key, getattr(TrainConfig, key))}


def config_to_args(config: TrainConfig) -> list[str]:
    """The shortest CLI flags that rebuild ``config``: ``config_from_args(config_to_args(c)) == c``."""
    flags = ["--preset", config.preset]
    for key, value in changed_fields(config).items():
        name = key.replace("_", "-")
        flags += [f"--{name}" if value else f"--no-{name}"] if isinstance(value, bool) else [f"--{name}", str(value)]
    return flags


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    try:
        result = train(config)
    except (NonFiniteLossError, ckpt.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = result.history[-1] if result.history else {}
    if result.history and not math.isnan(last.get("total", 0.0)):
        print(f"done: {result.steps} steps in {result.seconds:.0f} s; last step: "
              + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
    if result.initial_metrics or result.final_metrics:
        print(f"metrics at start: {result.initial_metrics}\nmetrics at end:   {result.final_metrics}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
