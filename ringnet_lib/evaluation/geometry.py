"""Geometry for the NoW metric: exact closest points on a triangle mesh.

Everything is vectorised torch and works in any unit; the NoW protocol on top
of it lives in :mod:`ringnet_lib.evaluation.now`, the similarity fits in
:mod:`ringnet_lib.alignment`.

    d, closest, face, bary = closest_points_on_mesh(points, vertices, faces)   # N, N x 3, N, N x 3
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import check_finite

# How many (point, triangle) pairs one chunk may hold; ~20 float tensors of this
# size are alive at once, so 2**21 pairs keep the peak around 200 MB in float32.
PAIR_BUDGET = 2 ** 21


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(-1)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # Denominators are zero only in regions the caller then discards (or on
    # degenerate triangles); keep them finite so torch.where sees no NaN.
    return num / torch.where(den == 0, torch.ones_like(den), den)


def closest_point_barycentrics(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Barycentric weights of the closest point on each triangle (all 7 Voronoi regions).

    The region tests follow Ericson, *Real-Time Collision Detection* (2005), 5.1.5:
    vertex regions A, B, C, edge regions AB, AC, BC, then the face interior.

    Args:
        points: ``... x 3``.
        triangles: ``... x 3 x 3`` (corner, xyz), broadcastable against ``points``.
    Returns:
        ``... x 3`` weights (non-negative, summing to 1) of the corners a, b, c.
    """
    a, b, c = triangles.unbind(-2)
    p = points
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    # Interior first; each later assignment overrides it where its region applies,
    # in reverse of Ericson's test order so that his earlier tests win.
    denominator = va + vb + vc
    v, w = _safe_div(vb, denominator), _safe_div(vc, denominator)
    weights = torch.stack([1 - v - w, v, w], -1)

    def override(mask: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[..., None], new, weights)

    zero = torch.zeros_like(d1)
    t_bc = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    weights = override((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([zero, 1 - t_bc, t_bc], -1))
    t_ac = _safe_div(d2, d2 - d6)
    weights = override((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - t_ac, zero, t_ac], -1))
    weights = override((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, zero + 1], -1))
    t_ab = _safe_div(d1, d1 - d3)
    weights = override((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - t_ab, t_ab, zero], -1))
    weights = override((d3 >= 0) & (d4 <= d3), torch.stack([zero, zero + 1, zero], -1))
    weights = override((d1 <= 0) & (d2 <= 0), torch.stack([zero + 1, zero, zero], -1))
    # Ericson's tests assume a proper triangle. A degenerate one (repeated or
    # collinear corners, as in scan meshes) is a segment: take the best edge.
    normal = torch.linalg.cross(ab, ac)
    scale = torch.maximum(_dot(ab, ab), _dot(ac, ac)).clamp_min(torch.finfo(p.dtype).tiny)
    degenerate = _dot(normal, normal) <= (64 * torch.finfo(p.dtype).eps) * scale.square()
    if degenerate.any():  # rare: fix only those pairs
        p_, a_, b_, c_ = (x.expand(weights.shape)[degenerate] for x in (p, a, b, c))
        weights = weights.clone()
        weights[degenerate] = _best_edge_weights(p_, a_, b_, c_)
    return weights


