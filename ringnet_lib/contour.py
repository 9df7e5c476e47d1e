"""A geometric builder of FLAME's dynamic (yaw-dependent) jaw-contour table.

2D landmark detectors put iBUG points 1..17 on the *outline* of the jaw as seen in the
image. When the head turns, the outline moves over the surface: on the side turning away
it slides towards the front of the face, on the other side it slides back. FLAME therefore
stores, for each integer yaw in -39..+39 degrees, 17 surface points (triangle + barycentric
coordinates) in ``flame_dynamic_embedding.npy`` (layout: see :mod:`ringnet_lib.landmarks`).

How we build it (no renderer, no detector), for each yaw bin:

1. Rotate the template by the bin's yaw (the same rotation :func:`~ringnet_lib.landmarks.ibug68`
   reads back from the pose), camera looking along -z (weak perspective, :mod:`ringnet_lib.camera`).
2. The **rim** (occluding contour) is where the smooth surface turns away from the camera:
   the zero set of the z component of the interpolated vertex normals. In each triangle whose
   corners' normals change sign, it is one straight segment (Hertzmann & Zorin 2000).
3. For iBUG point k, cast a 2D ray in the image from an inner point of the lower face outwards
   (a fan, like the frontal contour of the head) and take the first rim crossing that is not
   hidden behind nearer surface (the chin hides the chin-neck crease, for instance).
   That crossing is a point of a mesh triangle: its face index and barycentric coordinates.
4. Steps 1-3 run for yaw 0..39, where the subject's right half (iBUG 1..8, at -x) turns
   *away* from the camera, and for the chin (iBUG 9).
5. The half turning *towards* the camera has no outline along the jaw: there the jaw meets
   the neck in a concave crease, and the silhouette below the jaw angle is the neck. What a
   detector marks there is the visible jaw line, the lower edge of the mandible from below
   the ear to the chin. Seen from slightly above (the camera pitched down) that edge IS an
   occluding contour: the jaw hides its own underside. So steps 1-3 run once more, from a
   view turned towards the near side and pitched down (``NEAR_VIEW_*``), and the near half
   keeps those surface points at every yaw < 0: a smooth jaw line, in order, not on the neck.
6. Everything else is *transferred* by the mirror symmetry x -> -x, as RingNet does: point
   18-k at yaw y is the mirror image of point k at yaw -y. The table is thus exactly symmetric.

Limits: the fan is seeded by the head's frontal jaw points (``frontal_contour_*`` of the
default head), so the builder needs them (a real FLAME ships its own table instead). Yaw 0
is built as a far side (the plain silhouette, which on the default head runs over the neck
below the jaw angle: iBUG 6 there, and on the far side up to yaw 4), so the near half jumps
between yaw 0 and -1 (up to 7 cm in depth: iBUG 1 from the cheek to the front of the ear,
iBUG 6 from the neck to the jaw). On the default head the build takes about 10 s, so
:mod:`ringnet_lib.default_head.contour_table` ships its result.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .landmarks import head_rotation, yaw_of_bin
from .mesh import face_edges, vertex_normals
from .params import MAX_YAW_DEG, N_CONTOUR, N_YAW_BINS

# Inner point of the lower face (metres, template frame) the fans of rays start from.
FAN_CENTER = np.array([0.0, -0.045, 0.08])
FAN_PULL = 0.35  # rays start 35% of the way from the frontal contour point towards FAN_CENTER
OCCLUSION_EPS = 0.005  # a rim point is hidden if surface lies > 5 mm in front of it
OCCLUSION_RADIUS = 0.015  # ... and more than 15 mm away from it
# The view whose outline gives the near-side jaw line: turned 15 deg towards the near (right)
# side and pitched 30 deg down. Less pitch and the rays below the jaw angle miss the jaw edge
# and run onto the neck's outline (measured at 20 deg); more turn (20 deg) does the same.
NEAR_VIEW_YAW_DEG, NEAR_VIEW_PITCH_DEG = -15.0, 30.0
# Fan positions (fractional ray index) of the near-side iBUG 1..8, evenly spaced. From the
# near view the iBUG 1 ray meets the jaw line at mouth height (24 mm below the yaw-0 iBUG 1);
# starting one fan step higher reaches the front of the ear, where detectors put iBUG 1.
NEAR_RAYS = np.linspace(-1.0, 8.0, 9)[:-1]  # the 9th (8.0) would be the chin: it is the far side's


def yaw_rotation(yaw_deg: float) -> np.ndarray:
    """3 x 3 rotation of a head turned by ``yaw_deg`` (:func:`ringnet_lib.landmarks.head_rotation`'s sign:
    positive turns the face towards -x, the subject's right)."""
    return Rotation.from_rotvec(head_rotation([yaw_deg])[0]).as_matrix()


def pitch_rotation(pitch_deg: float) -> np.ndarray:
    """3 x 3 rotation about +x that tips the face (+z) downwards: the camera sees it from above."""
    return Rotation.from_euler("X", pitch_deg, degrees=True).as_matrix()


def vertex_normals_float64(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``V x 3`` unit normals of a numpy mesh: :func:`ringnet_lib.mesh.vertex_normals` in float64.

    Float64 as the shipped table was built (its rebuild test compares barycentrics at 1e-12).
    """
    mesh = torch.tensor(np.asarray(vertices, dtype=np.float64))[None]
    return vertex_normals(mesh, torch.tensor(np.asarray(faces, dtype=np.int64)))[0].numpy()


def rim_segments(normal_z: np.ndarray, faces: np.ndarray, face_mask: np.ndarray | None = None):
    """Zero set of the interpolated normal z inside each triangle.

    Args:
        normal_z: ``V`` z component of the vertex normals in the camera frame.
        faces: ``F x 3``.
        face_mask: optional ``F`` bool, faces allowed to carry the rim.
    Returns:
        (face ``S``, bary0 ``S x 3``, bary1 ``S x 3``): the segment's two ends as barycentric
        coordinates of its face.
    """
    n = normal_z[faces]  # F x 3
    positive = n > 0
    crossing = positive.any(1) & ~positive.all(1)
    if face_mask is not None:
        crossing &= face_mask
    face_ids = np.nonzero(crossing)[0]
    ends = [[], []]
    for face in face_ids:
        found = 0
        for i, j in ((0, 1), (1, 2), (2, 0)):
            if positive[face, i] != positive[face, j] and found < 2:
                s = n[face, i] / (n[face, i] - n[face, j])  # linear zero crossing on edge i-j
                bary = np.zeros(3)
                bary[i], bary[j] = 1.0 - s, s
                ends[found].append(bary)
                found += 1
    return face_ids, np.array(ends[0]).reshape(-1, 3), np.array(ends[1]).reshape(-1, 3)


def _cross2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _visible(point: np.ndarray, vertices: np.ndarray, faces: np.ndarray, skip: np.ndarray) -> bool:
    """True when no triangle (except ``skip`` and close ones) covers ``point`` in the image and lies in front."""
    tri = vertices[faces]  # F x 3 x 3
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    area = _cross2(b - a, c - a)
    ok = np.abs(area) > 1e-14
    area = np.where(ok, area, 1.0)
    w1 = _cross2(point[:2] - a, c - a) / area
    w2 = _cross2(b - a, point[:2] - a) / area
    w0 = 1.0 - w1 - w2
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    inside[skip] = False
    # Near a rim the polygonal surface is seen at a grazing angle: a face a few mm away can
    # cover the point in the image while lying well in front of it. Only surface farther
    # than OCCLUSION_RADIUS in 3D (another part of the head) counts as an occluder.
    inside &= np.linalg.norm(tri.mean(1) - point, axis=1) > OCCLUSION_RADIUS
    depth = w0 * tri[:, 0, 2] + w1 * tri[:, 1, 2] + w2 * tri[:, 2, 2]
    return not np.any(inside & (depth > point[2] + OCCLUSION_EPS))


def first_visible_rim_crossing(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, start: np.ndarray,
                               direction: np.ndarray, face_mask: np.ndarray | None = None):
    """Where a 2D ray first crosses the visible rim.

    Args:
        vertices: ``V x 3`` in the camera frame (looking along -z).
        faces: ``F x 3``; normals: ``V x 3`` vertex normals in the camera frame.
        start, direction: 2D ray in the image plane (x, y).
        face_mask: ``F`` bool, faces the contour may lie on.
    Returns:
        (face index, barycentric ``3``), or None when the ray crosses no visible rim.
    """
    face_ids, bary0, bary1 = rim_segments(normals[:, 2], faces, face_mask)
    corners = vertices[faces[face_ids]]  # S x 3 x 3
    p0 = np.einsum("sk,skc->sc", bary0, corners)
    p1 = np.einsum("sk,skc->sc", bary1, corners)
    seg = p1[:, :2] - p0[:, :2]
    denom = _cross2(direction[None], seg)
    denom = np.where(np.abs(denom) < 1e-14, np.nan, denom)
    t = _cross2(p0[:, :2] - start, seg) / denom  # distance along the ray
    s = _cross2(p0[:, :2] - start, direction[None]) / denom  # position along the segment
    hit = (s >= 0) & (s <= 1) & (t > 0)
    for index in np.nonzero(hit)[0][np.argsort(t[hit])]:
        point = p0[index] + s[index] * (p1[index] - p0[index])
        # Skip the triangles around the rim face: near-tangent neighbours may stick out by a hair.
        ring = np.isin(faces, faces[face_ids[index]]).any(1)
        if _visible(point, vertices, faces, ring):
            bary = (1 - s[index]) * bary0[index] + s[index] * bary1[index]
            return int(face_ids[index]), bary
    return None


def face_lookup(faces: np.ndarray) -> dict:
    """Sorted vertex triple -> face index."""
    return {tuple(sorted(f)): i for i, f in enumerate(faces.tolist())}


def mirror_surface_point(face: int, bary: np.ndarray, faces: np.ndarray, mirror_vertex_index: np.ndarray,
                         lookup: dict) -> tuple[int, np.ndarray]:
    """The mirror image (x -> -x) of a surface point, as a point of the mirrored triangle."""
    mirrored = mirror_vertex_index[faces[face]]
    target = lookup.get(tuple(sorted(mirrored.tolist())))
    if target is None:
        raise ValueError(f"face {face} has no mirror-image face: is the mesh left-right symmetric?")
    order = [list(faces[target]).index(v) for v in mirrored]  # corner k of face -> corner order[k]
    new_bary = np.zeros(3)
    new_bary[order] = bary
    return target, new_bary


def mirror_map_from_vertices(vertices: np.ndarray, tolerance: float = 1e-4) -> np.ndarray:
    """``V`` index of each vertex's mirror image (x -> -x), for meshes that do not ship one."""
    distance, index = cKDTree(vertices).query(vertices * np.array([-1.0, 1.0, 1.0]))
    if distance.max() > tolerance:
        raise ValueError(f"mesh is not left-right symmetric (a vertex's mirror is {distance.max():.2e} away)")
    return index


def fan_rays(frontal_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start points (``17 x 3``, template frame) and 2D directions (``17 x 2``) of the contour rays."""
    starts = frontal_points + FAN_PULL * (FAN_CENTER - frontal_points)
    directions = frontal_points[:, :2] - FAN_CENTER[:2]
    directions[N_CONTOUR // 2] = (0.0, -1.0)  # the chin: straight down
    return starts, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def fan_ray_at(starts: np.ndarray, directions: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray at fractional fan index ``t``: linear between neighbouring rays, extrapolated outside 0..16."""
    i = int(np.clip(np.floor(t), 0, len(starts) - 2))
    f = t - i
    start = (1 - f) * starts[i] + f * starts[i + 1]
    direction = (1 - f) * directions[i] + f * directions[i + 1]
    return start, direction / np.linalg.norm(direction)


def contour_hits(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, rotation: np.ndarray,
                 rays, face_mask: np.ndarray | None, label: str) -> list:
    """First visible rim crossing of each (start ``3`` template frame, direction ``2``) ray, seen after ``rotation``."""
    rotated, rotated_normals = vertices @ rotation.T, normals @ rotation.T
    hits = []
    for k, (start, direction) in enumerate(rays):
        hit = first_visible_rim_crossing(rotated, faces, rotated_normals, (rotation @ start)[:2], direction,
                                         face_mask)
        if hit is None:
            raise RuntimeError(f"{label}: contour ray {k + 1} crosses no visible rim; "
                               "is the frontal contour on the lower face?")
        hits.append(hit)
    return hits


def skin_face_mask(weights: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``F`` bool: faces not on the eyeballs (FLAME joints 3, 4), where the jaw contour cannot be."""
    eye = weights[:, 3:5].sum(1) > 0.5
    return ~eye[faces].any(1)


def build_dynamic_embedding(vertices: np.ndarray, faces: np.ndarray, frontal_face_idx: np.ndarray,
                            frontal_b_coords: np.ndarray, mirror_vertex_index: np.ndarray | None = None,
                            face_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The 79 x 17 contour table of a left-right symmetric template.

    Args:
        vertices: ``V x 3`` template; faces: ``F x 3``.
        frontal_face_idx, frontal_b_coords: ``17``, ``17 x 3``: iBUG 1..17 on the frontal face;
            they only seed the fan of rays (their order and rough place along the jaw).
        mirror_vertex_index: ``V``; computed from the vertices when omitted.
        face_mask: ``F`` bool, faces the contour may lie on (e.g. :func:`skin_face_mask`).
    Returns:
        dict ``lmk_face_idx`` ``79 x 17`` int64, ``lmk_b_coords`` ``79 x 17 x 3`` (FLAME's layout).
    """
    faces = np.asarray(faces, dtype=np.int64)
    if mirror_vertex_index is None:
        mirror_vertex_index = mirror_map_from_vertices(vertices)
    frontal = np.einsum("lk,lkc->lc", frontal_b_coords, vertices[faces[frontal_face_idx]])
    starts, directions = fan_rays(frontal)
    normals = vertex_normals_float64(vertices, faces)
    lookup = face_lookup(faces)
    half, chin = N_CONTOUR // 2, N_CONTOUR // 2
    right = {}  # (yaw, k) -> (face, bary), k in 0..8 (right half and chin), yaw in 0..39: the right half turns away
    for yaw in range(0, MAX_YAW_DEG + 1):
        hits = contour_hits(vertices, faces, normals, yaw_rotation(yaw), zip(starts[:half + 1], directions),
                            face_mask, f"yaw {yaw}")
        right.update({(yaw, k): hit for k, hit in enumerate(hits)})
    # yaw < 0: the right half turns towards the camera and sits on the jaw line (step 5).
    near_view = pitch_rotation(NEAR_VIEW_PITCH_DEG) @ yaw_rotation(NEAR_VIEW_YAW_DEG)
    near = contour_hits(vertices, faces, normals, near_view, [fan_ray_at(starts, directions, t) for t in NEAR_RAYS],
                        face_mask, "near-side jaw line")
    for yaw in range(-MAX_YAW_DEG, 0):
        right.update({(yaw, k): near[k] for k in range(half)})
    face_idx = np.zeros((N_YAW_BINS, N_CONTOUR), dtype=np.int64)
    b_coords = np.zeros((N_YAW_BINS, N_CONTOUR, 3))
    for row in range(N_YAW_BINS):
        yaw = yaw_of_bin(row)
        for k in range(N_CONTOUR):
            if k < half or (k == chin and yaw >= 0):
                face, bary = right[yaw, k]
            else:  # transferred: point k at yaw y = mirror of point 16-k at yaw -y
                face, bary = mirror_surface_point(*right[-yaw, N_CONTOUR - 1 - k], faces,
                                                  mirror_vertex_index, lookup)
            face_idx[row, k], b_coords[row, k] = face, bary
    return {"lmk_face_idx": face_idx, "lmk_b_coords": b_coords}


def silhouette_segments_2d(vertices: np.ndarray, faces: np.ndarray, face_mask: np.ndarray | None = None) -> np.ndarray:
    """Projected polygonal rim: edges between a front- and a back-facing triangle.

    This is the outline of the mesh as a renderer would draw it (face normals, not the
    smooth vertex-normal rim the builder uses), so tests can check the builder against it.

    Args:
        vertices: ``V x 3`` camera frame; faces ``F x 3``; face_mask: ``F`` bool.
    Returns:
        ``E x 2 x 2`` segments in the image plane.
    """
    tri = vertices[faces]
    front = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0
    key = face_edges(faces)
    owner = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, owner = key[order], owner[order]
    same = np.all(key[1:] == key[:-1], axis=1)  # consecutive rows = the two faces of one edge
    first, second = owner[:-1][same], owner[1:][same]
    rim = front[first] != front[second]
    if face_mask is not None:
        rim &= face_mask[first] & face_mask[second]
    return vertices[key[:-1][same][rim]][..., :2]
