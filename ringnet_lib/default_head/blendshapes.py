"""Blend shapes of the default head, and the smooth step functions its skinning shares.

All are smooth analytic functions of the template vertices (``V x 3``, metres, FLAME frame),
so they are cheap to regenerate and deterministic. ``part`` (``V`` int) marks vertex groups:
0 = skin, 1 = left eyeball, 2 = right eyeball.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .geometry import EYE_CENTER, MOUTH_HALF_WIDTH, MOUTH_Y, MOUTH_Z, NOSE_TIP

FLIP = np.array([-1.0, 1.0, 1.0])  # the x-mirror, as a factor on points or displacements


def sigmoid(t: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-t)), elementwise (written with tanh: no overflow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def smoothstep(low: float, high: float, t: np.ndarray) -> np.ndarray:
    """Cubic step, elementwise: 0 for ``t <= low``, 1 for ``t >= high``, 3s² - 2s³ in between."""
    s = np.clip((t - low) / (high - low), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def mouth_split(vertices: np.ndarray) -> np.ndarray:
    """``V x 3`` -> ``V``: ~1 below the mouth line (lower lip, chin, jaw), ~0 above; smooth where needed.

    Used for jaw skinning and lip expressions: below a line rising from the mouth slit back to
    the jaw hinge. Sharp at the lips (so they part), broad at the mouth corners, at the
    cavity back and on the cheeks, so that nothing tears.
    """
    x, y, z = vertices.T
    y_line = MOUTH_Y + 0.46 * np.clip(MOUTH_Z - 0.03 - z, 0, None)  # flat across the lips
    # the slit/cavity walls never cross the mouth line except at the cavity back (tall, so a
    # broad transition fits) and at the mouth corners: sharpness depends on depth and width
    # r < 1 inside the (x, z) footprint of the slit/cavity (same ellipses as in head_sdf)
    r = np.minimum(np.hypot(x / MOUTH_HALF_WIDTH, (z - MOUTH_Z + 0.004) / 0.014),
                   np.hypot(x / 0.020, (z - MOUTH_Z + 0.022) / 0.010))
    lips = 1 - smoothstep(0.3, 1.0, r)
    h = np.maximum(0.0018 * np.sqrt(np.clip(1 - r ** 2, 0, 1)), 0.008 * np.sqrt(np.clip(1 - (
        np.hypot(x / 0.020, (z - MOUTH_Z + 0.022) / 0.010)) ** 2, 0, 1)))  # cavity half-height
    s = 0.0005 + h / 3 + 0.007 * (1 - lips)
    return sigmoid((y_line - y) / s)


def _bump(points: np.ndarray, center: npt.ArrayLike, sigma: npt.ArrayLike, mirror: bool = True) -> np.ndarray:
    """Gaussian bump at ``center`` (``3``) with per-axis widths ``sigma`` (``3``): ``N x 3`` -> ``N``.

    With ``mirror``, |x| is used: a symmetric pair of bumps at ``center`` and its mirror image.
    """
    p = points.copy()
    if mirror:
        p[:, 0] = np.abs(p[:, 0])
    return np.exp(-0.5 * np.sum(((p - np.asarray(center)) / np.asarray(sigma)) ** 2, axis=1))


def _vec(*columns: np.ndarray) -> np.ndarray:
    """Three ``N`` components -> one ``N x 3`` field."""
    return np.stack(columns, axis=1)


def shape_fields(points: np.ndarray) -> list[np.ndarray]:
    """The 18 designed identity fields, most important first: ``N x 3`` points -> list of ``N x 3``."""
    x, y, z = points.T
    g = _bump
    sx = np.tanh(x / 0.008)  # smooth sign: no tear at the midline
    head = smoothstep(-0.16, -0.07, y)    # 1 on the head, 0 at the neck stump
    face = sigmoid((z - 0.02) / 0.015)
    lower = sigmoid((MOUTH_Y + 0.01 - y) / 0.012) * face
    return [
        _vec(x * head, 0 * x, 0 * x),                                   # head width
        _vec(0 * x, (y + 0.03) * head, 0 * x),                          # head / face height
        _vec(0 * x, 0 * x, (z + 0.01) * head),                          # head depth
        _vec(0 * x, (y - MOUTH_Y) * lower - 0.02 * lower, 0 * x),       # lower-face length
        _vec(x * g(points, [0.05, -0.07, 0.03], [0.03, 0.03, 0.04]), 0 * x, 0 * x),  # jaw width
        _vec(0 * x, 0 * x, g(points, NOSE_TIP, [0.015, 0.02, 0.02], False)),          # nose length
        _vec(x * g(points, [0.0, -0.025, 0.09], [0.02, 0.012, 0.015], False), 0 * x, 0 * x),  # nose width
        _vec(0 * x, -0.3 * g(points, [0, -0.095, 0.07], [0.025, 0.015, 0.02]),
             g(points, [0, -0.09, 0.07], [0.025, 0.018, 0.02])),            # chin prominence
        _vec(sx * g(points, [0.045, -0.025, 0.05], [0.018, 0.02, 0.02]), 0 * x,
             0.3 * g(points, [0.045, -0.025, 0.05], [0.018, 0.02, 0.02])),  # cheek fullness
        _vec(0 * x, 0 * x, g(points, [0.025, 0.03, 0.08], [0.025, 0.008, 0.015])),    # brow ridge
        _vec(sx * g(points, EYE_CENTER, [0.015, 0.015, 0.02]), 0 * x, 0 * x),        # eye spacing
        _vec(0 * x, 0 * x, g(points, [0, MOUTH_Y, MOUTH_Z], [0.02, 0.012, 0.01], False)),  # lips
        _vec(0 * x, 0 * x, g(points, [0, 0.0, 0.085], [0.008, 0.015, 0.02], False)),  # nose bridge
        _vec(0 * x, 0 * x, g(points, [0, 0.07, 0.07], [0.05, 0.03, 0.04])),          # forehead slope
        _vec(sx * g(points, [0.075, 0.0, -0.01], [0.015, 0.035, 0.025]), 0 * x, 0 * x),  # ears
        _vec(x * (1 - head), 0 * x, (z + 0.025) * (1 - head)),          # neck thickness
        _vec(0 * x, g(points, [0, -0.03, 0.1], [0.01, 0.008, 0.01], False), 0 * x),  # nose tip tilt
        _vec(sx * g(points, [0.045, 0.0, 0.05], [0.015, 0.012, 0.02]), 0 * x, 0 * x),  # cheekbones
    ]


def expression_fields(vertices: np.ndarray) -> list[np.ndarray]:
    """The 26 designed expression fields: ``V x 3`` -> list of ``V x 3``.

    19 designed ones (mouth open first), then left-side-only copies of 7 of them. The eyeballs
    are not excluded here: :func:`shapedirs` zeroes every expression field on them.
    """
    x, y, z = vertices.T
    g = _bump
    sx = np.tanh(x / 0.008)  # smooth sign: no tear at the midline
    front = sigmoid((z - 0.04) / 0.008)
    lowlip = mouth_split(vertices)                       # lower lip side of the mouth
    uplip = 1 - lowlip
    mouth = g(vertices, [0, MOUTH_Y, MOUTH_Z - 0.01], [0.03, 0.022, 0.03], False) * front
    chin = g(vertices, [0, -0.085, 0.06], [0.035, 0.03, 0.04], False) * front
    corner = g(vertices, [MOUTH_HALF_WIDTH, MOUTH_Y, MOUTH_Z - 0.01], [0.01, 0.01, 0.015]) * front
    cheek = g(vertices, [0.04, -0.02, 0.06], [0.015, 0.015, 0.02]) * front
    brow = g(vertices, [0.025, 0.03, 0.08], [0.02, 0.01, 0.02]) * front
    ibrow = g(vertices, [0.012, 0.028, 0.085], [0.01, 0.01, 0.02]) * front
    lid_up = g(vertices, EYE_CENTER + [0, 0.006, 0.01], [0.014, 0.006, 0.01]) * sigmoid((y - EYE_CENTER[1]) / 0.002)
    lid_lo = g(vertices, EYE_CENTER + [0, -0.006, 0.01], [0.014, 0.005, 0.01]) * sigmoid((EYE_CENTER[1] - y) / 0.002)
    wing = g(vertices, [0.014, -0.027, 0.09], [0.008, 0.008, 0.01]) * front
    left = sigmoid(x / 0.006)
    z0 = 0 * x
    E = [
        _vec(z0, -(lowlip * (mouth + chin)) + 0.25 * uplip * mouth, -0.3 * lowlip * (mouth + chin)),  # open
        _vec(0.5 * sx * corner, corner + 0.4 * cheek, -0.4 * corner + 0.3 * cheek),   # smile
        _vec(-40 * x * mouth, z0, mouth),                                               # pucker
        _vec(z0, brow, z0),                                                             # brows up
        _vec(-0.5 * sx * ibrow, -ibrow - 0.4 * brow, z0),                               # frown
        _vec(z0, -lid_up, 0.2 * lid_up),                                                # blink
        _vec(sx * cheek * 1.5, z0, 0.5 * cheek),                                        # cheek puff
        _vec(z0, -corner, z0),                                                          # corners down
        _vec(sx * corner, z0, -0.3 * corner),                                           # lip stretch
        _vec(z0, uplip * mouth, 0.3 * uplip * mouth),                                   # upper lip up
        _vec(z0, -lowlip * mouth, 0.2 * lowlip * mouth),                                # lower lip down
        _vec(z0, 0.6 * wing, z0),                                                       # nose wrinkle
        _vec(mouth + chin * 0.3, z0, z0),                                               # mouth left
        _vec(z0, lid_lo, z0),                                                           # squint
        _vec(z0, 0.6 * lid_up, z0),                                                     # eyes wide
        _vec(z0, -0.5 * uplip * mouth + 0.5 * lowlip * mouth, -0.3 * mouth),            # lip press
        _vec(z0, 0.6 * chin * lowlip, 0.3 * chin * lowlip),                             # chin raise
        _vec(z0, ibrow, z0),                                                            # inner brow up
        _vec(sx * wing, z0, z0),                                                        # nostril flare
    ]
    # one-sided versions (left side): after orthogonalisation these become antisymmetric pairs
    E += [e * left[:, None] for e in (E[1], E[5], E[3], E[6], E[7], E[13], E[4])]
    return E


def random_fields(points: np.ndarray, count: int, seed: int, length_scale: float,
                  symmetry: int) -> list[np.ndarray]:
    """``count`` smooth random fields (``N x 3`` each, for ``N x 3`` points), each of 12 random Fourier features.

    The features' frequencies are standard normal / ``length_scale`` (metres); ``seed`` makes
    them reproducible. ``symmetry``: +1 symmetric, -1 antisymmetric under the x-mirror (each
    field is averaged with its mirrored value at the mirrored points).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        W = rng.normal(size=(12, 3)) / length_scale
        ph = rng.uniform(0, 2 * np.pi, size=12)
        A = rng.normal(size=(12, 3)) / np.sqrt(12)
        f = np.cos(points @ W.T + ph) @ A
        fm = (np.cos((points * FLIP) @ W.T + ph) @ A) * FLIP
        out.append(0.5 * (f + symmetry * fm))
    return out


