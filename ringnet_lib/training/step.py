"""The 6-branch step: B rings of R images through one encoder call, one decoder call, the losses.

RingNet's R "branches" share all their weights, so they are one network applied
to a batch of B·R images; nothing here loops over branches.

    images B x R x 3 x H x W --flatten--> encoder (B·R) --> params B·R x 159
    --> decoder (FLAME, 68 landmarks, weak perspective; one call) --> B x R x 68 x 2
    --> losses: ring loss on β (B x R x 100), landmark loss, regularisers
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .. import losses
from ..decoder import Decoder
from ..params import N_PARAMS, split_params


class RingPrediction(NamedTuple):
    params: torch.Tensor  # B x R x 159
    landmarks2d: torch.Tensor  # B x R x L x 2 (L = decoder.n_landmarks)
    terms: dict  # loss terms (scalars), named as losses.LossWeights
    total: torch.Tensor  # scalar


def ring_step(encoder: nn.Module, decoder: Decoder, batch: dict, consistency: str = "ring",
              weights: losses.LossWeights = losses.LossWeights(), margin: float = losses.RING_MARGIN,
              amp_dtype: torch.dtype | None = None) -> RingPrediction:
    """Forward pass and losses for a batch of rings (no backward, no optimiser).

    Args:
        encoder: images ``N x 3 x H x W`` -> object with ``.params`` ``N x 159`` (maybe DDP-wrapped).
        decoder: parameters -> landmarks (:class:`ringnet_lib.decoder.Decoder`; never trained).
        batch: ``images`` B x R x 3 x H x W, ``landmarks`` B x R x 68 x 2, ``confidence`` B x R x 68,
            optional ``identity`` B x R and ``true_shape`` B x R x 100 (read only when
            ``weights.true_shape_mse`` > 0).
        consistency: one of :data:`ringnet_lib.losses.CONSISTENCY_MODES`.
        weights: the λ.
        margin: η of the ring loss.
        amp_dtype: autocast dtype for the encoder (e.g. bf16 on CUDA); the decoder and losses stay float32.
    Returns:
        :class:`RingPrediction`.
    """
    if consistency not in losses.CONSISTENCY_MODES:
        raise ValueError(f"consistency must be one of {losses.CONSISTENCY_MODES}, got {consistency!r}")
    images = batch["images"]
    n_rings, ring = images.shape[:2]
    identity = batch.get("identity")
    if identity is None:
        identity = losses.default_ring_identity(n_rings, ring, device=images.device)
    target = batch["landmarks"][:, :, decoder.target_index]  # B x R x L x 2
    confidence = batch["confidence"][:, :, decoder.target_index]  # B x R x L

    # 1. Encoder: one call for all B·R images (the branches share their weights).
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        params = encoder(images.flatten(0, 1)).params.float()  # B·R x 159
    ring_params = params.view(n_rings, ring, N_PARAMS)
    blocks = split_params(ring_params)  # β and ψ of every ring position, for the losses

    # 2. Decoder: one call. "swap" decodes the original and the swapped β together (2·B·R meshes);
    #    "mean" decodes every image with its identity's mean β.
    swapped2d = None
    if consistency == "swap":
        swapped = losses.swapped_shapes(blocks.shape, identity)
        both = decoder(torch.cat([params, params]), torch.cat([blocks.shape.flatten(0, 1), swapped.flatten(0, 1)]))
        landmarks2d, swapped2d = both.landmarks2d.view(2, n_rings, ring, -1, 2).unbind(0)
    else:
        shape = losses.mean_shapes(blocks.shape, identity).flatten(0, 1) if consistency == "mean" else None
        landmarks2d = decoder(params, shape).landmarks2d.view(n_rings, ring, -1, 2)

    # 3. Losses.
    true_shape = None
    if weights.true_shape_mse:  # the supervised diagnostic, not RingNet's (see losses.true_shape_mse)
        if "true_shape" not in batch:
            raise ValueError("w_true_shape_mse > 0 needs the true β of every image (batch['true_shape']): synthetic "
                             "data has them, photos do not; set w_true_shape_mse to 0")
        true_shape = batch["true_shape"]
    terms = losses.ring_net_terms(blocks.shape, blocks.expression, landmarks2d, target, confidence, consistency,
                                  margin, swapped2d, true_shape)
    return RingPrediction(ring_params, landmarks2d, terms, losses.total_loss(terms, weights))
