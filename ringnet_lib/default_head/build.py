"""Building the embedded default head: mesh, landmarks, skinning weights, joint regressor, blend shapes.

    model, static_embedding = build_default_head()     # FLAME's pickle keys and layouts, numpy

The slow part (marching cubes of the designed SDF, ~8 s) is shipped as ``assets/mesh.npz``;
regenerate it with ``python -m ringnet_lib.default_head --rebuild``. Everything else
(blend shapes, weights, regressor) is computed from that mesh in about 1.5 s, which
:mod:`ringnet_lib.default_head.cache` does once per machine. It is NOT FLAME: see
docs/default_head_model_card.md.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse
from scipy.optimize import nnls

from . import geometry
from .blendshapes import mouth_split, shapedirs, sigmoid, smoothstep

MESH_ASSET = Path(__file__).parent / "assets" / "mesh.npz"
KINTREE = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
HALF_FACES = 4600  # decimation target for the half head: ~5k vertices in total


# ----------------------------------------------------------------------------- mesh + landmarks
def _ray_hit(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray,
             direction: np.ndarray) -> tuple[int, np.ndarray]:
    """First hit of the ray origin + t direction (t > 0, ``3`` each) with the triangles ``F x 3`` of ``V x 3``.

    Returns (row of ``faces``, barycentrics ``3``). Raises ValueError when the ray misses.
    """
    o, d = origin, direction / np.linalg.norm(direction)
    e1 = np.cross(d, [0.0, 1.0, 0.0] if abs(d[1]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    T = vertices[faces] - o                               # F x 3 x 3
    u, w, t = T @ e1, T @ e2, T @ d                       # 2-D coords across the ray, depth
    a, b, c = np.stack([u, w], -1).transpose(1, 0, 2)     # each F x 2
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    det = np.where(np.abs(det) < 1e-20, 1e-20, det)
    l1 = ((0 - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (0 - a[:, 1])) / det
    l2 = ((b[:, 0] - a[:, 0]) * (0 - a[:, 1]) - (0 - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
    bc = np.stack([1 - l1 - l2, l1, l2], 1)
    depth = (bc * t).sum(1)
    ok = (bc.min(1) >= -1e-9) & (depth > 0)
    if not ok.any():
        raise ValueError(f"ray from {o} along {d} misses the mesh")
    i = np.nonzero(ok)[0][np.argmin(depth[ok])]
    b = np.clip(bc[i], 0, None)
    return int(i), b / b.sum()


def _landmark_targets() -> np.ndarray:
    """iBUG 18..68 (zero-based 17..67) as ``51 x 2`` (x, y) for front rays, designed on our features."""
    ex, ey = geometry.EYE_CENTER[0], geometry.EYE_CENTER[1]
    lid = ey + 0.0078 * np.sqrt(1 - (0.005 / 0.0165) ** 2) + 0.0012
    left_brow = [(0.012, 0.031), (0.020, 0.034), (0.029, 0.035), (0.038, 0.034), (0.046, 0.030)]
    # left eye 42..47: inner corner, 2 upper lid, outer corner, 2 lower lid
    left_eye = [(ex - 0.0175, ey), (ex - 0.005, lid), (ex + 0.005, lid), (ex + 0.0175, ey),
                (ex + 0.005, 2 * ey - lid), (ex - 0.005, 2 * ey - lid)]
    m, W = geometry.MOUTH_Y, geometry.MOUTH_HALF_WIDTH
    L = {}
    for i, (x, y) in enumerate(left_brow):            # 22..26 inner -> outer; 21..17 mirrored
        L[22 + i], L[21 - i] = (x, y), (-x, y)
    for i, y in enumerate([0.012, 0.001, -0.010, -0.023]):
        L[27 + i] = (0.0, y)                          # nose bridge to tip
    for i, (x, y) in enumerate([(-0.014, -0.029), (-0.007, -0.032), (0, -0.033),
                                (0.007, -0.032), (0.014, -0.029)]):
        L[31 + i] = (x, y)                            # nostrils, subject's right -> left
    for i, p in enumerate(left_eye):
        L[42 + i] = p
    for j, i in zip(range(36, 42), [45, 44, 43, 42, 47, 46]):
        L[j] = (-L[i][0], L[i][1])                    # right eye = mirror of the left
    up, lo = [m + 0.0085, m + 0.010, m + 0.0105], [m - 0.010, m - 0.0115, m - 0.012]
    outer = [(-W, m), (-0.016, up[0]), (-0.007, up[1]), (0, up[2]), (0.007, up[1]),
             (0.016, up[0]), (W, m), (0.016, lo[0]), (0.007, lo[1]), (0, lo[2]),
             (-0.007, lo[1]), (-0.016, lo[0])]
    inner = [(-0.019, m), (-0.008, m + 0.0026), (0, m + 0.0027), (0.008, m + 0.0026),
             (0.019, m), (0.008, m - 0.0026), (0, m - 0.0027), (-0.008, m - 0.0026)]
    for i, p in enumerate(outer + inner):
        L[48 + i] = p
    return np.array([L[i] for i in range(17, 68)])


def embed_landmarks(vertices: np.ndarray, faces: np.ndarray,
                    part: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The static (51) and frontal contour (17) landmarks, embedded on the skin faces by casting rays.

    ``vertices`` ``V x 3``, ``faces`` ``F x 3``, ``part`` ``V`` (0 = skin). Returns (static face
    indices ``51``, barycentrics ``51 x 3``, contour face indices ``17``, barycentrics ``17 x 3``),
    the indices into ``faces``.
    """
    skin = np.nonzero((part[faces] == 0).all(1))[0]
    skin_faces = faces[skin]
    idx, bcs = [], []
    for x, y in _landmark_targets():
        i, b = _ray_hit(vertices, skin_faces, np.array([x, y, 0.3]), np.array([0.0, 0.0, -1.0]))
        idx.append(skin[i]), bcs.append(b)
    cidx, cbcs = [], []
    o = np.array([0.0, -0.03, 0.045])   # inside the lower face; rays fan out to the jaw line
    for k in range(17):
        a = np.radians(-8 + 98 * min(k, 16 - k) / 8)   # from ear level (k=0) to chin (k=8)
        d = np.array([np.sign(k - 8) * np.cos(a) if k != 8 else 0.0, -np.sin(a), 0.35])
        i, b = _ray_hit(vertices, skin_faces, o, d)
        cidx.append(skin[i]), cbcs.append(b)
    return np.array(idx), np.array(bcs), np.array(cidx), np.array(cbcs)


