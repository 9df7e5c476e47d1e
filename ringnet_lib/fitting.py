"""Fit FLAME (β, ψ, pose) and a weak-perspective camera to one image's 68 2D landmarks.

Gradient descent in two stages, as classic landmark fitting does:

1. **rigid**: only the global rotation and the camera (s, tx, ty) move, so the head first
   faces the right way at the right size before shape can compensate for a wrong pose;
2. **all**: shape β, expression ψ, global + jaw rotation and camera together.

The objective is the one RingNet's training uses for its landmark term (Sanyal et al. 2019,
Sec. 3), without the ring term since there is one image:

    L = λ_proj · landmark_loss(projected, target, confidence) + λ_β ‖β‖² + λ_ψ ‖ψ‖²

``landmark_loss`` (confidence-weighted L1, mean over images and landmarks) and ``squared_norm``
and the λ (:class:`ringnet_lib.losses.LossWeights`, the paper's 60, 1e-4, 1e-4) come from
:mod:`ringnet_lib.losses`, the module training uses, so fitting and training optimise the
same terms with the same normalisation and weights.

All 2D coordinates are *normalised* image coordinates (see :mod:`ringnet_lib.camera`);
multiply errors by ``S / 2`` for pixels in an ``S x S`` crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .camera import project_weak_perspective
from .landmarks import Landmarks68
# The landmark term and the regulariser are training's own functions (one definition, in
# losses.py), re-exported here: fitting.landmark_loss IS the loss training uses.
from .losses import LossWeights, landmark_loss, squared_norm

__all__ = ["FitConfig", "FitResult", "fit_to_landmarks", "initial_camera", "landmark_loss", "predict_landmarks"]
from .params import N_POSE, full_pose_from_ringnet_pose


@dataclass
class FitConfig:
    rigid_steps: int = 150
    all_steps: int = 500
    learning_rate: float = 0.02
    weights: LossWeights = field(default_factory=LossWeights)  # λ_proj, λ_β, λ_ψ (λ_sc unused)


@dataclass
class FitResult:
    shape: torch.Tensor  # B x 100
    expression: torch.Tensor  # B x 50
    pose: torch.Tensor  # B x 6: global, jaw (RingNet's layout)
    camera: torch.Tensor  # B x 3: s, tx, ty
    losses: list = field(default_factory=list)  # total loss per step, both stages
    stages: dict = field(default_factory=dict)  # name -> B x 68 x 2 landmarks after that stage


def initial_camera(target: torch.Tensor, model_points: torch.Tensor) -> torch.Tensor:
    """Scale and shift that match the 2D extent and centre of the landmarks.

    Args:
        target: ``B x 68 x 2`` normalised; model_points: ``B x 68 x 3`` (unposed model landmarks).
    Returns:
        ``B x 3`` camera (s, tx, ty).
    """
    extent_target = (target.amax(1) - target.amin(1)).norm(dim=-1)
    extent_model = (model_points[..., :2].amax(1) - model_points[..., :2].amin(1)).norm(dim=-1)
    scale = extent_target / extent_model.clamp_min(1e-8)
    shift = target.mean(1) / scale[:, None] - model_points[..., :2].mean(1)
    return torch.cat([scale[:, None], shift], dim=-1)


def predict_landmarks(flame, landmarks: Landmarks68, shape: torch.Tensor, expression: torch.Tensor,
                      pose6: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Parameters -> ``B x 68 x 2`` projected landmarks (normalised coordinates)."""
    pose = full_pose_from_ringnet_pose(pose6)
    vertices = flame(shape=shape, expression=expression, pose=pose).vertices
    return project_weak_perspective(landmarks(vertices, pose), camera)


def fit_to_landmarks(flame, landmarks: Landmarks68, target: torch.Tensor, confidence: torch.Tensor | None = None,
                     config: FitConfig | None = None) -> FitResult:
    """Fit β, ψ, global + jaw pose and camera to ``B x 68 x 2`` normalised landmarks.

    Returns a :class:`FitResult`; ``stages`` holds the fitted landmarks after each stage.
    """
    config = config or FitConfig()
    batch, dtype = target.shape[0], flame.v_template.dtype
    target = target.to(dtype)
    shape = torch.zeros(batch, flame.n_shape, dtype=dtype, requires_grad=True)
    expression = torch.zeros(batch, flame.n_expression, dtype=dtype, requires_grad=True)
    pose6 = torch.zeros(batch, N_POSE, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        start = landmarks(flame(shape=shape).vertices, torch.zeros(batch, 15, dtype=dtype))
        camera0 = initial_camera(target, start)
    log_scale = camera0[:, :1].log().clone().requires_grad_(True)  # s > 0, and steps are relative
    shift = camera0[:, 1:].clone().requires_grad_(True)
    result = FitResult(shape, expression, pose6, camera0)

    def camera() -> torch.Tensor:
        return torch.cat([log_scale.exp(), shift], dim=-1)

    def objective() -> tuple[torch.Tensor, torch.Tensor]:
        predicted = predict_landmarks(flame, landmarks, shape, expression, pose6, camera())
        weights = config.weights
        loss = (weights.landmarks * landmark_loss(predicted, target, confidence)
                + weights.shape * squared_norm(shape) + weights.expression * squared_norm(expression))
        return loss, predicted

    # The rigid stage moves only the global rotation (first 3 of pose6); the jaw gradient is masked.
    rigid_mask = torch.zeros(1, N_POSE, dtype=dtype)
    rigid_mask[:, :3] = 1.0
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
    result.shape, result.expression, result.pose = shape.detach(), expression.detach(), pose6.detach()
    result.camera = camera().detach()
    return result
