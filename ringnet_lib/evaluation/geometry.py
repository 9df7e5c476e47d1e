"""Exact closest points on triangles: the test every point-to-mesh query of the NoW metric ends in.

:func:`closest_point_barycentrics` (torch, any batch shape, degenerate triangles included) and its
numpy twin over a table of triangles (:class:`Triangles`, what the search in
:mod:`ringnet_lib.evaluation.mesh_index` runs on many (point, triangle) pairs at once). Both follow
Ericson, *Real-Time Collision Detection* (2005), 5.1.5, and agree to the last bit on degenerate
triangles (the numpy side hands those to the torch routine).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# (point, triangle) pairs computed at once by the exact test; about 40 float64 arrays of this
# size are alive, ~5 MB, which fits in cache.
EXACT_CHUNK = 16384
# Largest (point, box) frontier held at once during the descent: ~250 bytes per pair, so
# Relative slack on every pruning bound: covers the float64 rounding of box and triangle
# distances (a few ulps), so no triangle that could be closest is ever skipped.
SLACK = 1e-12


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
        degenerate = degenerate.expand(weights.shape[:-1])  # triangles may broadcast against more points
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


# ------------------------------------------------------------------ exact point-triangle test (numpy)
def _triangle_table(triangles: np.ndarray) -> np.ndarray:
    """``12 x F``: corner a, edges ab and ac, then |ab|^2, ab.ac, |ac|^2 (one row each, so gathers are 1-D)."""
    a, ab, ac = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    dots = [np.einsum("ij,ij->i", x, y) for x, y in ((ab, ab), (ab, ac), (ac, ac))]
    return np.ascontiguousarray(np.concatenate([a.T, ab.T, ac.T, np.stack(dots)]))


def _closest_on_triangles(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ericson's closest point (as :func:`closest_point_barycentrics`) on rows of a triangle table.

    Args:
        p: ``m x 3`` points.
        t: ``12 x m`` columns of :func:`_triangle_table`, one triangle per point.
    Returns:
        ``(v, w, squared distance)``, each ``m``: the closest point is ``a + v ab + w ac``.
    """
    ax, ay, az, bx, by, bz, cx, cy, cz, d00, d01, d11 = t
    qx, qy, qz = p[:, 0] - ax, p[:, 1] - ay, p[:, 2] - az  # ap
    d1, d2 = bx * qx + by * qy + bz * qz, cx * qx + cy * qy + cz * qz  # ab.ap, ac.ap
    # ab.bp, ac.bp, ab.cp, ac.cp from the same dot products (bp = ap - ab, cp = ap - ac).
    d3, d4, d5, d6 = d1 - d00, d2 - d01, d1 - d01, d2 - d11
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 only on degenerate triangles, redone by the caller
        denominator = va + vb + vc
        v, w = vb / denominator, vc / denominator  # the face interior
        # Ericson's regions in reverse order, so that his earlier tests win (np.where over all
        # pairs: 1.3x faster than assigning through boolean masks).
        e, f = d4 - d3, d5 - d6
        m = (va <= 0) & (e >= 0) & (f >= 0)  # edge BC
        t = e / (e + f)
        v, w = np.where(m, 1 - t, v), np.where(m, t, w)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)  # edge AC
        v, w = np.where(m, 0.0, v), np.where(m, d2 / (d2 - d6), w)
        m = (d6 >= 0) & (d5 <= d6)  # vertex C
        v, w = np.where(m, 0.0, v), np.where(m, 1.0, w)
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)  # edge AB
        v, w = np.where(m, d1 / (d1 - d3), v), np.where(m, 0.0, w)
        m = (d3 >= 0) & (d4 <= d3)  # vertex B
        v, w = np.where(m, 1.0, v), np.where(m, 0.0, w)
        m = (d1 <= 0) & (d2 <= 0)  # vertex A
        v, w = np.where(m, 0.0, v), np.where(m, 0.0, w)
    # The distance from the difference vector, not from the dot products: no cancellation.
    rx, ry, rz = qx - v * bx - w * cx, qy - v * by - w * cy, qz - v * bz - w * cz
    return v, w, rx * rx + ry * ry + rz * rz


class Triangles:
    """The mesh's triangles for the exact test: a float64 table, and which ones are degenerate."""

    def __init__(self, triangles: np.ndarray):
        self.corners = triangles  # F x 3 x 3
        self.table = _triangle_table(triangles)
        d00, d01, d11 = self.table[9:]
        # The same test as closest_point_barycentrics: |ab x ac|^2 = |ab|^2 |ac|^2 - (ab.ac)^2 is
        # too small against the edges for Ericson's formulas; such a triangle is a segment.
        normal = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        scale = np.maximum(np.maximum(d00, d11), np.finfo(np.float64).tiny)
        self.degenerate = np.einsum("ij,ij->i", normal, normal) <= 64 * np.finfo(np.float64).eps * scale ** 2
        self.any_degenerate = bool(self.degenerate.any())

    def closest(self, p: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(v, w, squared distance)`` of points ``m x 3`` to faces ``m``, chunked to stay in cache."""
        if len(faces) <= EXACT_CHUNK:
            v, w, d2 = _closest_on_triangles(p, self.table[:, faces])
        else:
            v, w, d2 = np.empty(len(faces)), np.empty(len(faces)), np.empty(len(faces))
            for i in range(0, len(faces), EXACT_CHUNK):
                s = slice(i, i + EXACT_CHUNK)
                v[s], w[s], d2[s] = _closest_on_triangles(p[s], self.table[:, faces[s]])
        if self.any_degenerate:
            bad = np.flatnonzero(self.degenerate[faces])
            if len(bad):  # rare: the torch routine's best-edge answer, so both agree exactly
                weights = closest_point_barycentrics(torch.from_numpy(p[bad]),
                                                     torch.from_numpy(self.corners[faces[bad]])).numpy()
                closest = np.einsum("mk,mkx->mx", weights, self.corners[faces[bad]])
                v[bad], w[bad] = weights[:, 1], weights[:, 2]
                d2[bad] = ((closest - p[bad]) ** 2).sum(1)
        return v, w, d2