def generate_mesh() -> dict[str, np.ndarray]:
    """Run the full (slow) geometry pipeline: the asset's arrays.

    ``v`` ``V x 3``, ``f`` ``F x 3``, ``mirror`` ``V``, ``part`` ``V``, ``lmk_face_idx`` ``51``,
    ``lmk_b_coords`` ``51 x 3``, ``contour_face_idx`` ``17``, ``contour_b_coords`` ``17 x 3``.
    """
    v, f = geometry.left_half_mesh()
    v, f = geometry.decimate_half(v, f, HALF_FACES)
    ev, ef = geometry.eyeball_mesh()
    part_half = np.concatenate([np.zeros(len(v), np.int64), np.ones(len(ev), np.int64)])
    vertices, faces, mirror = geometry.mirror_half(np.concatenate([v, ev]), np.concatenate([f, ef + len(v)]))
    right = np.where(part_half[mirror[len(part_half):]] == 1, 2, 0)  # mirrored left eye = right
    part = np.concatenate([part_half, right])
    li, lb, ci, cb = embed_landmarks(vertices, faces, part)
    return dict(v=vertices, f=faces.astype(np.int64), mirror=mirror.astype(np.int64), part=part,
                lmk_face_idx=li, lmk_b_coords=lb, contour_face_idx=ci, contour_b_coords=cb)


# ----------------------------------------------------------------------- skinning and joints
def skinning_weights(vertices: np.ndarray, part: np.ndarray) -> np.ndarray:
    """LBS weights ``V x 5`` of the template ``V x 3``: root (neck stump), neck (head), jaw (lower face), eyes.

    ``part`` (``V``: 0 skin, 1 / 2 left / right eyeball): each eyeball follows only its eye joint.
    """
    x, y, z = vertices.T
    root = 1.0 - smoothstep(-0.165, -0.085, y)
    jaw = mouth_split(vertices) * sigmoid((z - 0.0) / 0.012) * sigmoid((y + 0.125) / 0.01)
    jaw = jaw * (1 - root) * (1 - smoothstep(-0.015, 0.0, y))  # exactly 0 on the upper head
    W = np.zeros((len(vertices), 5))
    W[:, 0], W[:, 2] = root, jaw
    W[:, 1] = 1 - root - jaw
    eyes = part > 0
    W[eyes] = 0.0
    W[part == 1, 3] = 1.0
    W[part == 2, 4] = 1.0
    return W


