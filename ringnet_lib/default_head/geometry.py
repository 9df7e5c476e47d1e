"""Geometry of the default (non-FLAME) head: signed distance field -> exactly symmetric mesh.

Frame (like FLAME): metres, +y up, +z out of the face, +x towards the subject's LEFT.
The head is designed as a smooth union of ellipsoids / capsules (a mannequin), meshed with
marching cubes on the LEFT half only (x >= 0), decimated, then mirrored, so the final mesh is
exactly left-right symmetric and the mirror map of every vertex is known.
"""
from __future__ import annotations

from collections.abc import Callable

import fast_simplification
import numpy as np
import numpy.typing as npt
import torch
import trimesh
from skimage.measure import marching_cubes

from ..mesh import face_edges, used_vertices

# ---- landmarks of the design (all in metres); shared with blendshapes / skinning -------------
EYE_CENTER = np.array([0.0315, 0.010, 0.061])   # left eye; right eye is x-mirrored
EYE_RADIUS = 0.0115
MOUTH_Y = -0.054                                 # mouth line (slit between the lips)
MOUTH_Z = 0.086                                  # front of the lips
MOUTH_HALF_WIDTH = 0.024
NOSE_TIP = np.array([0.0, -0.022, 0.108])
JAW_HINGE = np.array([0.056, -0.028, 0.000])     # left hinge, in front of / below the ear
NECK_BOTTOM_Y = -0.175                           # flat cut of the neck stump
GRID_STEP = 0.0015                               # marching-cubes cell size (metres)