def _best_edge_weights(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Barycentric weights of the closest point on the three edges (for degenerate triangles)."""
    best_weights, best_distance = None, None
    for start, end, i, j in ((a, b, 0, 1), (a, c, 0, 2), (b, c, 1, 2)):
        edge = end - start
        t = _safe_div(_dot(p - start, edge), _dot(edge, edge)).clamp(0, 1)
        distance = (start + t[..., None] * edge - p).norm(dim=-1)
        w = torch.zeros(t.shape + (3,), dtype=p.dtype, device=p.device)
        w[..., i], w[..., j] = 1 - t, t
        if best_weights is None:
            best_weights, best_distance = w, distance
        else:
            closer = distance < best_distance
            best_weights = torch.where(closer[..., None], w, best_weights)
            best_distance = torch.where(closer, distance, best_distance)
    return best_weights


def closest_points_on_triangles(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Closest point on each triangle: ``... x 3`` points, ``... x 3 x 3`` triangles -> ``... x 3``."""
    weights = closest_point_barycentrics(points, triangles)
    return (weights[..., None] * triangles).sum(-2)


class MeshDistance(NamedTuple):
    distances: torch.Tensor  # N, unsigned point-to-surface distances
    closest_points: torch.Tensor  # N x 3
    face_index: torch.Tensor  # N, triangle holding the closest point
    barycentrics: torch.Tensor  # N x 3, weights of that triangle's corners


def closest_points_on_mesh(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                           pair_budget: int = PAIR_BUDGET, candidates: int = 48) -> MeshDistance:
    """Exact closest points on a triangle mesh, chunked over points so memory stays bounded.

    Pruning that never changes the answer: triangle T with centroid c and radius r
    (largest centroid-corner distance) is at least ``|p - c| - r`` from p. Each point
    first tests only the ``candidates`` triangles with the smallest such bound; where
    the best distance found is above the next bound, it retries with 8x more, up to
    all triangles. Memory: about 20 tensors of ``pair_budget`` elements.

    Args:
        points: ``N x 3``.
        vertices: ``V x 3``.
        faces: ``F x 3`` vertex indices.
        pair_budget: largest (points x triangles) block computed at once.
        candidates: triangles tested per point in the first round.
    Returns:
        :class:`MeshDistance` (distances ``N``, closest points ``N x 3``, face index ``N``, barycentrics ``N x 3``).
    """
    if points.ndim != 2 or points.shape[-1] != 3 or vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"points and vertices must be N x 3 and V x 3, got {tuple(points.shape)} and "
                         f"{tuple(vertices.shape)}; evaluate one mesh at a time.")
    if faces.ndim != 2 or faces.shape[-1] != 3 or len(faces) == 0:
        raise ValueError(f"faces must be a non-empty F x 3 index array, got {tuple(faces.shape)}")
    check_finite("points", points)
    check_finite("mesh vertices", vertices)
    points = points.to(vertices.dtype)
    if len(points) == 0:
        empty = points.new_empty(0, 3)
        return MeshDistance(points.new_empty(0), empty, torch.empty(0, dtype=torch.long), empty)
    triangles = vertices[faces.long()]  # F x 3 x 3
    centres = triangles.mean(1)
    radii = (triangles - centres[:, None]).norm(dim=-1).amax(1)
    n, n_faces = len(points), len(triangles)
    out_d = points.new_empty(n)
    out_p, out_b = points.new_empty(n, 3), points.new_empty(n, 3)
    out_f = torch.empty(n, dtype=torch.long, device=points.device)
    for rows in torch.arange(n, device=points.device).split(max(1, pair_budget // n_faces)):
        lower = torch.cdist(points[rows], centres) - radii  # n x F lower bounds
        k = min(candidates, n_faces)
        while len(rows):
            bound, index = lower.topk(k, dim=1, largest=False)  # n x k, ascending
            q = points[rows]
            tri = triangles[index]  # n x k x 3 x 3
            weights = closest_point_barycentrics(q[:, None], tri)  # n x k x 3
            closest = (weights[..., None] * tri).sum(-2)
            dist = (closest - q[:, None]).norm(dim=-1)  # n x k
            best = dist.argmin(1)
            arange = torch.arange(len(rows), device=points.device)
            best_d = dist[arange, best]
            # Exact when no untested triangle can be closer (or all were tested).
            done = (bound[:, -1] >= best_d) | (k == n_faces)
            target = rows[done]
            out_d[target] = best_d[done]
            out_p[target] = closest[arange, best][done]
            out_b[target] = weights[arange, best][done]
            out_f[target] = index[arange, best][done]
            rows, lower = rows[~done], lower[~done]
            k = min(8 * k, n_faces)
    return MeshDistance(out_d, out_p, out_f, out_b)


def point_to_mesh_distance(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                           pair_budget: int = PAIR_BUDGET) -> torch.Tensor:
    """Unsigned distance from each point to the mesh surface: ``N x 3`` -> ``N``.

    Args:
        points: ``N x 3``.
        vertices: ``V x 3``.
        faces: ``F x 3``.
        pair_budget: see :func:`closest_points_on_mesh`.
    """
    return closest_points_on_mesh(points, vertices, faces, pair_budget).distances
