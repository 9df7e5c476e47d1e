"""Weak-perspective camera and pixel conventions (see ringnet_lib/camera.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib.camera import (camera_looking_at, fit_weak_perspective, normalized_to_pixels,
                                pixels_to_normalized, project_weak_perspective)


def test_round_trip_pixels_normalized():
    torch.manual_seed(0)
    points = torch.rand(4, 10, 2, dtype=torch.float64) * 2 - 1
    pixels = normalized_to_pixels(points, 224)
    assert torch.allclose(pixels_to_normalized(pixels, 224), points, atol=1e-12)
    back = normalized_to_pixels(pixels_to_normalized(pixels, 224), 224)
    assert torch.allclose(back, pixels, atol=1e-9)


def test_corners_and_axes():
    corners = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]])
    pixels = normalized_to_pixels(corners, 100)
    # (-1, +1) is the top-left corner of the crop, (+1, -1) the bottom-right, (0, 0) its centre.
    assert torch.allclose(pixels, torch.tensor([[0.0, 0.0], [100.0, 100.0], [50.0, 50.0]]))


def test_projection_formula():
    points = torch.tensor([[[0.1, -0.2, 5.0]]])
    camera = torch.tensor([[2.0, 0.5, 0.25]])
    projected = project_weak_perspective(points, camera)
    assert torch.allclose(projected, torch.tensor([[[1.2, 0.1]]]))  # depth is ignored


def test_bad_shapes():
    with pytest.raises(ValueError):
        project_weak_perspective(torch.zeros(2, 5, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        project_weak_perspective(torch.zeros(2, 5, 3), torch.zeros(3, 3))


def _orthographic_ray_hit(triangle: np.ndarray, camera: np.ndarray, pixel: np.ndarray, size: int):
    """Cast the ray of a pixel centre along -z (analytic, no projection code) into a triangle.

    A weak-perspective camera is an orthographic one: the pixel centre (u, v) sees the
    world line X = ((2u/S - 1)/s - tx, (1 - 2v/S)/s - ty, z). Returns the 3D hit or None.
    """
    s, tx, ty = camera
    x = (2 * pixel[0] / size - 1) / s - tx
    y = (1 - 2 * pixel[1] / size) / s - ty
    a, b, c = triangle
    matrix = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
    w1, w2 = np.linalg.solve(matrix, np.array([x - a[0], y - a[1]]))
    if min(w1, w2, 1 - w1 - w2) < 0:
        return None
    return a + w1 * (b - a) + w2 * (c - a)


def test_projected_vertex_lands_on_ray_cast_pixel():
    size = 64
    # A tilted triangle in front of the camera; weak perspective ignores depth, a ray cast does not need it.
    triangle = np.array([[-0.05, -0.04, 0.02], [0.06, -0.03, 0.05], [0.0, 0.07, -0.01]])
    camera = np.array([9.0, 0.01, -0.005])
    projected = project_weak_perspective(torch.tensor(triangle)[None], torch.tensor(camera)[None])
    pixels = normalized_to_pixels(projected, size)[0].numpy()
    for vertex, pixel in zip(triangle, pixels):
        # The pixel that holds the projected vertex: column floor(u), row floor(v).
        column, row = np.floor(pixel)
        # Cast rays through the four corners of that pixel: the vertex must lie in their x-y square.
        corner_hits = []
        for du, dv in ((0, 0), (1, 1)):
            s, tx, ty = camera
            corner_hits.append(((2 * (column + du) / size - 1) / s - tx, (1 - 2 * (row + dv) / size) / s - ty))
        (x0, y0), (x1, y1) = corner_hits  # top-left and bottom-right of the pixel, in FLAME units
        assert x0 <= vertex[0] <= x1 and y1 <= vertex[1] <= y0
    # And the ray through the projected centroid hits the triangle at its 3D centroid.
    centroid_pixel = pixels.mean(axis=0)
    hit = _orthographic_ray_hit(triangle, camera, centroid_pixel, size)
    assert hit is not None and np.allclose(hit, triangle.mean(axis=0), atol=1e-9)


def test_camera_looking_at_fills_the_crop():
    points = torch.tensor([[[-0.1, -0.2, 0.0], [0.3, 0.2, 1.0]]])
    camera = camera_looking_at(points, fill=0.8)
    projected = project_weak_perspective(points, camera)
    assert torch.allclose(projected.amax(dim=1) - projected.amin(dim=1), torch.tensor([[1.6, 1.6]]))
    assert torch.allclose(projected.mean(dim=1), torch.zeros(1, 2), atol=1e-6)


def test_camera_looking_at_with_a_given_scale():
    points = torch.tensor([[[-0.1, -0.2, 0.0], [0.3, 0.2, 1.0]], [[0.0, 0.0, 0.0], [0.1, 0.4, 0.0]]])
    camera = camera_looking_at(points, scale=torch.tensor([3.0, 5.0]))
    assert torch.allclose(camera[:, 0], torch.tensor([3.0, 5.0]))
    projected = project_weak_perspective(points, camera)
    assert torch.allclose((projected.amax(dim=1) + projected.amin(dim=1)) / 2, torch.zeros(2, 2), atol=1e-6)
    assert torch.allclose(projected[0, 1] - projected[0, 0], torch.tensor([1.2, 1.2]))  # 3 x the extent
    assert torch.allclose(camera_looking_at(points, scale=2.0)[:, 0], torch.tensor([2.0, 2.0]))


def test_fit_weak_perspective_recovers_the_camera():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3, 20, 3, generator=generator, dtype=torch.float64) * 0.1
    camera = torch.tensor([[7.0, 0.01, -0.02], [2.5, -0.3, 0.2], [11.0, 0.0, 0.05]], dtype=torch.float64)
    target = project_weak_perspective(points, camera)
    torch.testing.assert_close(fit_weak_perspective(points, target), camera, rtol=0, atol=1e-10)
    # Weights: points with weight 0 (an undetected landmark) do not pull the fit.
    spoiled = target.clone()
    spoiled[:, :5] += 0.5
    weights = torch.ones(3, 20, dtype=torch.float64)
    weights[:, :5] = 0.0
    torch.testing.assert_close(fit_weak_perspective(points, spoiled, weights), camera, rtol=0, atol=1e-10)
    assert (fit_weak_perspective(points, spoiled) - camera).abs().max() > 1e-3


def test_fit_weak_perspective_is_the_least_squares_optimum():
    """With noise the fit is the minimum of the weighted squared error: no small change lowers it."""
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(1, 30, 3, generator=generator, dtype=torch.float64) * 0.1
    target = project_weak_perspective(points, torch.tensor([[6.0, 0.02, 0.0]], dtype=torch.float64))
    target = target + 0.01 * torch.randn(target.shape, generator=generator, dtype=torch.float64)
    weights = torch.rand(1, 30, generator=generator, dtype=torch.float64)
    fitted = fit_weak_perspective(points, target, weights)

    def cost(camera):
        return (weights * ((project_weak_perspective(points, camera) - target) ** 2).sum(-1)).sum()

    best = cost(fitted)
    for k in range(3):
        for step in (1e-4, -1e-4):
            moved = fitted.clone()
            moved[0, k] += step
            assert cost(moved) > best