def _ellipsoid(points: np.ndarray, center: npt.ArrayLike, semi_axes: npt.ArrayLike) -> np.ndarray:
    """Approximate SDF of an ellipsoid: ``N x 3`` points, centre ``3``, semi-axes ``3`` -> ``N``."""
    q = (points - center) / semi_axes
    k0 = np.linalg.norm(q, axis=1)
    k1 = np.linalg.norm(q / semi_axes, axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _capsule(points: np.ndarray, a: npt.ArrayLike, b: npt.ArrayLike, ra: float, rb: float) -> np.ndarray:
    """Approximate SDF of a rounded cone from end ``a`` (radius ``ra``) to end ``b`` (radius ``rb``).

    ``N x 3`` points, ends ``3`` -> ``N``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1) - (ra + (rb - ra) * t)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (smooth union) of two ``N`` distances, blend width ``k`` (metres)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _ssub(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth subtraction of shape ``b`` from shape ``a`` (``N`` distances each), blend width ``k``."""
    return -_smin(-a, b, k)


def _mirror_pair(primitive: Callable[..., np.ndarray], points: np.ndarray, *args: object) -> np.ndarray:
    """Union of a left-side primitive ``primitive(points, *args)`` and its x-mirror image: ``N x 3`` -> ``N``."""
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    return np.minimum(primitive(points, *args), primitive(mirrored, *args))


def head_sdf(points: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of the designed head: ``N x 3`` points -> ``N``.

    Built symmetric (each lateral part is unioned with its mirror) so that meshing the
    x >= 0 half and mirroring it is exact.
    """
    p, E = points, _ellipsoid  # short local names: the primitives below read as one table
    cranium = E(p, [0, 0.035, -0.012], [0.074, 0.092, 0.096])
    face = E(p, [0, -0.020, 0.030], [0.060, 0.075, 0.060])
    d = _smin(cranium, face, 0.02)
    # forehead and brow ridge: the brow bulges a little above the eyes
    d = _smin(d, _mirror_pair(_capsule, p, [0.046, 0.026, 0.064], [0.012, 0.029, 0.083], 0.008, 0.009), 0.012)
    d = _smin(d, E(p, [0, 0.045, 0.055], [0.055, 0.04, 0.03]), 0.015)
    # cheek bones and cheeks
    d = _smin(d, _mirror_pair(E, p, [0.044, -0.010, 0.052], [0.022, 0.020, 0.020]), 0.015)
    # jaw: capsules from each hinge to the chin, plus a chin ellipsoid
    d = _smin(d, _mirror_pair(_capsule, p, JAW_HINGE - [0.002, 0.015, 0.0], [0.020, -0.092, 0.058], 0.013, 0.011), 0.03)
    d = _smin(d, E(p, [0, -0.090, 0.066], [0.024, 0.018, 0.017]), 0.02)
    # muzzle (area around the mouth) and lips
    d = _smin(d, E(p, [0, -0.050, 0.066], [0.032, 0.028, 0.020]), 0.012)
    d = _smin(d, E(p, [0, MOUTH_Y + 0.0065, MOUTH_Z - 0.008], [0.025, 0.0075, 0.009]), 0.004)
    d = _smin(d, E(p, [0, MOUTH_Y - 0.0075, MOUTH_Z - 0.009], [0.023, 0.0080, 0.009]), 0.004)
    # nose: bridge as a rounded cone from the nasion to the tip, nostril wings, tip ball
    d = _smin(d, _capsule(p, [0, 0.012, 0.078], NOSE_TIP - [0, 0.002, 0.010], 0.0065, 0.0105), 0.01)
    d = _smin(d, E(p, NOSE_TIP - [0, 0.002, 0.004], [0.010, 0.009, 0.008]), 0.004)
    d = _smin(d, _mirror_pair(E, p, [0.014, -0.027, 0.090], [0.0085, 0.0075, 0.0095]), 0.005)
    # ears: flattened ellipsoids with a concha hollow on the outer side
    ear = _mirror_pair(E, p, [0.074, 0.002, -0.012], [0.010, 0.030, 0.018])
    d = _smin(d, ear, 0.006)
    d = _ssub(d, _mirror_pair(E, p, [0.086, 0.000, -0.008], [0.006, 0.016, 0.009]), 0.003)
    # neck, cut flat at the bottom so that the mesh is closed
    neck = _capsule(p, [0, NECK_BOTTOM_Y - 0.05, -0.025], [0, -0.030, -0.020], 0.054, 0.052)
    d = _smin(d, neck, 0.025)
    d = np.maximum(d, NECK_BOTTOM_Y - p[:, 1])
    # nostrils: small holes under the nose
    d = _ssub(d, _mirror_pair(E, p, [0.0075, -0.031, 0.096], [0.0035, 0.0025, 0.006]), 0.002)
    # eye sockets: room for the eyeball + an almond-shaped lid opening
    socket = _mirror_pair(E, p, EYE_CENTER, [EYE_RADIUS + 0.0015] * 3)
    opening = _mirror_pair(E, p, EYE_CENTER + [0, 0, 0.012], [0.0165, 0.0078, 0.012])
    d = _ssub(d, np.minimum(socket, opening), 0.002)
    # mouth slit: a thin cavity between the lips, deeper and taller towards the back,
    # so the lips are separate surfaces and opening the jaw visibly parts them
    slit = E(p, [0, MOUTH_Y, MOUTH_Z - 0.004], [MOUTH_HALF_WIDTH, 0.0018, 0.014])
    cavity = E(p, [0, MOUTH_Y, MOUTH_Z - 0.022], [0.020, 0.008, 0.010])
    d = _ssub(d, _smin(slit, cavity, 0.004), 0.0015)
    return d


def left_half_mesh(step: float = GRID_STEP) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the x >= 0 half of :func:`head_sdf`, with cells of ``step`` metres.

    Returns ``(vertices V x 3, faces F x 3 int64)``, faces wound outwards. The grid's first
    x-slice is exactly x = 0, so the mesh has an open boundary lying exactly on the symmetry
    plane (and nowhere else: the other grid sides are padded with 'outside').
    """
    xs = np.arange(0.0, 0.100 + step / 2, step)
    ys = np.arange(NECK_BOTTOM_Y - 2 * step, 0.140, step)
    zs = np.arange(-0.120, 0.125, step)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
    vol = head_sdf(grid).reshape(len(xs), len(ys), len(zs))
    vol[-1], vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1] = 1, 1, 1, 1, 1
    v, f, _, _ = marching_cubes(vol, 0.0, spacing=(step,) * 3, allow_degenerate=False)
    v = v + np.array([xs[0], ys[0], zs[0]])
    # skimage winds faces with normals towards decreasing values: outward for negative-inside
    return v, f.astype(np.int64)


def boundary_vertices(faces: np.ndarray) -> np.ndarray:
    """Sorted indices of the vertices on open (once-used) edges: faces ``F x 3`` -> ``B`` int."""
    edges, uses = np.unique(face_edges(faces), axis=0, return_counts=True)
    return np.unique(edges[uses == 1])


def decimate_half(vertices: np.ndarray, faces: np.ndarray, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation of the half mesh to about ``n_faces`` faces, its open boundary kept.

    ``(V x 3, F x 3)`` -> ``(V' x 3, F' x 3 int64)``, with no unused vertex and the boundary
    exactly on x = 0.
    """
    v, f = fast_simplification.simplify(vertices, faces.astype(np.int32), target_count=n_faces, agg=5,
                                        preserve_border=True)
    # What mirror_half relies on, which the decimator does not promise (for the shipped head it
    # happens to hold already): no unused vertex (it would be mirrored into two orphans), and
    # every boundary vertex exactly on x = 0 (each is taken as its own mirror image).
    v, f = used_vertices(torch.from_numpy(v), torch.from_numpy(f))
    v, f = v.numpy(), f.numpy()
    v[boundary_vertices(f), 0] = 0.0
    return v, f


def mirror_half(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror a half mesh (x >= 0, open boundary on x = 0) into a closed symmetric mesh.

    ``(N x 3, F x 3)`` -> ``(vertices V x 3, faces 2F x 3, mirror V)``: the N half vertices come
    first, then the mirror images of the non-seam ones; ``mirror`` maps each vertex to its mirror
    image (seam vertices to themselves).
    """
    n = len(vertices)
    seam = boundary_vertices(faces)
    off = np.ones(n, bool)
    off[seam] = False
    right_idx = np.arange(n)
    right_idx[off] = n + np.arange(off.sum())
    mirrored = vertices[off] * np.array([-1.0, 1.0, 1.0])
    all_vertices = np.concatenate([vertices, mirrored])
    all_faces = np.concatenate([faces, right_idx[faces][:, ::-1]])  # reflection flips winding: reverse it
    mirror = np.concatenate([right_idx, np.nonzero(off)[0]])
    return all_vertices, all_faces, mirror


def eyeball_mesh(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Left eyeball: an icosphere at ``EYE_CENTER``. Returns ``(vertices K x 3, faces L x 3 int64)``."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=EYE_RADIUS)
    return np.asarray(s.vertices) + EYE_CENTER, np.asarray(s.faces, np.int64)
