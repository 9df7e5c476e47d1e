"""Landmarks on the mesh: points given by a face index and barycentric coordinates.

FLAME's landmark files embed each landmark in a triangle of the mesh, so the
landmark follows the surface for any shape, expression and pose.

The 68 iBUG landmarks (what 2D detectors return, and what RingNet is trained on) are
51 *static* points (``flame_static_embedding.pkl``) and 17 *contour* points
(``flame_dynamic_embedding.npy``): one row of 17 surface points per integer yaw, because the
jaw's outline slides over the skin as the head turns. :func:`ibug68` returns them in iBUG
order (contour first, :data:`ringnet_lib.params.CONTOUR_IN_68`); smplx returns static first
(:data:`SMPLX_TO_IBUG68` converts). The files are read by :mod:`ringnet_lib.model_io`; the
table of the embedded default head is built by :mod:`ringnet_lib.contour`.

**Yaw, one sign everywhere** (FLAME's, fixed by its contour table: row k holds yaw k):
positive yaw turns the face towards -x, the subject's right (image left for a frontal
view). :func:`head_yaw_degrees` reads it from a rotation and :func:`head_rotation` builds the
rotation of a given yaw, pitch and roll, so synthesis, landmarks and the table agree.

    output = flame(shape, expression, pose)                               # FlameOutput
    points = ibug68(output, flame.faces, flame.contour_face_idx, flame.contour_bary_coords)  # B x 68 x 3
"""
from __future__ import annotations

import numpy as np
import torch

from .lbs import batch_rodrigues
from .params import GLOBAL, MAX_YAW_DEG, N_CONTOUR, N_YAW_BINS, joint_pose


def barycentric_landmarks(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                          bary_coords: torch.Tensor) -> torch.Tensor:
    """Points inside mesh triangles.

    Args:
        vertices: ``B x V x 3``.
        faces: ``F x 3`` vertex indices.
        face_idx: ``L`` (the same for the whole batch) or ``B x L`` triangle per landmark.
        bary_coords: ``L x 3`` or ``B x L x 3`` barycentric weights of the triangle's corners.
    Returns:
        ``B x L x 3``: sum_k bary[..., k] * vertices[faces[face_idx, k]].
    """
    batch = vertices.shape[0]
    if face_idx.ndim == 1:
        face_idx = face_idx.expand(batch, -1)
    if bary_coords.ndim == 2:
        bary_coords = bary_coords.expand(batch, -1, -1)
    corner_idx = faces[face_idx]  # B x L x 3
    batch_idx = torch.arange(batch, device=vertices.device)[:, None, None]
    corners = vertices[batch_idx, corner_idx]  # B x L x 3(corner) x 3(xyz)
    return (bary_coords[..., None] * corners).sum(dim=2)


# smplx and FLAME_PyTorch order: 51 static first, then the 17 contour points.
# ``ours[:, i] == smplx_order[:, SMPLX_TO_IBUG68[i]]``.
SMPLX_TO_IBUG68 = tuple(range(51, 68)) + tuple(range(51))

def yaw_of_bin(row: int) -> int:
    """Integer yaw (degrees) stored in row ``row`` of the table."""
    return row if row <= MAX_YAW_DEG else MAX_YAW_DEG - row


def bin_of_yaw(yaw_deg: torch.Tensor) -> torch.Tensor:
    """Row of the table for yaw angles in degrees (``B``, float) -> ``B`` long: round to whole degrees,
    clamp to +-39, fold the negative ones after the positive ones.

    A NaN yaw (a diverged prediction) gets row 0 instead of the garbage index ``.long()`` makes of
    it: the landmarks are then NaN as the vertices are, and the training's guard reports the step.
    """
    yaw = torch.round(torch.nan_to_num(yaw_deg, nan=0.0)).clamp(-MAX_YAW_DEG, MAX_YAW_DEG).long()
    return torch.where(yaw >= 0, yaw, MAX_YAW_DEG - yaw)


def head_yaw_degrees(rotation: torch.Tensor) -> torch.Tensor:
    """The head's yaw in degrees from its rotation matrix (``B x 3 x 3``) -> ``B``.

    Yaw is MINUS the Euler angle about +y of R, ``-atan2(-R[2, 0], sqrt(R[0, 0]^2 + R[1, 0]^2))``:
    positive yaw turns the face towards -x (the subject's right). This is smplx's reading of
    FLAME's table; DECA drops the minus sign (and ships its own table to match).
    """
    cos_yaw = torch.sqrt(rotation[:, 0, 0] ** 2 + rotation[:, 1, 0] ** 2)
    return -torch.rad2deg(torch.atan2(-rotation[:, 2, 0], cos_yaw))


