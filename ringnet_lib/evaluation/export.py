"""Predictions in the NoW challenge's file layout (github.com/soubhiksanyal/now_evaluation).

For every line ``<subject>/<challenge>/<image>.jpg`` of NoW's image list, the
evaluation reads ``<root>/<subject>/<challenge>/<image>.obj`` (the predicted
neutral mesh; .ply also accepted) and ``<root>/<subject>/<challenge>/<image>.npy``
(a 7 x 3 array of the mesh's 7 landmarks in NoW's order; a .txt is also read).

Units: FLAME's, metres. NoW's standard (non-metrical) protocol fits a scale, so
units do not change its numbers; its metrical protocol takes the unit as
``--predicted_mesh_unit`` whose default is ``m``. OBJ files carry positions only
("v x y z", no vertex colours, which NoW's mesh loader cannot read) and 1-based faces.

    vertices, landmarks7 = neutral_meshes(flame, predicted_betas)   # ψ = 0, pose = 0
    for line, v, l in zip(image_list_lines, vertices, landmarks7):
        write_now_prediction("predictions", line, v, flame.faces, l)
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch
import trimesh

from ..checks import check_finite
from ..face_region import check_landmarks


def write_obj(path: str | Path, vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray) -> Path:
    """Write ``V x 3`` vertices and ``F x 3`` (0-based) faces as a plain OBJ: ``v`` and ``f`` lines only
    (trimesh's writer, without normals, colours or texture, which NoW's loader cannot read), vertex order kept."""
    vertices = np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64)
    faces = np.asarray(torch.as_tensor(faces).cpu(), dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"need V x 3 vertices and F x 3 faces, got {vertices.shape} and {faces.shape}")
    check_finite("mesh vertices", torch.from_numpy(vertices))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh = trimesh.Trimesh(vertices, faces, process=False)  # process=False: FLAME's vertex order stays
    path.write_text(trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=False,
                                                    include_texture=False, digits=8, header=None))
    return path


def now_prediction_paths(root: str | Path, image_path: str) -> tuple[Path, Path]:
    """Where NoW looks for the mesh and landmarks predicted for one image-list entry.

    Args:
        root: the predictions folder.
        image_path: a line of NoW's image list, ``<subject>/<challenge>/<image>.jpg`` (longer prefixes allowed).
    Returns:
        ``(root/subject/challenge/image.obj, root/subject/challenge/image.npy)``.
    """
    parts = PurePosixPath(str(image_path).strip().replace("\\", "/")).parts
    if len(parts) < 3:
        raise ValueError(f"{image_path!r}: expected <subject>/<challenge>/<image file>, as in NoW's image lists")
    subject, challenge, image = parts[-3:]
    stem = PurePosixPath(image).stem
    folder = Path(root) / subject / challenge
    return folder / f"{stem}.obj", folder / f"{stem}.npy"


def write_now_prediction(root: str | Path, image_path: str, vertices: torch.Tensor, faces: torch.Tensor,
                         landmarks: torch.Tensor) -> tuple[Path, Path]:
    """Write one prediction as NoW expects it.

    Args:
        root: the predictions folder.
        image_path: the NoW image-list entry it answers.
        vertices: ``V x 3`` neutral mesh (ψ = 0, jaw and global pose 0), metres.
        faces: ``F x 3``.
        landmarks: ``7 x 3`` on that mesh, NoW's order (e.g. ``now_landmarks_from_static``).
    Returns:
        the ``.obj`` and ``.npy`` paths.
    """
    landmarks = check_landmarks("predicted landmarks", torch.as_tensor(landmarks).detach().cpu())
    obj_path, npy_path = now_prediction_paths(root, image_path)
    write_obj(obj_path, vertices, faces)
    np.save(npy_path, landmarks.numpy().astype(np.float64))
    return obj_path, npy_path
