"""Landmarks on the mesh: points given by a face index and barycentric coordinates.

FLAME's landmark files embed each landmark in a triangle of the mesh, so the
landmark follows the surface for any shape, expression and pose.

The 68 iBUG landmarks (what 2D detectors return, and what RingNet is trained on) are
51 *static* points (``flame_static_embedding.pkl``) and 17 *dynamic* jaw-contour points
(``flame_dynamic_embedding.npy``): one row of 17 surface points per integer yaw, because the
jaw's outline slides over the skin as the head turns. :class:`Landmarks68` returns them in
iBUG order (contour first, :data:`IBUG68_DYNAMIC`); smplx returns static first
(:data:`SMPLX_TO_IBUG68` converts). Yaw convention: :func:`yaw_degrees` (smplx's; it differs
from FLAME_PyTorch in the neck chain and from DECA in the sign). The table of the embedded
default head is built by :mod:`ringnet_lib.contour`.

    landmarks68 = Landmarks68(flame)                      # default head: shipped table
    landmarks68 = Landmarks68.from_folder(flame, folder)  # a FLAME download
    points = landmarks68(flame(shape, expression, pose).vertices, pose)   # B x 68 x 3
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


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


# --------------------------------------------------------------------------
# The 68 iBUG landmarks: 51 static + 17 dynamic (the jaw contour)
#
# Order: iBUG 68, zero-based, as 2D detectors give it: 0..16 the jaw contour (iBUG 1..17,
# from the subject's right ear down to the chin and up to the left ear), 17..67 the
# brows, nose, eyes and mouth (FLAME's 51 static landmarks, in the static file's order).
IBUG68_DYNAMIC = tuple(range(17))  # chosen per yaw bin from flame_dynamic_embedding.npy
IBUG68_STATIC = tuple(range(17, 68))  # fixed surface points from flame_static_embedding.pkl
N_CONTOUR = len(IBUG68_DYNAMIC)
N_LANDMARKS = N_CONTOUR + len(IBUG68_STATIC)
# smplx and FLAME_PyTorch order: 51 static first, then the 17 contour points.
# ``ours[:, i] == smplx_order[:, SMPLX_TO_IBUG68[i]]``.
SMPLX_TO_IBUG68 = tuple(range(51, 68)) + tuple(range(51))

# Yaw bins of flame_dynamic_embedding.npy: rows 0..39 hold yaw 0..+39 degrees, rows 40..78
# hold -1..-39 degrees. Yaw is rounded to whole degrees and clamped to +-39.
MAX_YAW_DEG = 39
N_YAW_BINS = 2 * MAX_YAW_DEG + 1  # 79


def yaw_of_bin(row: int) -> int:
    """Integer yaw (degrees) stored in row ``row`` of the table."""
    return row if row <= MAX_YAW_DEG else MAX_YAW_DEG - row


def bin_of_yaw(yaw_deg: torch.Tensor) -> torch.Tensor:
    """Row of the table for yaw angles in degrees (``B``, float) -> ``B`` long: round, clamp, fold."""
    yaw = torch.round(yaw_deg).clamp(-MAX_YAW_DEG, MAX_YAW_DEG).long()
    return torch.where(yaw >= 0, yaw, MAX_YAW_DEG - yaw)


def yaw_degrees(pose: torch.Tensor, chain: tuple[int, ...] = (0,)) -> torch.Tensor:
    """FLAME's yaw of the head, in degrees, from the 15-d pose.

    The rotations of ``chain`` (joint indices, root first) are composed as the kinematic tree
    does (R = R_chain[0] @ R_chain[1] @ ...). Yaw is then MINUS the Euler angle about +y of
    R, i.e. ``-atan2(-R[2, 0], sqrt(R[0, 0]^2 + R[1, 0]^2))``: positive yaw turns the face
    towards -x, the subject's right.

    Conventions elsewhere (they differ; tables are only valid with the code that made them):

    * smplx (``smplx.FLAME``, ``NECK_IDX = 0``): chain = (0,), the global rotation only: a
      neck rotation does not move the contour. This is our default; it agrees with smplx.
    * FLAME_PyTorch (``NECK_IDX = 1``): chain = (0, 1), global then neck; same sign as here.
      Pass ``chain=(0, 1)`` to reproduce it. RingNet regresses no neck pose (it is zero),
      so for RingNet's parameters both give the same bin.
    * DECA: chain (0, 1) and NO minus sign, with its own table (landmark_embedding.npy):
      a FLAME flame_dynamic_embedding.npy read with DECA's code picks the mirrored bin.

    Args:
        pose: ``B x 15`` axis-angle (global, neck, jaw, eyes).
        chain: joints whose rotations make the head's orientation.
    Returns:
        ``B`` yaw in degrees (float).
    """
    from .lbs import batch_rodrigues
    batch = pose.shape[0]
    rotation = torch.eye(3, dtype=pose.dtype, device=pose.device).expand(batch, 3, 3)
    for joint in chain:
        rotation = rotation @ batch_rodrigues(pose[:, 3 * joint:3 * joint + 3])
    cos_yaw = torch.sqrt(rotation[:, 0, 0] ** 2 + rotation[:, 1, 0] ** 2)
    return -torch.rad2deg(torch.atan2(-rotation[:, 2, 0], cos_yaw))


def _read_npy_payload(path: Path):
    """Unpickle the object stored in a .npy file through the restricted unpickler."""
    import numpy.lib.format as npy_format

    from .model_io import ModelFileError, RestrictedUnpickler
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        with open(path, "rb") as file:
            version = npy_format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(file)
            else:
                shape, _, dtype = npy_format.read_array_header_2_0(file)
            if not dtype.hasobject:
                raise ModelFileError(f"{path}: holds a plain {dtype} array of shape {shape}; "
                                     "a dynamic embedding is a pickled dict (np.save of a dict)")
            payload = RestrictedUnpickler(file, str(path)).load()
    except ModelFileError:
        raise
    except Exception as error:  # a truncated or foreign file: say which file
        raise ModelFileError(f"{path}: not a readable .npy dynamic embedding ({type(error).__name__}: {error})") \
            from error
    return payload[()] if isinstance(payload, np.ndarray) and payload.shape == () else payload


def load_dynamic_embedding(path, n_faces: int | None = None) -> dict[str, np.ndarray]:
    """Read ``flame_dynamic_embedding.npy`` safely (never ``np.load(allow_pickle=True)``).

    Args:
        path: the .npy file (a pickled dict, as FLAME ships it and smplx reads it).
        n_faces: if given, face indices must be below it.
    Returns:
        dict ``lmk_face_idx`` ``79 x 17`` int64, ``lmk_b_coords`` ``79 x 17 x 3`` float64.
    Raises:
        ModelFileError naming the file and the field for wrong shapes or indices.
    """
    from .model_io import validate_embedding
    path = Path(path)
    return validate_embedding(_read_npy_payload(path), str(path), n_faces, leading_shape=(N_YAW_BINS, N_CONTOUR))


def save_dynamic_embedding(embedding: dict, path) -> Path:
    """Write a contour table in FLAME's format: ``np.save`` of a dict (smplx reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"lmk_face_idx": np.asarray(embedding["lmk_face_idx"], dtype=np.int64),
            "lmk_b_coords": np.asarray(embedding["lmk_b_coords"], dtype=np.float64)}
    with open(path, "wb") as file:  # a file object: np.save would append ".npy" to other names
        np.save(file, np.array(data, dtype=object), allow_pickle=True)
    return path


