"""The NoW protocol (Sanyal et al., CVPR 2019; github.com/soubhiksanyal/now_evaluation), step by step.

1. crop the scan to a sphere around the face, from the scan's 7 landmarks;
2. align the predicted neutral mesh to the scan with a similarity transform fitted
   on the 7 landmarks (Umeyama);
3. refine that alignment by minimising the scan-to-mesh distance (ICP: closest
   points on the mesh, then a closed-form similarity fit, repeated);
4. report the unsigned distance from every cropped scan point to the aligned mesh
   surface (median, mean, std in mm; cumulative error curve).

    result = now_errors(scan_points, scan_landmarks7, pred_vertices, faces, pred_landmarks7)
    summarize_errors(result.distances * 1000)         # metres -> mm

The 7 landmarks and the crop sphere are defined in :mod:`ringnet_lib.face_region`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..alignment import Similarity, umeyama
from ..checks import check_finite
from ..face_region import NOW_LANDMARK_NAMES, check_landmarks, crop_mask, crop_sphere
from ..lbs import batch_rodrigues
from ..mesh import keep_vertices
from .geometry import MeshDistance
from .mesh_index import MeshIndex, MeshTracker


def crop_points(points: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """The scan points inside NoW's crop: ``N x 3`` -> ``M x 3``; an empty crop is an error."""
    check_finite("scan points", points)
    kept = points[crop_mask(points, landmarks)]
    if len(kept) == 0:
        sphere = crop_sphere(landmarks)
        raise ValueError(f"the NoW crop (centre {sphere.centre.tolist()}, radius {float(sphere.radius):.4g}) holds "
                         f"none of the {len(points)} scan points. The landmarks must be on the scan, in the scan's "
                         "units and frame, in NoW's order " + str(NOW_LANDMARK_NAMES) + ".")
    return kept


