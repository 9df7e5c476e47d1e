"""Geometry of the default (non-FLAME) head: signed distance field -> exactly symmetric mesh.

Frame (like FLAME): metres, +y up, +z out of the face, +x towards the subject's LEFT.
The head is designed as a smooth union of ellipsoids / capsules (a mannequin), meshed with
marching cubes on the LEFT half only (x >= 0), decimated, then mirrored, so the final mesh is
exactly left-right symmetric and the mirror map of every vertex is known.
"""
import fast_simplification
import numpy as np
import trimesh
from skimage.measure import marching_cubes

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


def _ellipsoid(p, c, r):
    """Approximate SDF of an ellipsoid. p: N x 3, c: 3, r: 3 semi-axes -> N."""
    q = (p - c) / r
    k0 = np.linalg.norm(q, axis=1)
    k1 = np.linalg.norm(q / r, axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _capsule(p, a, b, ra, rb):
    """SDF of a rounded cone from a (radius ra) to b (radius rb), approx. p: N x 3 -> N."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (ra + (rb - ra) * t)


def _smin(a, b, k):
    """Polynomial smooth minimum (smooth union), blend width k (metres)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _ssub(a, b, k):
    """Smooth subtraction of shape b from shape a."""
    return -_smin(-a, b, k)


def _mirror_pair(f, p, *args):
    """Evaluate a left-side primitive and its mirror image; return their union."""
    pm = p * np.array([-1.0, 1.0, 1.0])
    return np.minimum(f(p, *args), f(pm, *args))


def head_sdf(p):
    """Signed distance (negative inside) of the designed head. p: N x 3 -> N.

    Built symmetric (each lateral part is unioned with its mirror) so that meshing the
    x >= 0 half and mirroring it is exact.
    """
    E = _ellipsoid
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


def left_half_mesh(step=GRID_STEP):
    """Marching cubes of the x >= 0 half of head_sdf.

    Returns (verts N x 3, faces M x 3). The grid's first x-slice is exactly x = 0, so the mesh
    has an open boundary lying exactly on the symmetry plane (and nowhere else: other grid
    sides are padded with 'outside').
    """
    xs = np.arange(0.0, 0.100 + step / 2, step)
    ys = np.arange(NECK_BOTTOM_Y - 2 * step, 0.140, step)
    zs = np.arange(-0.120, 0.125, step)
    P = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
    vol = head_sdf(P).reshape(len(xs), len(ys), len(zs))
    vol[-1], vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1] = 1, 1, 1, 1, 1
    v, f, _, _ = marching_cubes(vol, 0.0, spacing=(step,) * 3, allow_degenerate=False)
    v = v + np.array([xs[0], ys[0], zs[0]])
    # skimage winds faces with normals towards decreasing values: outward for negative-inside
    return v, f.astype(np.int64)


def boundary_vertices(faces):
    """Indices of vertices on open (once-used) edges. faces: M x 3 -> sorted int array."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    u, c = np.unique(e, axis=0, return_counts=True)
    return np.unique(u[c == 1])


def decimate_half(v, f, n_faces):
    """Quadric decimation of the half mesh; boundary vertices are snapped back onto x = 0."""
    v2, f2 = fast_simplification.simplify(v, f.astype(np.int32), target_count=n_faces, agg=5,
                                           preserve_border=True)
    # drop unreferenced vertices
    used = np.unique(f2)
    remap = -np.ones(len(v2), np.int64)
    remap[used] = np.arange(len(used))
    v2, f2 = v2[used], remap[f2]
    b = boundary_vertices(f2)
    v2[b, 0] = 0.0
    return v2, f2


def mirror_half(v, f):
    """Mirror a half mesh (x >= 0, open boundary on x = 0) into a closed symmetric mesh.

    Returns (verts V x 3, faces F x 3, mirror V): seam vertices map to themselves, other
    vertex i of the left half maps to its copy on the right.
    """
    n = len(v)
    seam = boundary_vertices(f)
    off = np.ones(n, bool)
    off[seam] = False
    right_idx = np.arange(n)
    right_idx[off] = n + np.arange(off.sum())
    vr = v[off] * np.array([-1.0, 1.0, 1.0])
    verts = np.concatenate([v, vr])
    faces = np.concatenate([f, right_idx[f][:, ::-1]])  # reflection flips winding: reverse it
    mirror = np.concatenate([right_idx, np.nonzero(off)[0]])
    return verts, faces, mirror


def eyeball_mesh(subdivisions=2):
    """Left eyeball (icosphere at EYE_CENTER). Returns (verts K x 3, faces L x 3)."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=EYE_RADIUS)
    return np.asarray(s.vertices) + EYE_CENTER, np.asarray(s.faces, np.int64)
