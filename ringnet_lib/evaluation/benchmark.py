"""A synthetic NoW-like benchmark: held-out identities of a FLAME model as "scans".

The scans are ground-truth neutral meshes (ψ = 0, pose = 0) of the model in use:
the embedded default head here, the real FLAME when ``FLAME(path)`` is given the
real files (the same code runs on them). Each scan is cropped with NoW's crop,
optionally resampled uniformly on the cropped surface with Gaussian noise, and
predictions are neutralised before the NoW metric runs, as NoW requires.

    betas = heldout_betas(10)                                  # N x 100 from N(0, I)
    results = evaluate_shapes(predicted_betas, betas, Decoder())
    print(results_table({"mean shape": results}))

An encoder's 159-d output gives ``predicted_betas = split_params(params).shape``
(:mod:`ringnet_lib.params`); its ψ and pose are dropped here, as NoW requires.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..checks import check_finite
from ..face_region import METRES_TO_MM, now_landmarks_from_static
from ..mesh import used_vertices
from .now import crop_mesh, now_errors, summarize_errors

HELDOUT_SEED = 2019  # held-out identities: no training preset uses this seed (they use 0)


def heldout_betas(n: int, n_shape: int = 100, seed: int = HELDOUT_SEED) -> torch.Tensor:
    """``n x n_shape`` identities from N(0, I) with their own seed (keep it apart from training seeds)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_shape, generator=generator)


