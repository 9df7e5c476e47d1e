"""The software rasteriser against coverage and depth computed another way (down to a per-triangle loop over
every pixel centre), and the flip permutation."""
from __future__ import annotations

import numpy as np
import pytest
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


def reference_rasterize(screen: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool,
                        planes: bool = False) -> render.Fragments:
    """The rule, slowly: for each image, each triangle in face order, every pixel centre of the image.

    Barycentrics from the textbook edge functions, w0 = e(b, c, p) / e(a, b, c), ...; a covering
    triangle replaces the pixel's when it is as near or nearer (``>=``: a later face wins a tie).
    ``planes=True`` evaluates the same barycentrics in the renderer's affine form, ((A u + B v) + C),
    so that in float32 the rounding agrees bit for bit too.
    """
    batch, dtype = screen.shape[0], screen.dtype
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    p = torch.stack([cols + 0.5, rows + 0.5], dim=-1).to(dtype)  # S x S x 2 pixel centres
    edge = lambda a, b, q: (b[0] - a[0]) * (q[..., 1] - a[1]) - (b[1] - a[1]) * (q[..., 0] - a[0])
    face_index = torch.full((batch, size, size), -1)
    bary = torch.zeros(batch, size, size, 3, dtype=dtype)
    depth = torch.full((batch, size, size), float("-inf"), dtype=dtype)
    for image in range(batch):
        for f, corners in enumerate(faces.tolist()):
            a, b, c = screen[image, corners]
            area = edge(a, b, c)
            if abs(area) <= 1e-12 or (cull_backfaces and area >= 0):
                continue
            if planes:
                inv = 1.0 / area
                w0 = (-(c[1] - b[1]) * inv * p[..., 0] + (c[0] - b[0]) * inv * p[..., 1]) \
                    + ((c[1] - b[1]) * b[0] - (c[0] - b[0]) * b[1]) * inv
                w1 = (-(a[1] - c[1]) * inv * p[..., 0] + (a[0] - c[0]) * inv * p[..., 1]) \
                    + ((a[1] - c[1]) * c[0] - (a[0] - c[0]) * c[1]) * inv
            else:
                w0, w1 = edge(b, c, p) / area, edge(c, a, p) / area
            w2 = 1.0 - w0 - w1
            z = w0 * a[2] + w1 * b[2] + w2 * c[2]
            wins = (w0 >= -render.INSIDE_TOLERANCE) & (w1 >= -render.INSIDE_TOLERANCE) \
                & (w2 >= -render.INSIDE_TOLERANCE) & (z >= depth[image])
            face_index[image][wins] = f
            bary[image][wins] = torch.stack([w0, w1, w2], dim=-1)[wins]
            depth[image][wins] = z[wins]
    return render.Fragments(face_index, bary, depth)