def orthonormal_basis(fields: list[np.ndarray]) -> np.ndarray:
    """Gram-Schmidt (QR) of K fields ``V x 3``, in order, as ``3V`` vectors -> ``V x 3 x K``, unit columns.

    Column k is field k less its projections on the earlier fields, normalised, with that sign
    kept. QR only takes linear combinations, so fields that move the eyeballs rigidly (as
    :func:`shapedirs` makes them) still do.
    """
    M = np.stack([f.reshape(-1) for f in fields], 1)
    Q, R = np.linalg.qr(M)
    Q = Q * np.sign(np.diag(R))[None, :]   # keep each designed direction's sign
    return Q.reshape(len(fields[0]), 3, -1)


def shapedirs(vertices: np.ndarray, part: np.ndarray) -> np.ndarray:
    """FLAME-style blend shapes ``V x 3 x 400``: 300 shape then 100 expression directions.

    ``vertices``: the template ``V x 3``; ``part``: ``V`` int (0 skin, 1 / 2 left / right eyeball).
    A shape column is one standard deviation, its norm strictly decreasing; an expression column
    moves its farthest vertex 9 mm for the first, decaying, and 0.3 mm for the last 50. The
    eyeballs move rigidly with shape and not at all with expression.
    """
    n_vertices = len(vertices)
    eye_l, eye_r = part == 1, part == 2
    centers = np.stack([EYE_CENTER, EYE_CENTER * FLIP])

    def with_rigid_eyes(fn: Callable[[np.ndarray], list[np.ndarray]]) -> list[np.ndarray]:
        """The fields ``fn(vertices)``, with each eyeball's vertices given the field at its centre."""
        fields = fn(vertices)
        at_c = fn(centers)
        for f, fc in zip(fields, at_c):
            f[eye_l], f[eye_r] = fc[0], fc[1]
        return fields

    # 18 designed + 82 symmetric random (first 100), then 100 antisymmetric + 100 symmetric
    sh = with_rigid_eyes(lambda P: shape_fields(P) + random_fields(P, 82, 1, 0.06, 1)
                         + random_fields(P, 100, 3, 0.04, -1) + random_fields(P, 100, 4, 0.03, 1))
    Qs = orthonormal_basis(sh)
    k = np.arange(300)
    # rms per-vertex displacement (m) of one std: 4.5 mm for the first, decaying; < 0.2 mm after 100
    rms = np.where(k < 100, 0.0045 * np.exp(-k / 28.0), 0.00012 * np.exp(-(k - 100) / 120.0))
    # a unit-norm *local* field would have a huge peak, so also cap the peak vertex motion
    # (10 mm for the first, decaying), then force strictly decreasing column norms
    peak = 0.010 * np.exp(-k / 40.0)
    norm = np.minimum(rms * np.sqrt(n_vertices), peak / np.abs(Qs).max(axis=(0, 1)))
    for i in range(1, 300):
        norm[i] = min(norm[i], 0.995 * norm[i - 1])
    S = Qs * norm[None, None, :]

    face_w = sigmoid((vertices[:, 2] - 0.03) / 0.01) * sigmoid((vertices[:, 1] + 0.11) / 0.01)
    ex = expression_fields(vertices)
    ex += [r * face_w[:, None] for r in random_fields(vertices, 50 - len(ex), 5, 0.02, 1)]
    ex += [r * face_w[:, None] for r in random_fields(vertices, 50, 6, 0.015, 1)]
    for e in ex:
        e[part > 0] = 0.0
    Qe = orthonormal_basis(ex)
    # scale so that the largest vertex motion is ~9 mm for the first expression, decaying
    k = np.arange(100)
    peak = np.where(k < 50, 0.009 * np.exp(-k / 40.0), 0.0003)
    Qe = Qe / np.abs(Qe).max(axis=(0, 1))[None, None, :] * peak[None, None, :]
    return np.concatenate([S, Qe], axis=2)
