"""Linear blend skinning for FLAME, as small pure functions.

FLAME turns parameters into a mesh in five steps, one function each:

1. :func:`blend_shapes`     template + shape (beta) + expression (psi) offsets
2. :func:`regress_joints`   joint locations from the shaped vertices
3. :func:`pose_features` and :func:`blend_shapes` again: pose-corrective offsets
4. :func:`batch_rodrigues` + :func:`kinematic_chain`: one rigid transform per joint
5. :func:`skin_vertices`    each vertex moved by its weighted mix of joint transforms

:func:`linear_blend_skinning` composes them. Nothing here reads files or holds
state; :class:`ringnet_lib.flame.FLAME` owns the buffers.

Shapes use ``B`` batch, ``V`` vertices, ``J`` joints (5 for FLAME), ``K``
blend-shape coefficients.
"""
from __future__ import annotations

import torch

# Below this angle (radians) sin(t)/t and (1-cos t)/t^2 are replaced by their
# Taylor series: the closed forms lose precision and their gradients are 0/0.
_SMALL_ANGLE = 1e-4


def blend_shapes(coefficients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Offsets from a linear blend-shape basis.

    Args:
        coefficients: ``B x K``.
        directions: ``K x 3V`` (rows are flattened ``V x 3`` offset fields).
    Returns:
        ``B x V x 3`` offsets.
    """
    batch = coefficients.shape[0]
    return (coefficients @ directions).view(batch, -1, 3)


def regress_joints(vertices: torch.Tensor, joint_regressor: torch.Tensor) -> torch.Tensor:
    """Joint locations as fixed linear combinations of vertices.

    Args:
        vertices: ``B x V x 3``.
        joint_regressor: ``J x V`` (rows sum to 1 in FLAME).
    Returns:
        ``B x J x 3``.
    """
    return torch.einsum("jv,bvc->bjc", joint_regressor, vertices)


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors to rotation matrices (Rodrigues' formula).

    R = I + sin(t)/t * K + (1 - cos t)/t^2 * K^2, with K the cross-product
    matrix of the unnormalised vector r and t = |r|. Written this way the
    formula is smooth at r = 0, so gradients at the rest pose are exact.
    Why our own (scipy's ``Rotation.from_rotvec`` does the same): the encoder's
    poses need gradients, on the training device, in batches; scipy's is numpy.

    Args:
        axis_angle: ``N x 3``.
    Returns:
        ``N x 3 x 3``.
    """
    angle_sq = (axis_angle * axis_angle).sum(dim=-1, keepdim=True)  # N x 1
    small = angle_sq < _SMALL_ANGLE ** 2
    safe_sq = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    safe_angle = safe_sq.sqrt()
    sinc = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(safe_angle) / safe_angle)
    cosc = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(safe_angle)) / safe_sq)

    rx, ry, rz = axis_angle.unbind(dim=-1)
    zeros = torch.zeros_like(rx)
    cross = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=-1).view(-1, 3, 3)
    identity = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return identity + sinc[..., None] * cross + cosc[..., None] * (cross @ cross)


def pose_features(rotations: torch.Tensor) -> torch.Tensor:
    """What FLAME's pose correctives are linear in: (R - I) of every non-root joint.

    Args:
        rotations: ``B x J x 3 x 3`` (joint 0 is the root and is skipped:
            rotating the whole head must not deform it).
    Returns:
        ``B x 9(J-1)`` (36 for FLAME).
    """
    identity = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - identity).flatten(start_dim=1)