def random_scene(seed: int, size: int, batch: int = 3, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping triangles of every kind: sub-pixel to larger than the image, half wound each way,
    some off screen or degenerate, and exact duplicates (depth ties)."""
    g = torch.Generator().manual_seed(seed)
    n = 60
    centre = torch.rand(batch, n, 1, 2, generator=g) * 1.4 * size - 0.2 * size
    radius = torch.exp(torch.rand(batch, n, 1, 1, generator=g) * np.log(1.5 * size / 0.3)) * 0.3
    uv = centre + radius * (torch.rand(batch, n, 3, 2, generator=g) * 2 - 1)
    uv[:, 5] = uv[:, 5, :1]  # a triangle squashed to a point
    z = torch.randn(batch, n, 3, 1, generator=g)
    z[:, 7:10] = 0.0  # flat triangles at depth exactly 0 everywhere (+-0): exact ties, the later face wins
    screen = torch.cat([uv, z], dim=-1).reshape(batch, 3 * n, 3).to(dtype)
    faces = torch.arange(3 * n).view(n, 3)
    faces = torch.cat([faces, faces[7:12]])  # the same triangles again, later: they win every tie
    return screen, faces


@pytest.mark.parametrize("cull_backfaces", [False, True])
def test_coverage_and_barycentrics_equal_a_per_triangle_loop(cull_backfaces):
    size = 21
    screen, faces = random_scene(1, size)
    expected = reference_rasterize(screen, faces, size, cull_backfaces)
    got = render.rasterize(screen, faces, size, cull_backfaces=cull_backfaces)
    assert (expected.face_index >= 0).sum() > 500 and (expected.face_index >= len(faces) - 5).any()
    torch.testing.assert_close(got.face_index, expected.face_index, rtol=0, atol=0)
    torch.testing.assert_close(got.bary, expected.bary, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.depth, expected.depth, rtol=0, atol=1e-9)


@pytest.mark.parametrize("size", [16, 37])
def test_float32_packed_z_buffer_equals_the_loop_bit_for_bit(size):
    screen, faces = random_scene(2, size, batch=4, dtype=torch.float32)
    expected = reference_rasterize(screen, faces, size, cull_backfaces=True, planes=True)
    got = render.rasterize(screen, faces, size, cull_backfaces=True)
    for name, a, b in zip(render.Fragments._fields, got, expected):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("size", [24, 190])  # several images per block of pixels; several blocks per image
def test_render_shades_exactly_the_rasterised_pixels(size):
    """:func:`render` (covered pixels only, a block at a time) equals rasterize -> interpolate -> shade -> composite."""
    g = torch.Generator().manual_seed(5)
    screen, faces = random_scene(3, size, dtype=torch.float32)
    camera = torch.tensor([[2.0 / size, 0.0, 0.0]]).expand(len(screen), 3)
    # vertices whose projection is `screen`: x = 2u/S - 1, y = 1 - 2v/S, z = depth / s
    vertices = torch.stack([2 * screen[..., 0] / size - 1, 1 - 2 * screen[..., 1] / size, screen[..., 2] * size / 2],
                           dim=-1)
    vertices = vertices / camera[:, None, :1]
    albedo, background = torch.rand(*vertices.shape, generator=g), torch.rand(len(screen), 3, size, size, generator=g)
    light = torch.nn.functional.normalize(torch.randn(len(screen), 3, generator=g), dim=-1)
    ambient, diffuse = torch.rand(len(screen), 3, generator=g), torch.rand(len(screen), 3, generator=g)
    images, fragments = render.render(vertices, faces, camera, size, albedo, light, ambient, diffuse, background)
    again = render.rasterize(render.project_to_pixels(vertices, camera, size), faces, size, cull_backfaces=True)
    for a, b in zip(fragments, again):
        assert torch.equal(a, b)
    colour = render.interpolate(fragments, faces, torch.cat([albedo, render.vertex_normals(vertices, faces)], -1))
    lit = render.shade(colour[..., 3:], colour[..., :3], light, ambient, diffuse).permute(0, 3, 1, 2)
    assert torch.equal(images, torch.where((fragments.face_index >= 0)[:, None], lit, background))
    assert (fragments.face_index >= 0).float().mean() > 0.2


def test_nothing_drawn_leaves_the_background():
    faces = random_scene(8, 20)[1]
    vertices = torch.rand(2, 3 * len(faces), 3) + 5  # every triangle right of and above the image
    background = torch.rand(2, 3, 20, 20)
    images, fragments = render.render(vertices, faces, torch.tensor([[1.0, 0, 0]] * 2), 20, torch.rand(*vertices.shape),
                                      torch.tensor([[0, 0, 1.0]] * 2), torch.ones(2, 3), torch.ones(2, 3), background)
    assert torch.equal(images, background)
    assert (fragments.face_index == -1).all() and (fragments.depth == -torch.inf).all()
    empty = render.rasterize(torch.zeros(0, 3, 3), torch.tensor([[0, 1, 2]]), 8)
    assert empty.face_index.shape == (0, 8, 8)


def test_whole_batch_chunks_as_on_a_gpu_give_the_same_images(monkeypatch):
    """On a GPU every loop takes the whole batch at once; the same code on the CPU gives the same bits."""
    size, g = 40, torch.Generator().manual_seed(6)
    screen, faces = random_scene(7, size, batch=4, dtype=torch.float32)
    vertices = torch.stack([2 * screen[..., 0] / size - 1, 1 - 2 * screen[..., 1] / size, screen[..., 2]], -1)
    camera = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3)
    arguments = (vertices, faces, camera, size, torch.rand(*vertices.shape, generator=g),
                 torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=-1),
                 torch.rand(4, 3, generator=g), torch.rand(4, 3, generator=g),
                 torch.rand(4, 3, size, size, generator=g))
    chunked = render.render(*arguments)
    monkeypatch.setattr(render, "_limit", lambda device, elsewhere: elsewhere)
    whole = render.render(*arguments)
    assert torch.equal(chunked[0], whole[0])
    for a, b in zip(chunked[1], whole[1]):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_rasterises_the_same_pixels():
    screen, faces = random_scene(4, 33, dtype=torch.float32)
    cpu = render.rasterize(screen, faces, 33, cull_backfaces=True)
    gpu = render.rasterize(screen.cuda(), faces.cuda(), 33, cull_backfaces=True)
    for name, a, b in zip(render.Fragments._fields, cpu, gpu):
        assert torch.equal(a, b.cpu()), name


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the packed and the two-pass z-buffers
def test_a_triangle_larger_than_the_budget_is_rasterised_alone(monkeypatch, dtype):
    """A box bigger than the per-op budget (a close-up at thousands of pixels: synthesize --size 2000 failed
    with a reshape error) is done in buffers grown to it, with the same pixels as the loop."""
    size = 40
    screen, faces = random_scene(7, size, dtype=dtype)
    expected = reference_rasterize(screen, faces, size, cull_backfaces=True, planes=dtype == torch.float32)
    monkeypatch.setattr(render, "_SERIAL", 64)  # far below the largest triangle's box here
    got = render.rasterize(screen, faces, size, cull_backfaces=True)
    torch.testing.assert_close(got.face_index, expected.face_index, rtol=0, atol=0)
    torch.testing.assert_close(got.bary, expected.bary, rtol=0, atol=1e-6)
