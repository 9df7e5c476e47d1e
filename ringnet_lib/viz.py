"""Plotting helpers for meshes (matplotlib; plotly helpers may be added later)."""
import numpy as np
import matplotlib.pyplot as plt
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

# Named camera directions as (elev, azim) in the head frame (+y up, +z out of the face).
VIEWS = {"front": (0.0, 0.0), "side": (0.0, 90.0), "three_quarter": (10.0, 35.0)}


def _to_numpy(a):
    """Accept numpy arrays or torch tensors (detached, on cpu)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _camera(view):
    """Unit vector from the head towards the camera, for a view name or (elev, azim) in degrees.

    azim rotates about +y starting at +z (front); positive azim goes towards the subject's left.
    """
    elev, azim = VIEWS[view] if isinstance(view, str) else view
    e, a = np.radians(elev), np.radians(azim)
    return np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])


def plot_mesh(ax, vertices, faces, view="front", color=(0.85, 0.72, 0.62), landmarks=None,
              light=None):
    """Draw a Lambert-shaded mesh on a matplotlib Axes (2-D, or 3-D via Poly3DCollection).

    vertices: V x 3, faces: F x 3, landmarks: optional L x 3 points (drawn in red when visible).
    On a 2-D Axes we project orthographically ourselves, cull back faces and paint the rest
    back-to-front, which gives correct occlusion; a 3-D Axes gets the same culled faces.
    """
    v, f = _to_numpy(vertices).astype(float), _to_numpy(faces).astype(np.int64)
    c = _camera(view)
    up0 = np.array([0.0, 1.0, 0.0])
    right = np.cross(up0, c)
    if np.linalg.norm(right) < 1e-6:  # looking straight down / up
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(c, right)
    P = np.stack([v @ right, v @ up], 1)  # screen coordinates
    depth = v @ c                          # larger = closer to the camera
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
    keep = n @ c > 0                       # back-face culling (outward normals)
    L = c + 0.6 * up + 0.4 * right if light is None else np.asarray(light, float)
    L = L / np.linalg.norm(L)
    shade = 0.25 + 0.75 * np.clip(n @ L, 0, 1)
    order = np.argsort(depth[f].mean(1)[keep])  # painter's algorithm: far first
    fk = f[keep][order]
    rgb = np.clip(np.asarray(color, float)[None, :3] * shade[keep][order][:, None], 0, 1)
    if hasattr(ax, "get_proj"):  # a 3-D Axes: use Poly3DCollection, mplot3d is z-up
        M = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # (x, -z, y): proper rotation
        w = v @ M.T
        ax.add_collection3d(Poly3DCollection(w[fk], facecolors=rgb, edgecolors=rgb, linewidths=0.2))
        elev, azim = VIEWS[view] if isinstance(view, str) else view
        ax.view_init(elev=elev, azim=azim - 90.0)
        ax.set_proj_type("ortho")
        mid, half = (w.min(0) + w.max(0)) / 2, (w.max(0) - w.min(0)).max() / 2
        for setlim, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), mid):
            setlim(m - half, m + half)
        if landmarks is not None:
            lm = _to_numpy(landmarks).astype(float) @ M.T
            ax.scatter(lm[:, 0], lm[:, 1], lm[:, 2], s=8, c="red")
        ax.set_box_aspect((1, 1, 1))
        ax.axis("off")
        return ax
    from matplotlib.collections import PolyCollection
    ax.add_collection(PolyCollection(P[fk], facecolors=rgb, edgecolors=rgb, linewidths=0.2))
    if landmarks is not None:
        lm = _to_numpy(landmarks).astype(float)
        ax.scatter(lm @ right, lm @ up, s=8, c="red", zorder=3)
    lo, hi = P.min(0), P.max(0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def render_views(vertices, faces, views=("front", "three_quarter", "side"), titles=None,
                 landmarks=None, color=(0.85, 0.72, 0.62), size=3.5):
    """One row of plot_mesh panels, one per view. Returns the matplotlib Figure."""
    fig, axes = plt.subplots(1, len(views), figsize=(size * len(views), size * 1.1))
    axes = np.atleast_1d(axes)
    for i, (ax, view) in enumerate(zip(axes, views)):
        plot_mesh(ax, vertices, faces, view=view, color=color, landmarks=landmarks)
        if titles is not None:
            ax.set_title(titles[i])
    fig.tight_layout()
    return fig
