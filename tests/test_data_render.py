"""The software rasteriser against coverage and depth computed another way, and the flip permutation."""
from __future__ import annotations

import numpy as np
import torch

from ringnet_lib.data import render
from ringnet_lib.data.augment import IBUG68_FLIP, flip_landmarks, flip_sample


def inside_triangle(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Same-sign test of the three cross products (a different formula from the renderer's planes)."""
    signs = []
    for k in range(3):
        a, b = tri[k], tri[(k + 1) % 3]
        d, e = b - a, points - a
        signs.append(d[0] * e[:, 1] - d[1] * e[:, 0])
    signs = np.stack(signs)
    return (signs >= 0).all(0) | (signs <= 0).all(0)


def test_coverage_matches_point_in_triangle_at_pixel_centres():
    size = 40
    tri = np.array([[3.3, 5.1], [35.7, 12.2], [14.9, 37.6]])
    screen = torch.tensor(np.c_[tri, np.zeros(3)], dtype=torch.float64)[None]
    fragments = render.rasterize(screen, torch.tensor([[0, 1, 2]]), size)
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    centres = np.stack([cols + 0.5, rows + 0.5], axis=-1).reshape(-1, 2)
    expected = inside_triangle(centres, tri).reshape(size, size)
    np.testing.assert_array_equal(fragments.face_index[0].numpy() == 0, expected)
    # Barycentrics reproduce the pixel centre.
    bary = fragments.bary[0].numpy()[expected]
    np.testing.assert_allclose(bary @ tri, centres.reshape(size, size, 2)[expected], atol=1e-9)


def test_nearest_triangle_wins_and_partly_outside_triangles_are_clipped():
    size = 16
    # Two triangles over the same area; the second is nearer (depth larger = towards the camera),
    # and a third sticks out of the image.
    corners = [[-4, -4, 0.0], [20, -4, 0.0], [-4, 20, 0.0], [-4, -4, 1.0], [20, -4, 1.0], [-4, 20, 1.0],
               [8, 8, 5.0], [30, 8, 5.0], [8, 30, 5.0]]
    screen = torch.tensor(corners, dtype=torch.float32)[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    fragments = render.rasterize(screen, faces, size)
    index = fragments.face_index[0]
    assert (index[:8, :8] == 1).all()  # far triangle hidden everywhere
    assert (index[9:, 9:] == 2).all() and not (index == 0).any()


def test_projection_to_pixels_follows_camera_convention():
    vertices = torch.tensor([[[0.0, 0.0, 0.1], [0.05, 0.05, 0.0]]])
    camera = torch.tensor([[10.0, 0.0, 0.0]])
    screen = render.project_to_pixels(vertices, camera, 100)
    # x_n = s (X + t): (0, 0) -> image centre; (0.05, 0.05) -> (0.5, 0.5) -> u = 75, v = 25 (+y up).
    torch.testing.assert_close(screen[0], torch.tensor([[50.0, 50.0, 1.0], [75.0, 25.0, 0.0]]))


def test_flip_permutation_is_an_involution_that_swaps_sides():
    perm = np.array(IBUG68_FLIP)
    np.testing.assert_array_equal(perm[perm], np.arange(68))
    assert perm[0] == 16 and perm[36] == 45 and perm[48] == 54 and perm[30] == 30 and perm[66] == 66
    assert perm[39] == 42 and perm[31] == 35 and perm[17] == 26


def test_flip_moves_landmarks_with_the_pixels():
    size = 20
    rng = np.random.default_rng(0)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    pixels = rng.integers(0, size, size=(68, 2))
    normalised = torch.tensor(np.stack([2 * (pixels[:, 0] + 0.5) / size - 1, 1 - 2 * (pixels[:, 1] + 0.5) / size], 1),
                              dtype=torch.float32)
    confidence = torch.arange(68, dtype=torch.float32)
    flipped_image, flipped, flipped_conf = flip_sample(image, normalised, confidence)
    for k in range(68):
        u = ((flipped[k, 0] + 1) * size / 2).floor().long()
        v = ((1 - flipped[k, 1]) * size / 2).floor().long()
        source = IBUG68_FLIP[k]
        torch.testing.assert_close(flipped_image[:, v, u], image[:, pixels[source, 1], pixels[source, 0]])
        assert flipped_conf[k] == source
    torch.testing.assert_close(flip_landmarks(flip_landmarks(normalised)), normalised)