class Landmarks68(nn.Module):
    """The 68 iBUG landmarks of a posed FLAME mesh, contour chosen by the head's yaw.

    Args:
        flame: a :class:`ringnet_lib.flame.FLAME` with a static embedding (51 points).
        dynamic_embedding: dict ``lmk_face_idx`` ``79 x 17``, ``lmk_b_coords`` ``79 x 17 x 3``;
            None: the built table of the default head (only when ``flame`` is the default head).
        yaw_chain: joints whose rotation sets the yaw (see :func:`yaw_degrees`); (0,) as smplx.
    """

    def __init__(self, flame, dynamic_embedding: dict | None = None, yaw_chain: tuple[int, ...] = (0,)):
        super().__init__()
        from .model_io import ModelFileError, validate_embedding
        if flame.landmark_face_idx is None:
            raise ModelFileError(f"{flame.source}: the model has no static landmark embedding "
                                 "(flame_static_embedding.pkl); 68 landmarks need it")
        n_faces = flame.faces.shape[0]
        if dynamic_embedding is None:
            if flame.source != "embedded default head":
                raise ModelFileError(f"{flame.source}: no dynamic contour table given; use "
                                     "Landmarks68.from_folder(flame, folder) or pass dynamic_embedding")
            from .contour import default_dynamic_embedding
            dynamic_embedding = default_dynamic_embedding()
        table = validate_embedding(dynamic_embedding, "dynamic_embedding", n_faces, (N_YAW_BINS, N_CONTOUR))
        self.flame = flame
        self.yaw_chain = tuple(yaw_chain)
        dtype = flame.v_template.dtype
        self.register_buffer("contour_face_idx", torch.as_tensor(table["lmk_face_idx"]), persistent=False)
        self.register_buffer("contour_bary_coords", torch.as_tensor(table["lmk_b_coords"], dtype=dtype),
                             persistent=False)

    @classmethod
    def from_folder(cls, flame, folder, **kwargs) -> "Landmarks68":
        """Read ``folder/flame_dynamic_embedding.npy`` (FLAME's download layout)."""
        from .model_io import DYNAMIC_EMBEDDING_NAME
        path = Path(folder) / DYNAMIC_EMBEDDING_NAME
        return cls(flame, load_dynamic_embedding(path, n_faces=flame.faces.shape[0]), **kwargs)

    def contour_bins(self, pose: torch.Tensor) -> torch.Tensor:
        """``B x 15`` pose -> ``B`` row of the table."""
        return bin_of_yaw(yaw_degrees(pose, self.yaw_chain))

    def forward(self, vertices: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """``B x V x 3`` posed vertices and their ``B x 15`` pose -> ``B x 68 x 3`` in iBUG order."""
        rows = self.contour_bins(pose)
        contour = barycentric_landmarks(vertices, self.flame.faces, self.contour_face_idx[rows],
                                        self.contour_bary_coords[rows])
        static = barycentric_landmarks(vertices, self.flame.faces, self.flame.landmark_face_idx,
                                       self.flame.landmark_bary_coords)
        return torch.cat([contour, static], dim=1)
