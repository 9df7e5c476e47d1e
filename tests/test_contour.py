"""The geometric builder of the dynamic contour table, on the default head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib import contour
from ringnet_lib.default_head import contour_table, default_model
from ringnet_lib.default_head.build import build_default_head
from ringnet_lib.landmarks import bin_of_yaw, yaw_of_bin
from ringnet_lib.mesh import distance_to_segments
from ringnet_lib.model_io import load_dynamic_embedding
from ringnet_lib.params import MAX_YAW_DEG, N_YAW_BINS

# The builder puts points on the smooth rim (zero of the interpolated vertex normals); the
# test measures against the polygonal outline (edges between front- and back-facing
# triangles), as a renderer draws it. The two differ by a fraction of a triangle (median
# edge 6.8 mm on the default head): 2 mm is ~0.3 edge, ~1.2 px in a 224 px crop of the head.
SILHOUETTE_TOLERANCE_M = 0.002


@pytest.fixture(scope="module")
def head():
    model, static = build_default_head()
    faces = np.asarray(model["f"], dtype=np.int64)
    return model["v_template"], faces, static, contour.skin_face_mask(model["weights"], faces)


@pytest.fixture(scope="module")
def table_points(head):
    vertices, faces, _, _ = head
    table = contour_table.shipped_table()
    return np.einsum("ylk,ylkc->ylc", table["lmk_b_coords"], vertices[faces[table["lmk_face_idx"]]])


def test_shipped_table_is_reproduced(head):
    table = load_dynamic_embedding(contour_table.TABLE_ASSET, n_faces=len(head[1]))
    rebuilt = contour_table.build_table()
    assert np.array_equal(rebuilt["lmk_face_idx"], table["lmk_face_idx"])
    assert np.allclose(rebuilt["lmk_b_coords"], table["lmk_b_coords"], atol=1e-12)
    assert np.allclose(table["lmk_b_coords"].sum(-1), 1) and (table["lmk_b_coords"] >= -1e-12).all()


def test_default_model_carries_the_shipped_table():
    """FLAME() / Decoder() read the table the embedded head carries: it is the shipped file."""
    table = load_dynamic_embedding(contour_table.TABLE_ASSET)
    carried = default_model().dynamic_embedding
    assert np.array_equal(carried["lmk_face_idx"], table["lmk_face_idx"])
    assert np.array_equal(carried["lmk_b_coords"], table["lmk_b_coords"])


@pytest.mark.parametrize("yaw", range(-MAX_YAW_DEG, MAX_YAW_DEG + 1))
def test_contour_on_silhouette_on_the_side_turning_away(head, table_points, yaw):
    """The half turning away (and the chin) lies on the projected outline at its yaw.

    The half turning towards the camera has no outline along the jaw (the jaw meets the neck in
    a concave crease): it is on the jaw line instead, tested below.
    """
    vertices, faces, _, mask = head
    rotation = contour.yaw_rotation(yaw)
    segments = contour.silhouette_segments_2d(vertices @ rotation.T, faces, mask)
    row = int(bin_of_yaw(torch.tensor([float(yaw)]))[0])
    points = table_points[row] @ rotation.T
    away = slice(0, 9) if yaw >= 0 else slice(8, 17)  # positive yaw turns the subject's right half away
    distance = distance_to_segments(points[away, :2], segments)
    assert distance.max() < SILHOUETTE_TOLERANCE_M, (yaw, distance)


def test_table_is_left_right_symmetric(table_points):
    mirror = np.array([-1.0, 1.0, 1.0])
    for row in range(N_YAW_BINS):
        yaw = yaw_of_bin(row)
        other_row = -yaw if yaw <= 0 else MAX_YAW_DEG + yaw  # the row of -yaw
        assert yaw_of_bin(other_row) == -yaw
        assert np.allclose(table_points[row] * mirror, table_points[other_row][::-1], atol=1e-9)


def test_contour_moves_monotonically_towards_the_face(table_points):
    """As yaw grows the subject's right half (iBUG 1..8) turns away: its points slide forward (+z).

    For yaw < 0 that half faces the camera and sits on the fixed jaw line, which lies in front
    of the yaw-0 outline (that outline runs over the neck at iBUG 6): the step from yaw -1 to 0
    moves back by design and is left out. The jaw line itself does not move with yaw.
    """
    rows = [bin_of_yaw(torch.tensor([float(y)])).item() for y in range(-MAX_YAW_DEG, MAX_YAW_DEG + 1)]
    depth = table_points[rows][:, :8, 2]  # 79 yaws x 8 points, template z
    step = np.diff(depth, axis=0)  # step i: from yaw i - 39 to i - 38
    # Rim crossings jitter by up to ~3 mm (measured 2.8) where a ray meets the rim at a grazing angle.
    assert (np.delete(step, MAX_YAW_DEG - 1, axis=0) > -0.003).all()
    assert (step[:MAX_YAW_DEG - 1] == 0).all()  # yaw -39..-1: the same jaw-line points
    assert (depth[-1] - depth[MAX_YAW_DEG] > 0.0).all()


def test_mirror_point_round_trip(head):
    vertices, faces, static, _ = head
    lookup = contour.face_lookup(faces)
    mirror = static["mirror_vertex_index"]
    face, bary = 123, np.array([0.2, 0.3, 0.5])
    other = contour.mirror_surface_point(face, bary, faces, mirror, lookup)
    back = contour.mirror_surface_point(*other, faces, mirror, lookup)
    assert back[0] == face and np.allclose(back[1], bary)
    point, mirrored = bary @ vertices[faces[face]], other[1] @ vertices[faces[other[0]]]
    assert np.allclose(point * [-1, 1, 1], mirrored)
    assert np.array_equal(contour.mirror_map_from_vertices(vertices), mirror)


# --- The jaw line on the side turning towards the camera -------------------------------------
# A chin point 2 mm above its neighbours is a rim crossing jittering by ~0.3 triangle edge
# (as SILHOUETTE_TOLERANCE_M); a point on the neck under the jaw would be centimetres lower.
CHIN_MARGIN_M = 0.002
# The ramus (iBUG 1..3 of the near side) runs almost vertically in the image: x may step back
# a little there. 3 mm is half a median triangle edge; a zig-zag onto the neck is centimetres.
RAMUS_BACKSTEP_M = 0.003
# A jaw line bends most at the jaw angle; 45 deg between consecutive segments is a smooth curve
# of 8 points, a step down onto the neck and back turns by ~90 deg or more.
MAX_TURN_DEG = 45.0


def _image_points(table_points, yaw):
    """``17 x 3`` contour of the ``yaw`` row, rotated to the camera frame (x, y = image)."""
    row = int(bin_of_yaw(torch.tensor([float(yaw)]))[0])
    return table_points[row] @ contour.yaw_rotation(yaw).T


def _near_half(points, yaw):
    """The near half from iBUG 1 (or 17) to the chin: positive yaw turns the left half (iBUG 10..17) towards us."""
    return points[:9] if yaw < 0 else points[8:][::-1]


def _proper_crossing(p, q, r, s) -> bool:
    """True when 2D segments pq and rs cross at a point inside both."""
    def side(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


@pytest.mark.parametrize("yaw", range(-MAX_YAW_DEG, MAX_YAW_DEG + 1))
def test_near_side_follows_the_jaw_line_in_order(table_points, yaw):
    """The 17 points form a simple polyline; on a turned head the near half runs in order down to the chin.

    A detector's near-side iBUG 1..9 go from below the ear along the mandible's lower edge to
    the chin: in the image y goes down at every step, and x moves towards the chin, except
    along the ramus (iBUG 1..3), which runs almost vertically: there a step may go back by up
    to RAMUS_BACKSTEP_M (measured: 1.9 mm). The bend between consecutive segments stays below
    MAX_TURN_DEG (measured: 33 deg, at the jaw angle). The table before the jaw line zig-zagged
    onto the neck and back: x steps back by up to 34 mm, turns up to 126 deg.
    Yaw 0 has no near side (both halves are outlines, which widen below iBUG 1): only the
    first check applies.
    """
    points = _image_points(table_points, yaw)[:, :2]
    for i in range(16):
        for j in range(i + 2, 16):
            assert not _proper_crossing(points[i], points[i + 1], points[j], points[j + 1]), (yaw, i + 1, j + 1)
    if yaw == 0:
        return
    near = _near_half(points, yaw)
    towards_chin = np.sign(near[-1, 0] - near[0, 0])
    assert (towards_chin * np.diff(near[:, 0]) > -RAMUS_BACKSTEP_M).all(), (yaw, near[:, 0])
    assert (np.diff(near[:, 1]) < 0).all(), (yaw, near[:, 1])
    step = np.diff(near, axis=0)
    heading = np.arctan2(step[:, 1], step[:, 0])
    turn = np.degrees(np.abs(np.angle(np.exp(1j * np.diff(heading)))))
    assert turn.max() < MAX_TURN_DEG, (yaw, turn)


@pytest.mark.parametrize("yaw", range(-MAX_YAW_DEG, MAX_YAW_DEG + 1))
def test_no_contour_point_on_the_neck(table_points, yaw):
    """No point lies below the chin, and the near half runs forward from the ear to the chin.

    Height: no point is lower in the image than the chin (iBUG 9) by more than CHIN_MARGIN_M.
    Depth: the neck lies behind the jaw, so a near-side point on it sits behind its
    neighbours. From iBUG 1 to 8 the jaw line only moves forward (template +z; the chin, on
    the chin's underside, may sit a few mm behind iBUG 8). The table before the jaw line put
    iBUG 6 21 mm behind the ear plane, between iBUG 5 and 7 at +12 and +54 mm (the height check
    alone does not catch that: its neck point is 17 mm above the chin). Yaw 0 is built from
    the outline (a far side) and is exempt from the depth check.
    """
    points = _image_points(table_points, yaw)
    assert (points[:, 1] > points[8, 1] - CHIN_MARGIN_M).all(), (yaw, points[:, 1] - points[8, 1])
    if yaw == 0:
        return
    row = int(bin_of_yaw(torch.tensor([float(yaw)]))[0])
    depth = _near_half(table_points[row], yaw)[:8, 2]
    assert (np.diff(depth) > 0).all(), (yaw, depth)