def kinematic_chain(rotations: torch.Tensor, joints: torch.Tensor,
                    parents: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose local joint rotations down the tree into world transforms.

    Each joint rotates about its own rest location; children inherit the
    transforms of their parents.

    Args:
        rotations: ``B x J x 3 x 3`` local rotations.
        joints: ``B x J x 3`` rest-pose joint locations.
        parents: length-J list, parent index of each joint (-1 for the root);
            parents come before children.
    Returns:
        posed_joints: ``B x J x 3``.
        skinning_transforms: ``B x J x 3 x 4``: [R | t] that maps a rest-pose
            point to its posed location if it moved rigidly with joint j.
    """
    world_rot = [rotations[:, 0]]
    world_pos = [joints[:, 0]]
    for j in range(1, len(parents)):
        p = parents[j]
        offset = joints[:, j] - joints[:, p]  # B x 3, bone in the rest pose
        world_rot.append(world_rot[p] @ rotations[:, j])
        world_pos.append(world_pos[p] + (world_rot[p] @ offset[..., None])[..., 0])
    world_rot = torch.stack(world_rot, dim=1)  # B x J x 3 x 3
    posed_joints = torch.stack(world_pos, dim=1)  # B x J x 3
    # x_posed = R (x - j_rest) + j_posed  =>  t = j_posed - R j_rest
    translation = posed_joints - (world_rot @ joints[..., None])[..., 0]
    return posed_joints, torch.cat([world_rot, translation[..., None]], dim=-1)


def skin_vertices(vertices: torch.Tensor, transforms: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: v' = (sum_j w_vj [R_j | t_j]) [v; 1].

    The joint transforms are first mixed per vertex (one ``V x J`` by
    ``B x J x 12`` product), then applied with three multiply-adds. This is
    several times faster on CPU than a batched 4 x 4 matrix product per
    vertex, which is dominated by tiny-matrix overhead.

    Args:
        vertices: ``B x V x 3`` rest-pose (shaped, corrected) vertices.
        transforms: ``B x J x 3 x 4`` from :func:`kinematic_chain`.
        weights: ``V x J`` skinning weights (rows sum to 1).
    Returns:
        ``B x V x 3`` posed vertices.
    """
    batch, n_vertices, _ = vertices.shape
    n_joints = transforms.shape[1]
    blended = (weights @ transforms.reshape(batch, n_joints, 12)).view(batch, n_vertices, 3, 4)
    # unbind, not indexing: its backward is one stack, where each index's
    # backward would fill a full-size zero tensor.
    column_x, column_y, column_z, translation = blended.unbind(dim=-1)  # B x V x 3 each
    x, y, z = vertices.unbind(dim=-1)
    return translation + column_x * x[..., None] + column_y * y[..., None] + column_z * z[..., None]


def linear_blend_skinning(coefficients: torch.Tensor, pose: torch.Tensor,
                          template: torch.Tensor, directions: torch.Tensor,
                          joint_template: torch.Tensor, joint_directions: torch.Tensor,
                          parents: list[int], weights: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole FLAME decoder.

    Two precomputations keep the per-call work small (the caller makes them
    once, see :class:`ringnet_lib.flame.FLAME`):

    * the shape, expression and pose-corrective bases are stacked into one
      ``directions`` matrix, so all offsets come from one matrix product;
    * the joint regressor is linear, so it is applied to the template and to
      the blend shapes once (``joint_template``, ``joint_directions``) instead
      of to ``B x V x 3`` vertices every call.

    Args:
        coefficients: ``B x K`` shape and expression coefficients, concatenated.
        pose: ``B x 3J`` axis-angle per joint.
        template: ``V x 3``.
        directions: ``(K + 9(J-1)) x 3V``: shape and expression blend shapes,
            then the pose correctives.
        joint_template: ``J x 3`` = regressor @ template.
        joint_directions: ``K x 3J`` = regressor applied to each blend shape
            (pose correctives do not move joints).
        parents: kinematic tree (see :func:`kinematic_chain`).
        weights: ``V x J``.
    Returns:
        vertices ``B x V x 3`` and joints ``B x J x 3``, posed, and the local joint rotations
        ``B x J x 3 x 3`` (the landmark contour reads the head's yaw from them, without a second Rodrigues).
    """
    batch = coefficients.shape[0]
    n_joints = len(parents)
    rotations = batch_rodrigues(pose.reshape(-1, 3)).view(batch, n_joints, 3, 3)
    # 1-3. shape, expression and pose-corrective offsets in one matrix product.
    features = torch.cat([coefficients, pose_features(rotations)], dim=1)
    rest_vertices = template + blend_shapes(features, directions)
    rest_joints = joint_template + blend_shapes(coefficients, joint_directions)
    # 4-5. pose the skeleton, then the skin.
    posed_joints, transforms = kinematic_chain(rotations, rest_joints, parents)
    return skin_vertices(rest_vertices, transforms, weights), posed_joints, rotations