def _convex_weights(points: np.ndarray, target: npt.ArrayLike, dims: list[int]) -> np.ndarray:
    """Non-negative weights ``n`` (sum 1) on ``n x 3`` points whose mix best reproduces ``target`` (``3``) on ``dims``.

    A non-negative least-squares fit: the sum-to-one row weighs ``1e3``, and a small ridge pulls
    towards equal weights ``1 / n``.
    """
    n = len(points)
    big, lam = 1e3, 1e-4
    A = np.vstack([points[:, dims].T, big * np.ones((1, n)), lam * np.eye(n)])
    b = np.concatenate([np.asarray(target)[dims], [big], lam * np.ones(n) / n])
    w, _ = nnls(A, b, maxiter=50 * n)
    return w / w.sum()


def joint_regressor(vertices: np.ndarray, part: np.ndarray, mirror: np.ndarray) -> scipy.sparse.csc_matrix:
    """The ``5 x V`` sparse joint regressor (root, neck, jaw, left eye, right eye) of the template ``V x 3``.

    ``part``: ``V`` (0 skin, 1 / 2 left / right eyeball); ``mirror``: ``V``, each vertex's mirror
    image. Every row is a convex combination of vertices: the root, neck and jaw rows with
    mirror-symmetric weights (so those joints lie on x = 0), each eye row the mean of its eyeball.
    """
    R = np.zeros((5, len(vertices)))
    skin = part == 0
    x, y, z = vertices.T
    cap = skin & (y < geometry.NECK_BOTTOM_Y + 1e-6)
    R[0, cap] = 1.0 / cap.sum()                     # root: centre of the neck-stump cap
    # neck pivot near the skull base; jaw at the hinge height/depth (x = 0 by symmetry):
    # fit (y, z) with vertices of the left side, then average with their mirrors
    for row, tgt, sel in [
        (1, [0.0, -0.045, -0.025], skin & (x > 1e-6) & (np.abs(y + 0.045) < 0.012) & (z < 0.02)),
        (2, [0.0, geometry.JAW_HINGE[1], geometry.JAW_HINGE[2]],
         skin & (x > 0.03) & (np.linalg.norm(vertices - geometry.JAW_HINGE, axis=1) < 0.03))]:
        idx = np.nonzero(sel)[0]
        w = _convex_weights(vertices[idx], tgt, [1, 2])
        R[row, idx] += 0.5 * w
        R[row, mirror[idx]] += 0.5 * w
    R[3, part == 1] = 1.0 / (part == 1).sum()       # eye centres: mean of the eyeball vertices
    R[4, part == 2] = 1.0 / (part == 2).sum()
    return scipy.sparse.csc_matrix(R)


# ------------------------------------------------------------------------------------- build
def load_mesh_asset(path: Path = MESH_ASSET) -> dict[str, np.ndarray]:
    """The shipped mesh (vertices, faces, mirror map, parts, landmark embeddings); generated when missing."""
    if not path.exists():
        save_mesh_asset(path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def save_mesh_asset(path: Path = MESH_ASSET) -> Path:
    """Regenerate the shipped mesh file (deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **generate_mesh())
    return path


@functools.lru_cache(maxsize=2)
def _build(path: Path = MESH_ASSET) -> tuple[dict, dict]:
    """(model, static_embedding) built from the mesh asset at ``path``; their arrays read-only, as they are shared."""
    a = load_mesh_asset(path)
    vertices, faces, part, mirror = a["v"], a["f"], a["part"], a["mirror"]
    model = {
        "v_template": vertices.astype(np.float64),
        "f": faces.astype(np.uint32),
        "shapedirs": shapedirs(vertices, part),
        "posedirs": np.zeros((len(vertices), 3, 36)),
        "J_regressor": joint_regressor(vertices, part, mirror),
        "weights": skinning_weights(vertices, part),
        "kintree_table": KINTREE.copy(),
    }
    emb = {
        "lmk_face_idx": a["lmk_face_idx"].astype(np.int64),
        "lmk_b_coords": a["lmk_b_coords"].astype(np.float64),
        "frontal_contour_face_idx": a["contour_face_idx"].astype(np.int64),
        "frontal_contour_b_coords": a["contour_b_coords"].astype(np.float64),
        "mirror_vertex_index": mirror.astype(np.int64),
    }
    for d in (model, emb):
        for v in d.values():
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
    return model, emb


def build_default_head() -> tuple[dict, dict]:
    """(model, static_embedding): fresh dict copies of cached read-only arrays.

    ``model`` has FLAME's pickle keys (``J_regressor`` scipy-sparse, as FLAME stores it);
    ``static_embedding`` the 51 landmarks plus the frontal jaw contour and the mirror map.
    """
    model, emb = _build()
    model = {k: (v.copy() if scipy.sparse.issparse(v) else v) for k, v in model.items()}
    return model, dict(emb)


def eyeball_part() -> np.ndarray:
    """``V`` int: 0 skin, 1 left eyeball, 2 right eyeball (handy for plots and tests)."""
    return load_mesh_asset()["part"]