def crop_mesh(vertices: torch.Tensor, faces: torch.Tensor, landmarks: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the vertices inside the crop and the faces whose 3 corners are all kept (re-indexed).

    Args:
        vertices: ``V x 3``.
        faces: ``F x 3``.
        landmarks: ``7 x 3`` scan landmarks.
    Returns:
        ``(M x 3 vertices, G x 3 faces)``.
    """
    check_finite("scan vertices", vertices)
    keep = crop_mask(vertices, landmarks)
    if not keep.any():
        crop_points(vertices, landmarks)  # raises the explanatory error
    return keep_vertices(vertices, faces, keep)


def align_by_landmarks(predicted_landmarks: torch.Tensor, scan_landmarks: torch.Tensor) -> Similarity:
    """Similarity (scale, rotation, translation) taking the prediction's 7 landmarks onto the scan's."""
    predicted = check_landmarks("predicted landmarks", predicted_landmarks)
    scan = check_landmarks("scan landmarks", scan_landmarks)
    return umeyama(predicted, scan.to(predicted.dtype), with_scale=True)


class IcpResult(NamedTuple):
    transform: Similarity  # total, applied to the vertices it was given
    history: list  # mean scan-to-mesh distance after each accepted step (index 0: the start)
    rms_history: list  # root-mean-square distance (the objective) after each accepted step
    start_distances: torch.Tensor  # N, scan-to-mesh distances before the refinement
    distances: torch.Tensor  # N, after it


def _point_to_plane_step(scan_points: torch.Tensor, match, triangles: torch.Tensor, moved: torch.Tensor,
                         with_scale: bool) -> Similarity:
    """One Gauss-Newton step on the distances: linearise each d_i along its direction n_i.

    ``d_i`` changes by ``-n_i . dx_i`` when the matched mesh point moves by ``dx_i =
    w x (x_i - c) + ds (x_i - c) + t`` (small rotation w, scale change ds, shift t, about
    the centroid c); least squares on the 7 (or 6) unknowns drives the distances to 0.
    """
    x = match.closest_points
    offset = scan_points - x
    face_normal = torch.linalg.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    face_normal = face_normal[match.face_index]
    # The gradient of the distance; on the surface (d = 0) the face normal stands in.
    on_surface = match.distances[:, None] <= 1e-12 * moved.abs().max()
    n = torch.where(on_surface, face_normal, offset)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(n.dtype).tiny)
    centre = x.mean(0)
    xc = x - centre
    columns = [torch.linalg.cross(xc, n), n] + ([(n * xc).sum(-1, keepdim=True)] if with_scale else [])
    jacobian = torch.cat(columns, 1)  # N x 7
    residual = (offset * n).sum(-1)  # signed distances along n
    step = torch.linalg.lstsq(jacobian, residual[:, None]).solution[:, 0]
    rotation = batch_rodrigues(step[None, :3])[0]  # exp of the small rotation, as FLAME's joints
    # A wild step must not flip or collapse the mesh (NoW's objective penalises s < 0 for the same reason).
    scale = (1 + step[6]).clamp(0.5, 2.0) if with_scale else torch.ones((), dtype=x.dtype)
    translation = centre + step[3:6] - scale * rotation @ centre
    return Similarity(scale, rotation, translation)


def _closest_on_moved_mesh(tracker: MeshTracker, transform: Similarity, points: torch.Tensor) -> MeshDistance:
    """Closest points of ``points`` on ``transform.apply(mesh)``: the unmoved mesh's answer for the
    inversely moved points, moved back (a similarity keeps closest points; distances scale by s)."""
    local = (points - transform.translation) @ transform.rotation / transform.scale
    match = tracker.closest_points(local)
    return MeshDistance(match.distances * transform.scale, transform.apply(match.closest_points), match.face_index,
                        match.barycentrics)


def refine_alignment(scan_points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                     iterations: int = 10, with_scale: bool = True, tolerance: float = 1e-3) -> IcpResult:
    """ICP refinement: move the mesh to reduce the scan-to-mesh distances.

    Each iteration finds, for every scan point, the closest point on the moved mesh
    and proposes two updates: a Gauss-Newton (point-to-plane) step on the distances,
    and the closed-form (Umeyama, point-to-point) fit of the matched mesh points to
    the scan points. The first that lowers the sum of squared distances is taken, so
    that sum never increases. NoW's own refinement minimises the same sum over scale,
    rotation and translation (its non-metrical protocol); ``with_scale=False`` gives
    the rigid variant.

    Args:
        scan_points: ``N x 3`` cropped scan.
        vertices: ``V x 3`` mesh, already roughly aligned (e.g. by landmarks).
        faces: ``F x 3``.
        iterations: at most this many accepted steps.
        with_scale: also refine the scale.
        tolerance: stop when the RMS distance improves by less than this fraction.
    Returns:
        :class:`IcpResult`: the transform to apply to ``vertices``, the mean and RMS distance per
        step, and the per-point distances before and after.
    """
    scan_points = scan_points.to(vertices.dtype)
    transform = Similarity.identity(vertices.dtype)
    # One index of the unmoved mesh for the whole refinement: each proposal moves the scan by its
    # inverse instead. The tracker searches again only the points whose closest triangle a move
    # may have changed (bench/point_to_mesh.py's 100k-point scan: 100 %, 100 %, 60 %, 26 % of the
    # points at the 4 queries), and every answer stays exact.
    tracker = MeshTracker(MeshIndex(vertices, faces))
    match = _closest_on_moved_mesh(tracker, transform, scan_points)
    start_distances = match.distances
    history, rms = [float(match.distances.mean())], [float(match.distances.square().mean().sqrt())]
    triangles0 = vertices[faces.long()]
    for _ in range(iterations):
        moved = transform.apply(vertices)
        triangles = moved[faces.long()]
        # Matched points in the unmoved mesh's frame (a fixed triangle and barycentrics).
        anchors = (match.barycentrics[:, :, None] * triangles0[match.face_index]).sum(1)
        proposals = [lambda: _point_to_plane_step(scan_points, match, triangles, moved, with_scale).compose(transform),
                     lambda: umeyama(anchors, scan_points, with_scale=with_scale)]
        for propose in proposals:
            candidate = propose()
            new_match = _closest_on_moved_mesh(tracker, candidate, scan_points)
            new_rms = float(new_match.distances.square().mean().sqrt())
            if new_rms < rms[-1]:
                break
        else:
            break  # neither step helps: converged (up to round-off)
        transform, match = candidate, new_match
        history.append(float(match.distances.mean()))
        rms.append(new_rms)
        if rms[-2] - rms[-1] <= tolerance * rms[-2]:
            break
    return IcpResult(transform, history, rms, start_distances, match.distances)


class NowResult(NamedTuple):
    distances: torch.Tensor  # N, unsigned scan-to-mesh distances (scan units) after refinement
    distances_landmarks_only: torch.Tensor  # N, the same after the landmark alignment alone
    scan_points: torch.Tensor  # N x 3, the cropped scan
    aligned_vertices: torch.Tensor  # V x 3, the prediction in the scan's frame
    transform: Similarity  # prediction -> scan
    icp_history: list  # mean distance per ICP step


def now_errors(scan_points: torch.Tensor, scan_landmarks: torch.Tensor, predicted_vertices: torch.Tensor,
               faces: torch.Tensor, predicted_landmarks: torch.Tensor, icp_iterations: int = 10,
               with_scale: bool = True, crop: bool = True) -> NowResult:
    """The whole NoW metric for one scan and one predicted (neutral) mesh.

    Args:
        scan_points: ``N x 3`` scan vertices (or points sampled on the scan), in the scan's units.
        scan_landmarks: ``7 x 3`` on the scan, NoW's order.
        predicted_vertices: ``V x 3`` predicted neutral mesh (any units: the alignment fits a scale).
        faces: ``F x 3`` of the prediction.
        predicted_landmarks: ``7 x 3`` on the prediction, same order.
        icp_iterations: refinement iterations (0: landmark alignment only).
        with_scale: let the refinement change the scale, as NoW does.
        crop: apply NoW's crop to ``scan_points`` (False if already cropped).
    Returns:
        :class:`NowResult`, distances in the scan's units (multiply by 1000 for metres -> mm).
    """
    check_finite("predicted vertices", predicted_vertices)
    scan_landmarks = check_landmarks("scan landmarks", scan_landmarks)
    points = crop_points(scan_points, scan_landmarks) if crop else scan_points
    if len(points) == 0:
        raise ValueError("the scan has no points; pass at least one scan point (after cropping)")
    start = align_by_landmarks(predicted_landmarks, scan_landmarks)
    moved = start.apply(predicted_vertices.to(start.scale.dtype))
    icp = refine_alignment(points, moved, faces, iterations=icp_iterations, with_scale=with_scale)
    aligned = icp.transform.apply(moved)
    return NowResult(icp.distances, icp.start_distances, points, aligned, icp.transform.compose(start), icp.history)


def summarize_errors(errors_mm: torch.Tensor | np.ndarray) -> dict:
    """Median, mean and std (population, as numpy's default) of errors in mm, plus their count."""
    errors = np.asarray(errors_mm, dtype=np.float64).ravel()
    if errors.size == 0:
        raise ValueError("no errors to summarise (empty scan crop?)")
    return {"median_mm": float(np.median(errors)), "mean_mm": float(errors.mean()),
            "std_mm": float(errors.std()), "n_points": int(errors.size)}


def cumulative_error_curve(errors_mm: torch.Tensor | np.ndarray, max_mm: float = 10.0,
                           steps: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of scan points with error <= each threshold (NoW's cumulative error plot).

    Args:
        errors_mm: any shape, mm.
        max_mm: largest threshold.
        steps: number of thresholds from 0 to ``max_mm``.
    Returns:
        ``(thresholds steps, fractions steps)``, fractions in [0, 1] and non-decreasing.
    """
    errors = np.sort(np.asarray(errors_mm, dtype=np.float64).ravel())
    thresholds = np.linspace(0.0, max_mm, steps)
    return thresholds, np.searchsorted(errors, thresholds, side="right") / max(errors.size, 1)