def chain_rotation(rotations: torch.Tensor, chain: tuple[int, ...] = (GLOBAL,)) -> torch.Tensor:
    """The composed rotation of the joints in ``chain`` (root first): ``B x J x 3 x 3`` -> ``B x 3 x 3``.

    ``chain=(GLOBAL,)``: the global rotation only, as smplx (a neck turn does not move the contour).
    ``(GLOBAL, NECK)``: global then neck, as FLAME_PyTorch. RingNet regresses no neck pose, so for
    RingNet's parameters both give the same rows.
    """
    rotation = rotations[:, chain[0]]
    for joint in chain[1:]:
        rotation = rotation @ rotations[:, joint]
    return rotation


def yaw_degrees(pose: torch.Tensor, chain: tuple[int, ...] = (GLOBAL,)) -> torch.Tensor:
    """:func:`head_yaw_degrees` of the joints in ``chain`` of a ``B x 15`` pose -> ``B``.

    For plotting and tests; the decoder reads the rotations FLAME already computed instead.
    """
    rotations = torch.stack([batch_rodrigues(pose[:, joint_pose(j)]) for j in chain], dim=1)
    return head_yaw_degrees(chain_rotation(rotations, tuple(range(len(chain)))))


def head_rotation(yaw_deg, pitch_deg=None, roll_deg=None) -> np.ndarray:
    """Axis-angle (``B x 3``) of a head turned by ``yaw_deg`` (this module's sign), then pitched and rolled.

    R = R_y(-yaw) R_x(pitch) R_z(roll) (scipy's intrinsic "YXZ"): positive pitch tips the face
    down, positive roll tilts it towards the subject's right shoulder. :func:`head_yaw_degrees`
    of the result is ``yaw_deg`` exactly when pitch and roll are 0 (and close to it otherwise).

    Args:
        yaw_deg: ``B`` degrees.
        pitch_deg: ``B`` degrees, or None (0).
        roll_deg: ``B`` degrees, or None (0).
    Returns:
        ``B x 3`` float64 axis-angle, the global rotation of FLAME's pose.
    """
    from scipy.spatial.transform import Rotation  # lazy: 0.2 s to import, and FLAME() does not need it

    yaw = np.atleast_1d(np.asarray(yaw_deg, dtype=np.float64))
    pitch = np.zeros_like(yaw) if pitch_deg is None else np.broadcast_to(np.asarray(pitch_deg, np.float64), yaw.shape)
    roll = np.zeros_like(yaw) if roll_deg is None else np.broadcast_to(np.asarray(roll_deg, np.float64), yaw.shape)
    return Rotation.from_euler("YXZ", np.stack([-yaw, pitch, roll], axis=1), degrees=True).as_rotvec()


def ibug68(output, faces: torch.Tensor, contour_face_idx: torch.Tensor, contour_bary_coords: torch.Tensor,
           chain: tuple[int, ...] = (GLOBAL,)) -> torch.Tensor:
    """The 68 iBUG landmarks of a posed FLAME output, contour chosen by the head's yaw.

    Args:
        output: a :class:`ringnet_lib.flame.FlameOutput` (its vertices, static landmarks and joint
            rotations, computed once by FLAME).
        faces: ``F x 3``.
        contour_face_idx: ``79 x 17`` the contour table's triangles.
        contour_bary_coords: ``79 x 17 x 3`` its barycentric coordinates.
        chain: joints whose rotation sets the yaw (see :func:`chain_rotation`).
    Returns:
        ``B x 68 x 3`` in iBUG order.
    """
    rows = bin_of_yaw(head_yaw_degrees(chain_rotation(output.rotations, chain)))
    contour = barycentric_landmarks(output.vertices, faces, contour_face_idx[rows], contour_bary_coords[rows])
    return torch.cat([contour, output.static_landmarks], dim=1)


__all__ = ["barycentric_landmarks", "SMPLX_TO_IBUG68", "MAX_YAW_DEG", "N_YAW_BINS", "N_CONTOUR", "yaw_of_bin",
           "bin_of_yaw", "head_yaw_degrees", "chain_rotation", "yaw_degrees", "head_rotation", "ibug68"]
