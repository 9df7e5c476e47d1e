"""The 159-d parameter vector that RingNet's encoder regresses, defined once.

Layout (Sanyal et al., CVPR 2019), in this order:

====================  =====  ==============================================
block                 size   meaning
====================  =====  ==============================================
camera                3      weak perspective: scale s, translation tx, ty
pose                  6      axis-angle: global rotation (3), jaw (3)
shape  (beta)         100    FLAME identity coefficients
expression (psi)      50     FLAME expression coefficients
====================  =====  ==============================================

FLAME itself takes 15 pose values (global, neck, jaw, left eye, right eye);
RingNet regresses only global and jaw, the rest are zero
(:func:`full_pose_from_ringnet_pose`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

N_CAMERA = 3
N_POSE = 6
N_SHAPE = 100
N_EXPRESSION = 50
N_PARAMS = N_CAMERA + N_POSE + N_SHAPE + N_EXPRESSION  # 159

CAMERA = slice(0, N_CAMERA)
POSE = slice(CAMERA.stop, CAMERA.stop + N_POSE)
SHAPE = slice(POSE.stop, POSE.stop + N_SHAPE)
EXPRESSION = slice(SHAPE.stop, SHAPE.stop + N_EXPRESSION)

# FLAME's 5 joints, in the order of its kinematic tree and of the 15-d pose.
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
N_JOINTS = len(JOINT_NAMES)
N_FULL_POSE = 3 * N_JOINTS  # 15


class RingNetParams(NamedTuple):
    """The four blocks of the 159-d vector, each ``B x n``."""

    camera: torch.Tensor  # B x 3
    pose: torch.Tensor  # B x 6 (global, jaw)
    shape: torch.Tensor  # B x 100
    expression: torch.Tensor  # B x 50


def split_params(params: torch.Tensor) -> RingNetParams:
    """Split ``B x 159`` into :class:`RingNetParams` (views, no copy)."""
    if params.shape[-1] != N_PARAMS:
        raise ValueError(f"expected a ... x {N_PARAMS} tensor, got shape {tuple(params.shape)}")
    return RingNetParams(params[..., CAMERA], params[..., POSE], params[..., SHAPE], params[..., EXPRESSION])


def join_params(camera: torch.Tensor, pose: torch.Tensor, shape: torch.Tensor,
                expression: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_params`: four blocks to ``B x 159``."""
    blocks = {"camera": (camera, N_CAMERA), "pose": (pose, N_POSE),
              "shape": (shape, N_SHAPE), "expression": (expression, N_EXPRESSION)}
    for name, (tensor, size) in blocks.items():
        if tensor.shape[-1] != size:
            raise ValueError(f"{name} must have {size} values in its last dimension, got {tuple(tensor.shape)}")
    return torch.cat([camera, pose, shape, expression], dim=-1)


def full_pose_from_ringnet_pose(pose6: torch.Tensor) -> torch.Tensor:
    """RingNet's 6 pose values (global, jaw) to FLAME's 15 (neck and eyes zero).

    Args:
        pose6: ``B x 6`` axis-angle, global rotation then jaw.
    Returns:
        ``B x 15``: global, neck, jaw, left eye, right eye.
    """
    if pose6.shape[-1] != N_POSE:
        raise ValueError(f"expected B x {N_POSE} pose, got {tuple(pose6.shape)}")
    zeros = pose6.new_zeros(pose6.shape[:-1] + (3,))
    return torch.cat([pose6[..., :3], zeros, pose6[..., 3:], zeros, zeros], dim=-1)
