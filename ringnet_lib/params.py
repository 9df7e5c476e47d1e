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

# Inside RingNet's 6 pose values: the global (head) rotation, then the jaw's.
POSE_GLOBAL = slice(0, 3)
POSE_JAW = slice(3, 6)

# FLAME's 5 joints, in the order of its kinematic tree and of the 15-d pose.
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
GLOBAL, NECK, JAW, LEFT_EYE, RIGHT_EYE = range(len(JOINT_NAMES))
N_JOINTS = len(JOINT_NAMES)
N_FULL_POSE = 3 * N_JOINTS  # 15

# FLAME's blend-shape columns: 300 shape components, then its expression components.
FLAME_SHAPE_SPACE = 300

# The 68 iBUG landmarks, zero-based in code (iBUG numbers them 1..68 in prose): 0..16 the jaw
# contour (17 points chosen per head yaw), 17..67 FLAME's 51 static points (brows, nose, eyes, mouth).
N_LANDMARKS = 68
N_CONTOUR = 17
N_STATIC = N_LANDMARKS - N_CONTOUR  # 51
CONTOUR_IN_68 = slice(0, N_CONTOUR)
STATIC_IN_68 = slice(N_CONTOUR, N_LANDMARKS)
# The contour table (flame_dynamic_embedding.npy) has one row per integer yaw: rows 0..39 hold
# yaw 0..+39 degrees, rows 40..78 hold -1..-39 (ringnet_lib.landmarks reads it).
MAX_YAW_DEG = 39
N_YAW_BINS = 2 * MAX_YAW_DEG + 1  # 79


def joint_pose(joint: int) -> slice:
    """The 3 axis-angle values of ``joint`` (:data:`GLOBAL` ... :data:`RIGHT_EYE`) in the 15-d pose."""
    return slice(3 * joint, 3 * joint + 3)


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
    pose15 = pose6.new_zeros(pose6.shape[:-1] + (N_FULL_POSE,))
    pose15[..., joint_pose(GLOBAL)] = pose6[..., POSE_GLOBAL]
    pose15[..., joint_pose(JAW)] = pose6[..., POSE_JAW]
    return pose15