def neutral_meshes(decoder, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neutral meshes and NoW's 7 landmarks: ``N x 100`` β -> ``N x V x 3``, ``N x 7 x 3`` (ψ = 0, pose = 0)."""
    if betas.ndim != 2 or betas.shape[1] != decoder.flame.n_shape:
        raise ValueError(f"betas must be N x {decoder.flame.n_shape}, got {tuple(betas.shape)}")
    check_finite("betas", betas)
    with torch.no_grad():
        out = decoder.neutral(betas)
    return out.vertices, now_landmarks_from_static(out.static_landmarks)


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n_points: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_points x 3`` points uniform on the surface (triangles chosen by area, uniform barycentrics).

    Why our own (trimesh's ``sample.sample_surface`` does the same): the scans are torch meshes, cropped
    on the fly, and their points must come from a ``torch.Generator`` (one per scan, so the benchmark's
    scans do not depend on what else drew random numbers); as fast as trimesh (100k points on the default
    head: 20 ms here, 22 ms with trimesh, one thread).
    """
    triangles = vertices[faces.long()]  # F x 3 x 3
    areas = torch.linalg.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]).norm(dim=-1)
    if len(faces) == 0 or float(areas.sum()) <= 0:
        raise ValueError("cannot sample an empty surface (no faces with positive area after cropping)")
    which = torch.multinomial(areas, n_points, replacement=True, generator=generator)
    u, v = torch.rand(n_points, generator=generator), torch.rand(n_points, generator=generator)
    root = u.sqrt().to(vertices.dtype)  # the square root makes the density uniform over the triangle
    weights = torch.stack([1 - root, root * (1 - v.to(vertices.dtype)), root * v.to(vertices.dtype)], -1)
    return (weights[:, :, None] * triangles[which]).sum(1)


class SyntheticScan(NamedTuple):
    points: torch.Tensor  # M x 3, cropped (and possibly resampled and noisy), metres
    landmarks: torch.Tensor  # 7 x 3, exact, NoW's order
    vertices: torch.Tensor  # M' x 3 cropped mesh (for pictures)
    faces: torch.Tensor  # G x 3


def make_scan(vertices: torch.Tensor, faces: torch.Tensor, landmarks: torch.Tensor, n_points: int | None = 2000,
              noise_mm: float = 0.0, front_facing_only: bool = True, seed: int = 0) -> SyntheticScan:
    """A NoW-like scan of one ground-truth mesh.

    Args:
        vertices: ``V x 3`` ground-truth neutral mesh, metres.
        faces: ``F x 3``.
        landmarks: ``7 x 3`` on it.
        n_points: sample this many points uniformly on the cropped surface; ``None`` keeps the cropped vertices.
        noise_mm: std of isotropic Gaussian noise added to the points, mm.
        front_facing_only: drop triangles facing away from +z (a frontal scanner does not see them).
        seed: for sampling and noise.
    Returns:
        :class:`SyntheticScan`.
    """
    if front_facing_only:
        tri = vertices[faces.long()]
        normal_z = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
        vertices, faces = used_vertices(vertices, faces[normal_z > 0])
    crop_v, crop_f = crop_mesh(vertices, faces, landmarks)
    generator = torch.Generator().manual_seed(seed)
    points = crop_v if n_points is None else sample_surface(crop_v, crop_f, n_points, generator)
    if noise_mm > 0:
        noise = torch.randn(points.shape, generator=generator).to(points.dtype)
        points = points + noise * (noise_mm / METRES_TO_MM)
    return SyntheticScan(points, landmarks, crop_v, crop_f)


def evaluate_shapes(predicted_betas: torch.Tensor, true_betas: torch.Tensor, decoder, n_points: int | None = 2000,
                    noise_mm: float = 0.0, icp_iterations: int = 10, seed: int = 0) -> dict:
    """The NoW metric on synthetic scans of ``true_betas`` for predictions ``predicted_betas``.

    Args:
        predicted_betas: ``N x 100`` predicted identities (ψ and pose are ignored: predictions are neutralised).
        true_betas: ``N x 100`` ground truth.
        decoder: a :class:`ringnet_lib.decoder.Decoder` (the default head or real FLAME).
        n_points: points sampled per scan (``None``: the cropped vertices).
        noise_mm: scan noise std, mm.
        icp_iterations: NoW's refinement iterations.
        seed: scan sampling seed (scan i uses ``seed + i``).
    Returns:
        dict with ``per_identity`` (list of dicts: median_mm, mean_mm, std_mm, n_points,
        landmark_only_mean_mm), ``pooled`` (the same over all scan points, as NoW reports) and
        ``errors_mm`` (list of per-scan error arrays).
    """
    if predicted_betas.shape != true_betas.shape:
        raise ValueError(f"predicted_betas {tuple(predicted_betas.shape)} and true_betas {tuple(true_betas.shape)} "
                         "must have the same N x n_shape shape (one prediction per scan)")
    check_finite("predicted_betas", predicted_betas)
    true_v, true_l = neutral_meshes(decoder, true_betas)
    pred_v, pred_l = neutral_meshes(decoder, predicted_betas)
    faces = decoder.flame.faces
    per_identity, errors = [], []
    for i in range(len(true_betas)):
        scan = make_scan(true_v[i], faces, true_l[i], n_points=n_points, noise_mm=noise_mm, seed=seed + i)
        result = now_errors(scan.points, scan.landmarks, pred_v[i], faces, pred_l[i],
                            icp_iterations=icp_iterations, crop=False)  # the scan is already cropped
        error_mm = (result.distances * METRES_TO_MM).numpy()
        row = summarize_errors(error_mm)
        row["landmark_only_mean_mm"] = float(result.distances_landmarks_only.mean()) * METRES_TO_MM
        per_identity.append(row)
        errors.append(error_mm)
    return {"per_identity": per_identity, "pooled": summarize_errors(np.concatenate(errors)), "errors_mm": errors}


def results_table(results: dict[str, dict], digits: int = 3) -> str:
    """A markdown table of pooled median/mean/std (mm), one row per method: ``{name: evaluate_shapes(...)}``."""
    lines = ["| method | median (mm) | mean (mm) | std (mm) | scans |", "|---|---:|---:|---:|---:|"]
    for name, result in results.items():
        pooled = result["pooled"]
        lines.append(f"| {name} | {pooled['median_mm']:.{digits}f} | {pooled['mean_mm']:.{digits}f} | "
                     f"{pooled['std_mm']:.{digits}f} | {len(result['per_identity'])} |")
    return "\n".join(lines)


def results_rows(results: dict[str, dict]) -> list[dict]:
    """One row per (method, identity) plus a ``pooled`` row per method: the CSV of a report."""
    rows = []
    for name, result in results.items():
        for identity, r in [(str(i), r) for i, r in enumerate(result["per_identity"])] + [("pooled", result["pooled"])]:
            rows.append({"method": name, "identity": identity, "median_mm": f"{r['median_mm']:.6f}",
                         "mean_mm": f"{r['mean_mm']:.6f}", "std_mm": f"{r['std_mm']:.6f}", "n_points": r["n_points"]})
    return rows
