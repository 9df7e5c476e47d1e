"""Fit FLAME (β, ψ, pose) and a weak-perspective camera to 68 2D landmarks: one image, or several of one person.

Gradient descent in two stages, as classic landmark fitting does:

1. **rigid**: only the global rotation and the camera (s, tx, ty) move, so the head first
   faces the right way at the right size before shape can compensate for a wrong pose;
2. **all**: shape β, expression ψ, global + jaw rotation and camera together.

The objective is the one RingNet's training uses for its landmark term (Sanyal et al. 2019,
Sec. 3), without the ring term:

    L = λ_proj · landmark_loss(decoder(params).landmarks2d, target, confidence) + λ_β ‖β‖² + λ_ψ ‖ψ‖²

``landmark_loss``, ``squared_norm`` and the λ (:class:`ringnet_lib.losses.LossWeights`, the
paper's 60, 1e-4, 1e-4) are training's own, and the landmarks come from the same
:class:`~ringnet_lib.decoder.Decoder`, so fitting and training optimise the same terms.

``shared_shape=True`` fits ONE β to several photos of one person (each keeps its own ψ,
pose and camera): the ring's idea without a network. One view's 68 landmarks leave β
under-determined (:mod:`ringnet_lib.evaluation.identifiability`); more views pin it down.

All 2D coordinates are *normalised* image coordinates (see :mod:`ringnet_lib.camera`);
multiply errors by ``S / 2`` for pixels in an ``S x S`` crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .camera import fit_weak_perspective
from .decoder import Decoder
from .losses import LossWeights, landmark_loss, squared_norm
from .params import N_PARAMS, N_POSE, POSE_GLOBAL, join_params


@dataclass
class FitConfig:
    # 100 + 300 steps: on skimage's astronaut, 1.31 px mean residual at 224 px in 3.1 s (one thread, a busy
    # machine); 150 + 500 reach 1.07 px in 5.5 s, 40 + 120 2.16 px in 1.6 s.
    rigid_steps: int = 100
    all_steps: int = 300
    learning_rate: float = 0.02
    weights: LossWeights = field(default_factory=LossWeights)  # λ_proj, λ_β, λ_ψ (λ_sc unused)


@dataclass
class FitResult:
    shape: torch.Tensor  # B x 100 (the same row B times with shared_shape)
    expression: torch.Tensor  # B x 50
    pose: torch.Tensor  # B x 6: global, jaw (RingNet's layout)
    camera: torch.Tensor  # B x 3: s, tx, ty
    losses: list = field(default_factory=list)  # total loss per step, both stages
    stages: dict = field(default_factory=dict)  # name -> B x L x 2 landmarks after that stage

    @property
    def params(self) -> torch.Tensor:
        """``B x 159``: the fit in the encoder's layout."""
        return join_params(self.camera, self.pose, self.shape, self.expression)


def fit_to_landmarks(decoder: Decoder, target: torch.Tensor, confidence: torch.Tensor | None = None,
                     config: FitConfig | None = None, shared_shape: bool = False) -> FitResult:
    """Fit β, ψ, global + jaw pose and camera to ``B x 68 x 2`` normalised landmarks.

    Args:
        decoder: the model (its ``target_index`` says which of the 68 targets are used).
        target: ``B x 68 x 2``.
        confidence: ``B x 68`` weights, or None (all 1).
        config: steps, learning rate and the λ.
        shared_shape: one β for all B images (several photos of one person).
    Returns:
        :class:`FitResult`; ``stages`` holds the fitted landmarks after each stage.
    """
    config = config or FitConfig()
    decoder = decoder.for_landmarks()  # the same landmarks from the vertices they use: cheaper steps
    flame = decoder.flame
    batch, dtype, device = target.shape[0], flame.v_template.dtype, flame.v_template.device
    index = decoder.target_index
    target = target[:, index].to(dtype)
    confidence = None if confidence is None else confidence[:, index].to(dtype)
    shape = torch.zeros(1 if shared_shape else batch, flame.n_shape, dtype=dtype, device=device, requires_grad=True)
    expression = torch.zeros(batch, flame.n_expression, dtype=dtype, device=device, requires_grad=True)
    pose6 = torch.zeros(batch, N_POSE, dtype=dtype, device=device, requires_grad=True)
    with torch.no_grad():
        start = decoder(torch.zeros(batch, N_PARAMS, dtype=dtype, device=device))  # the mean head, unposed
        camera0 = fit_weak_perspective(start.landmarks3d, target, confidence)
    log_scale = camera0[:, :1].log().clone().requires_grad_(True)  # s > 0, and steps are relative
    shift = camera0[:, 1:].clone().requires_grad_(True)

    def params() -> torch.Tensor:
        return join_params(torch.cat([log_scale.exp(), shift], dim=-1), pose6, shape.expand(batch, -1), expression)

    def objective() -> tuple[torch.Tensor, torch.Tensor]:
        predicted = decoder(params()).landmarks2d
        weights = config.weights
        # ‖β‖² averages over images; a shared β is one identity, counted once.
        loss = (weights.landmarks * landmark_loss(predicted, target, confidence)
                + weights.shape_norm * squared_norm(shape) + weights.expression_norm * squared_norm(expression))
        return loss, predicted

    result = FitResult(shape, expression, pose6, camera0)
    # The rigid stage moves only the global rotation (first 3 of pose6); the jaw gradient is masked.
    rigid_mask = torch.zeros(1, N_POSE, dtype=dtype, device=device)
    rigid_mask[:, POSE_GLOBAL] = 1.0
    stages = (("rigid", config.rigid_steps, [pose6, log_scale, shift], rigid_mask),
              ("all", config.all_steps, [shape, expression, pose6, log_scale, shift], None))
    for name, steps, variables, pose_mask in stages:
        optimizer = torch.optim.Adam(variables, lr=config.learning_rate)
        # Cosine decay to 1%: Adam's fixed step would otherwise leave a jitter floor on an L1 loss.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1),
                                                              eta_min=0.01 * config.learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            loss, _ = objective()
            loss.backward()
            if pose_mask is not None:
                pose6.grad *= pose_mask
            optimizer.step()
            schedule.step()
            result.losses.append(loss.item())
        with torch.no_grad():
            result.stages[name] = objective()[1].detach()
    result.shape, result.expression = shape.detach().expand(batch, -1).clone(), expression.detach()
    result.pose, result.camera = pose6.detach(), torch.cat([log_scale.exp(), shift], dim=-1).detach()
    return result
