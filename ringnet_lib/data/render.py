"""A small software rasteriser in torch: orthographic (weak-perspective) meshes to images.

Why our own: RingNet's camera is weak perspective, i.e. an orthographic view, which is
the easy case for a rasteriser (no perspective division, barycentrics and depth are affine
in screen space). It needs nothing outside PyPI, runs on any device, and uses *exactly*
:mod:`ringnet_lib.camera`'s projection, so the ground-truth landmarks and the pixels cannot
disagree. Measured with ``bench/render.py`` on 32 posed default heads (4,926 vertices, 9,840
faces) as training draws them, on one CPU thread: 119 images per CPU-second at 224 px and 411
at 64 px, where the previous version of this file (a scatter over every bounding-box pixel of
every triangle, the same images bit for bit) made 45 and 306, and pyrender 0.1.45 with EGL on
Mesa llvmpipe (a new scene per image, as a generator needs; Debian's libegl1 and
libgl1-mesa-dri) 22 at any size. On 2 threads of a 2-core machine that other jobs kept busy:
48 images/s at 224 px and 120 at 64 px, against 9 and 13 (see :data:`_SERIAL` for why the old
one suffered). Short of the aim, 200 images/s at 224 px on 2 cores: 8.4 CPU-ms an image, and
the loops use one core. Not yet measured on a GPU.

The steps, each a function below:

1. :func:`project_to_pixels` - vertices to pixel (u, v) plus a depth that grows towards the camera;
2. :func:`rasterize` - which triangle covers each pixel centre (z-buffer) and where in it (barycentrics);
3. :func:`ringnet_lib.mesh.vertex_normals` and :func:`shade` - interpolate colour and normal, Lambert lighting;
4. :func:`render` - compose them over a background.

Pixel (col i, row j) is covered when its centre (i + 0.5, j + 0.5) lies inside a triangle (all
three barycentrics >= -:data:`INSIDE_TOLERANCE`), the convention of OpenGL and of ``camera.py``'s
pixel coordinates; the nearest covering triangle wins (largest depth), ties to the triangle that
comes last in (image, face) order. Nothing here is differentiable (the z-buffer is integer keys).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from ..camera import normalized_to_pixels, project_weak_perspective
from ..mesh import vertex_normals

INSIDE_TOLERANCE = 1e-6  # a pixel centre on a shared edge (to rounding) is in both triangles; the z-test decides

# Work sizes. On the CPU every op in the loops below touches at most _SERIAL elements: torch runs
# such an op on the calling thread (2^15 is its intra-op grain), so a render opens only a handful
# of OpenMP parallel regions. Each region costs milliseconds on a machine that other processes keep
# busy (the threads spin waiting for each other: an add of 65,536 floats took 28 us on 1 thread and
# 6.8 ms on 2), and a first version of this file, with a region per op, ran slower on 2 threads than
# the renderer it replaced. Small chunks also stay in the cache. On a GPU: few, large kernels.
_SERIAL = 1 << 15
_GPU_CELLS = 1 << 22  # (pixel, triangle) cells evaluated at once on a GPU, ~170 MB of buffers
_PASS_CELLS = 1 << 14  # on the CPU a pass over a box class costs about as much as evaluating this many cells


def _limit(device: torch.device, elsewhere: int) -> int:
    """Elements one op may touch: :data:`_SERIAL` on the CPU, ``elsewhere`` on a GPU."""
    return _SERIAL if device.type == "cpu" else elsewhere


def _fill(tensor: torch.Tensor, value) -> torch.Tensor:
    """``tensor.fill_(value)`` a slice at a time on the CPU (see :data:`_SERIAL`)."""
    flat = tensor.view(-1)
    step = _limit(tensor.device, max(flat.numel(), 1))
    for start in range(0, flat.numel(), step):
        flat[start:start + step].fill_(value)
    return tensor


class Fragments(NamedTuple):
    face_index: torch.Tensor  # B x S x S long, -1 where no triangle covers the pixel
    bary: torch.Tensor  # B x S x S x 3 barycentric weights of the covering triangle's corners
    depth: torch.Tensor  # B x S x S, -inf on the background (larger = closer to the camera)


def project_to_pixels(vertices: torch.Tensor, camera: torch.Tensor, image_size: int) -> torch.Tensor:
    """Weak-perspective projection to pixels, keeping a depth.

    Args:
        vertices: ``B x V x 3`` FLAME space (+z towards the camera).
        camera: ``B x 3`` = (s, tx, ty), as in :func:`ringnet_lib.camera.project_weak_perspective`.
        image_size: side S of the square image.
    Returns:
        ``B x V x 3``: pixel u, pixel v (+v down), and depth ``s * z`` (larger = closer).
    """
    uv = normalized_to_pixels(project_weak_perspective(vertices, camera), image_size)
    return torch.cat([uv, camera[:, None, :1] * vertices[..., 2:]], dim=-1)


# ---------------------------------------------------------------------------------------------
# Rasterising. Barycentrics are affine in (u, v) under an orthographic camera: per triangle,
# w0 = (A0 u + B0 v) + C0, w1 = (A1 u + B1 v) + C1, w2 = 1 - w0 - w1, depth = (w0 z0 + w1 z1) + w2 z2,
# evaluated term for term as the renderer this replaced did, so every bit agrees with it.
# The T triangles that can cover a pixel (front-facing, box on screen) are grouped by the size of
# their pixel box (h x w, rounded up to a few sides); a group is evaluated as one dense h x w x T
# grid of cells, T innermost so that every per-triangle value is a contiguous vector. No per-cell
# gathers: each pixel keeps a (depth, rank) key, and only the winner of each pixel is looked up.
# ---------------------------------------------------------------------------------------------

class _Triangles(NamedTuple):
    """The T triangles that may cover a pixel, in (image, face) order: a triangle's rank is its position."""
    face: torch.Tensor  # T long: its mesh face
    table: torch.Tensor  # 13 x T: A0 A1 B0 B1 C0 C1 (barycentric planes), z0 z1 z2, box lo_u lo_v hi_u hi_v
    corner_pixel: torch.Tensor  # T long: flat index (image * S + lo_v) * S + lo_u of the box's first pixel
    box_class: torch.Tensor  # T long: class of its box (:func:`_sides`), the last class for an empty box
    histogram: list[int]  # triangles per box class


def _sides(size: int) -> list[int]:
    """Box sides a box is padded to: 1, 2, 3, 4, then 6, 8, 12, 16, 24, ... (at most 1.5x), up to >= S.
    Class ``i * len(sides) + j`` is the box ``sides[i]`` rows by ``sides[j]`` columns."""
    ladder = sorted({1, 2, 3, 4} | {m << k for k in range(1, 24) for m in (2, 3)})
    return ladder[:next(i for i, side in enumerate(ladder) if side >= size) + 1]


def _image_blocks(batch: int, elements_per_image: int, device: torch.device) -> Iterator[slice]:
    """Consecutive images, as many at a time as keep an op within :func:`_limit` (at least one)."""
    step = max(1, _limit(device, batch * elements_per_image) // elements_per_image)
    for first in range(0, batch, step):
        yield slice(first, min(first + step, batch))


def _triangles(screen: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool) -> _Triangles:
    """Culling (an image at a time), then barycentric planes and pixel boxes (a chunk of triangles at a time)."""
    batch, n_faces = screen.shape[0], faces.shape[0]
    device, dtype = screen.device, screen.dtype
    capacity = batch * n_faces
    table = torch.empty(13, capacity, dtype=dtype, device=device)
    uv = torch.empty(6, capacity, dtype=dtype, device=device)  # u0 u1 u2 v0 v1 v2 of the kept triangles
    area = torch.empty(capacity, dtype=dtype, device=device)
    flat = torch.empty(capacity, dtype=torch.long, device=device)  # image * F + face
    corner_vertex = faces.T.reshape(-1)  # 3F: corner 0 of every face, then corner 1, then corner 2
    count = 0
    for images in _image_blocks(batch, 3 * n_faces, device):
        # u, v, depth of the 3 corners of every face: b x 3 x F each.
        u, v, z = (screen[images, :, k].index_select(1, corner_vertex).view(-1, 3, n_faces) for k in range(3))
        twice_area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])  # b x F
        # Pixel v points down, so a face that is counter-clockwise in FLAME's (x, y) has area < 0 here.
        keep = twice_area < -1e-12 if cull_backfaces else twice_area.abs() > 1e-12
        kept = torch.nonzero(keep.view(-1)).squeeze(1)  # (image in block) * F + face
        t = slice(count, count + len(kept))
        count += len(kept)
        for rows, corners in ((uv[0:3, t], u), (uv[3:6, t], v), (table[6:9, t], z)):
            for row, corner in zip(rows, corners.transpose(0, 1).reshape(3, -1)):
                torch.index_select(corner, 0, kept, out=row)
        torch.index_select(twice_area.view(-1), 0, kept, out=area[t])
        torch.add(kept, images.start * n_faces, out=flat[t])

    sides = _sides(size)
    n_classes = len(sides) ** 2 + 1
    side_class = torch.searchsorted(torch.tensor(sides, device=device), torch.arange(size + 1, device=device))
    face = torch.empty(count, dtype=torch.long, device=device)
    corner_pixel = torch.empty(count, dtype=torch.long, device=device)
    box_class = torch.empty(count, dtype=torch.long, device=device)
    histogram = torch.zeros(n_classes, dtype=torch.long, device=device)
    step = _limit(device, max(count, 1))
    for first in range(0, count, step):
        t = slice(first, min(first + step, count))
        u0, u1, u2, v0, v1, v2 = uv[:, t]
        a0, a1, b0, b1, c0, c1, _, _, _, lo_u, lo_v, hi_u, hi_v = table[:, t]
        inv_area = 1.0 / area[t]
        torch.mul(v2 - v1, inv_area, out=a0).neg_()
        torch.mul(v0 - v2, inv_area, out=a1).neg_()
        torch.mul(u2 - u1, inv_area, out=b0)
        torch.mul(u0 - u2, inv_area, out=b1)
        torch.mul((v2 - v1) * u1 - (u2 - u1) * v1, inv_area, out=c0)
        torch.mul((v0 - v2) * u2 - (u0 - u2) * v2, inv_area, out=c1)
        # The box: first and last pixel whose centre may be inside, clamped to the image. (floor and
        # ceil as floor division: torch.ceil_ of 4,500 elements already opens a parallel region.)
        for lo, hi, (x0, x1, x2) in ((lo_u, hi_u, (u0, u1, u2)), (lo_v, hi_v, (v0, v1, v2))):
            torch.minimum(torch.minimum(x0, x1, out=lo), x2, out=lo).sub_(0.5).neg_()
            torch.div(lo, 1.0, rounding_mode="floor", out=lo).neg_().clamp_(0, size - 1)  # ceil(min - 0.5)
            torch.maximum(torch.maximum(x0, x1, out=hi), x2, out=hi).sub_(0.5)
            torch.div(hi, 1.0, rounding_mode="floor", out=hi).clamp_(-1, size - 1)  # floor(max - 0.5)
        image = torch.div(flat[t], n_faces, rounding_mode="floor")
        torch.sub(flat[t], image * n_faces, out=face[t])
        first_u, first_v = lo_u.long(), lo_v.long()
        torch.add((image * size + first_v) * size, first_u, out=corner_pixel[t])
        width, height = hi_u.long() - first_u + 1, hi_v.long() - first_v + 1  # < 1: off screen
        cls = torch.add(side_class.index_select(0, height.clamp(min=0)) * len(sides),
                        side_class.index_select(0, width.clamp(min=0)), out=box_class[t])
        cls.masked_fill_((width < 1) | (height < 1), n_classes - 1)
        histogram += torch.bincount(cls, minlength=n_classes)
    return _Triangles(face, table[:, :count], corner_pixel, box_class, histogram.tolist())


def _plan_passes(histogram: list[int], sides: list[int], pass_cells: int
                 ) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Merge box classes into passes: a class joins the cheapest class that contains it while the
    padding it adds (cells) costs less than a pass of its own.

    Args:
        histogram: triangles per class (``len(sides)^2`` box classes, then the empty boxes).
        sides: the padded box sides (:func:`_sides`).
        pass_cells: what a pass costs, in cells.
    Returns:
        the pass of each class (the empty boxes: ``len(passes)``, after the last), and the passes
        as (h, w, triangles).
    """
    n = len(sides)
    classes = [k for k in range(n * n) if histogram[k]]
    h = np.array([sides[k // n] for k in classes], dtype=np.int64)
    w = np.array([sides[k % n] for k in classes], dtype=np.int64)
    count = np.array([histogram[k] for k in classes], dtype=np.int64)
    into, alive, never = np.arange(len(classes)), np.ones(len(classes), dtype=bool), np.iinfo(np.int64).max
    for i in np.argsort(h * w, kind="stable"):  # small boxes first: they are cheap to pad
        extra = np.where(alive & (h >= h[i]) & (w >= w[i]), count[i] * (h * w - h[i] * w[i]), never)
        extra[i] = never
        j = int(extra.argmin())
        if extra[j] <= pass_cells:
            alive[i], into[i] = False, j
            count[j] += count[i]
    for i in range(len(classes)):  # follow merges of merges to the class that is drawn
        while not alive[into[i]]:
            into[i] = into[into[i]]
    drawn = [int(i) for i in np.nonzero(alive)[0]]
    pass_of = {i: p for p, i in enumerate(drawn)}
    new_class = [len(drawn)] * (n * n + 1)
    for i, k in enumerate(classes):
        new_class[k] = pass_of[int(into[i])]
    return new_class, [(int(h[i]), int(w[i]), int(count[i])) for i in drawn]


def _cells(tris: _Triangles, size: int, n_pixels: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Every (pixel of a padded box, triangle) cell, a chunk of one pass at a time.

    Yields:
        pixel (N long, flat image * S^2 + v * S + u), depth (N), inside (N bool: the pixel centre
        is in the triangle), rank (T long) and the chunk's grid shape (h, w, T), N = h w T. The
        buffers are reused by the next chunk.
    """
    device, dtype = tris.table.device, tris.table.dtype
    budget = _limit(device, _GPU_CELLS)
    new_class, passes = _plan_passes(tris.histogram, _sides(size), _PASS_CELLS if device.type == "cpu" else budget)
    # Sort by pass, so that a pass's triangles are contiguous. On the CPU numpy's radix sort (int16 keys,
    # one thread): torch.argsort of 10^5 keys opens an OpenMP region (see _SERIAL) and is slower alone.
    pass_of = torch.tensor(new_class, dtype=torch.int16, device=device).index_select(0, tris.box_class)
    if device.type == "cpu":
        order = torch.from_numpy(np.argsort(pass_of.numpy(), kind="stable"))
    else:
        order = torch.argsort(pass_of)
    table = torch.empty_like(tris.table)
    for row, out in zip(tris.table, table):
        torch.index_select(row, 0, order, out=out)
    corner = tris.corner_pixel.index_select(0, order)
    # A triangle's box larger than the budget (a close-up at thousands of pixels) is done alone, in
    # buffers grown to its box: the budget bounds a chunk of many triangles, never one triangle.
    budget = max([budget] + [h * w for h, w, _ in passes])
    w0_buffer, w1_buffer, w2_buffer, low_buffer = torch.empty(4, budget, dtype=dtype, device=device)
    pixel_buffer = torch.empty(budget, dtype=torch.long, device=device)
    inside_buffer = torch.empty(budget, dtype=torch.bool, device=device)
    ramp = torch.arange(max(max(h, w) for h, w, _ in passes) if passes else 1, device=device)
    ramp_f = ramp.to(dtype)[:, None]
    nan = torch.tensor(float("nan"), dtype=dtype, device=device)
    start = 0
    for h, w, count in passes:
        offsets = (ramp[:h, None] * size + ramp[:w])[:, :, None]  # h x w x 1 pixel offsets in the box
        step = max(1, budget // (h * w))
        for s in range(start, start + count, step):
            e = min(s + step, start + count)
            n, shape = (e - s) * h * w, (h, w, e - s)
            a0, a1, b0, b1, c0, c1, z0, z1, z2, lo_u, lo_v, hi_u, hi_v = table[:, s:e]
            # Pixel centres along u (w x T) and v (h x T); NaN past the triangle's own box, so that a
            # padded cell fails every test (the reference looks only inside the box).
            u = lo_u + ramp_f[:w]
            u = torch.where(u <= hi_u, u + 0.5, nan)
            v = lo_v + ramp_f[:h]
            v = torch.where(v <= hi_v, v + 0.5, nan)
            w0 = torch.add((a0 * u)[None], (b0 * v)[:, None], out=w0_buffer[:n].view(shape)).add_(c0)
            w1 = torch.add((a1 * u)[None], (b1 * v)[:, None], out=w1_buffer[:n].view(shape)).add_(c1)
            w2 = torch.neg(w0, out=w2_buffer[:n].view(shape)).add_(1.0).sub_(w1)
            low = low_buffer[:n].view(shape)
            torch.minimum(torch.minimum(w0, w1, out=low), w2, out=low)
            inside = torch.ge(low, -INSIDE_TOLERANCE, out=inside_buffer[:n].view(shape))
            depth = w0.mul_(z0).add_(w1.mul_(z1)).add_(w2.mul_(z2))
            # Padded cells may point past the last pixel: clamp (they are never inside).
            pixel = torch.add(corner[s:e], offsets, out=pixel_buffer[:n].view(shape)).clamp_(max=n_pixels - 1)
            yield pixel.view(-1), depth.view(-1), inside.view(-1), order[s:e], shape
        start += count


def _ordered(depth: torch.Tensor) -> torch.Tensor:
    """float32 -> int32 with the same order, in place: the magnitude bits of negatives flipped; -0.0 == +0.0."""
    bits = depth.add_(0.0).view(torch.int32)  # x + 0.0 turns -0.0 into +0.0
    return bits.bitwise_xor_(torch.bitwise_right_shift(bits, 31).bitwise_and_(0x7FFFFFFF))


def _nearest_packed(tris: _Triangles, size: int, n_pixels: int) -> tuple[torch.Tensor, int]:
    """float32 z-buffer in one pass: a cell's key is (depth as an ordered int32) << 32 | rank, and one
    scatter amax per pixel keeps the largest depth, ties to the largest rank.

    Returns:
        ``B*S*S`` long keys, and the floor: a pixel is covered where its key > floor, by rank key & (2^32 - 1).
    """
    device = tris.table.device
    floor = (int(_ordered(torch.tensor([float("-inf")]))) << 32) | 0xFFFFFFFF  # above every -inf key
    keys = _fill(torch.empty(n_pixels, dtype=torch.long, device=device), floor)
    key_buffer = torch.empty(_limit(device, _GPU_CELLS), dtype=torch.long, device=device)
    for pixel, depth, inside, rank, shape in _cells(tris, size, n_pixels):
        depth.masked_fill_(inside.logical_not_(), float("-inf"))
        if len(pixel) > len(key_buffer):  # one triangle's box beyond the budget (see _cells)
            key_buffer = torch.empty(len(pixel), dtype=torch.long, device=device)
        key = key_buffer[:len(pixel)]
        key.copy_(_ordered(depth)).bitwise_left_shift_(32).view(shape).bitwise_or_(rank)
        keys.scatter_reduce_(0, pixel, key, reduce="amax")
    return keys, floor


def _nearest_two_pass(tris: _Triangles, size: int, n_pixels: int) -> tuple[torch.Tensor, int]:
    """The same for other dtypes (float64 keeps its exact depths): the largest depth per pixel, then
    the largest rank among the cells at that depth. Keys are the ranks, floor -1."""
    device, dtype = tris.table.device, tris.table.dtype
    zbuffer = _fill(torch.empty(n_pixels, dtype=dtype, device=device), float("-inf"))
    for pixel, depth, inside, rank, shape in _cells(tris, size, n_pixels):
        zbuffer.scatter_reduce_(0, pixel, depth.masked_fill_(inside.logical_not_(), float("-inf")), reduce="amax")
    winner = _fill(torch.empty(n_pixels, dtype=torch.long, device=device), -1)
    for pixel, depth, inside, rank, shape in _cells(tris, size, n_pixels):
        front = inside.logical_and_(depth >= zbuffer.index_select(0, pixel)).view(shape)
        winner.scatter_reduce_(0, pixel, torch.where(front, rank, -1).view(-1), reduce="amax")
    return winner, -1


class _Covered(NamedTuple):
    """The covered pixels of a block of pixels, in increasing flat index."""
    image: int | None  # the block's image, or None: the block spans several
    pixel: torch.Tensor  # P long: flat image * S^2 + v * S + u
    face: torch.Tensor  # P long: the covering face
    bary: torch.Tensor  # P x 3 its barycentrics at the pixel centre


def _pixel_blocks(batch: int, size: int, device: torch.device) -> list[tuple[int, int, int | None]]:
    """(start, end, image) ranges of at most :func:`_limit` pixels: rows of one image, or whole images."""
    per_image, step = size * size, _limit(device, batch * size * size)
    if per_image > step:
        rows = max(1, step // size)
        return [(b * per_image + r * size, b * per_image + min(r + rows, size) * size, b)
                for b in range(batch) for r in range(0, size, rows)]
    images = step // per_image
    return [(b * per_image, min(b + images, batch) * per_image, b if min(b + images, batch) == b + 1 else None)
            for b in range(0, batch, images)]


def _resolve(tris: _Triangles, keys: torch.Tensor, floor: int, batch: int, size: int
             ) -> tuple[Fragments, list[_Covered]]:
    """Barycentrics and depth of each pixel's winning triangle, recomputed from its planes (the same
    ops as in :func:`_cells`, so the same bits), a block of pixels at a time."""
    device, dtype = keys.device, tris.table.dtype
    n_pixels = batch * size * size
    face_index = _fill(torch.empty(n_pixels, dtype=torch.long, device=device), -1)
    bary = _fill(torch.empty(n_pixels, 3, dtype=dtype, device=device), 0.0)
    depth = _fill(torch.empty(n_pixels, dtype=dtype, device=device), float("-inf"))
    covered = []
    for start, end, image in _pixel_blocks(batch, size, device):
        pixel = torch.nonzero(keys[start:end] > floor).squeeze(1).add_(start)
        rank = keys.index_select(0, pixel).bitwise_and_(0xFFFFFFFF)
        in_image = pixel % (size * size)
        row = torch.div(in_image, size, rounding_mode="floor")
        u, v = (in_image - row * size).to(dtype).add_(0.5), row.to(dtype).add_(0.5)  # pixel centres
        a0, a1, b0, b1, c0, c1, z0, z1, z2 = (tris.table[k].index_select(0, rank) for k in range(9))
        w = torch.empty(len(pixel), 3, dtype=dtype, device=device)
        w0 = torch.add(a0 * u, b0 * v, out=w[:, 0]).add_(c0)
        w1 = torch.add(a1 * u, b1 * v, out=w[:, 1]).add_(c1)
        w2 = torch.neg(w0, out=w[:, 2]).add_(1.0).sub_(w1)
        face = tris.face.index_select(0, rank)
        face_index.index_copy_(0, pixel, face)
        for k in range(3):  # a component at a time: P elements per op (see _SERIAL)
            bary[:, k].index_copy_(0, pixel, w[:, k])
        depth.index_copy_(0, pixel, (w0 * z0).add_(w1 * z1).add_(w2 * z2))
        covered.append(_Covered(image, pixel, face, w))
    fragments = Fragments(face_index.view(batch, size, size), bary.view(batch, size, size, 3),
                          depth.view(batch, size, size))
    return fragments, covered


@torch.no_grad()
def _rasterize(screen: torch.Tensor, faces: torch.Tensor, size: int, cull_backfaces: bool
               ) -> tuple[Fragments, list[_Covered]]:
    """:func:`rasterize`, plus the covered pixels as lists (what :func:`render` shades)."""
    batch = screen.shape[0]
    tris = _triangles(screen, faces.to(screen.device), size, cull_backfaces)
    nearest = _nearest_packed if screen.dtype == torch.float32 else _nearest_two_pass
    return _resolve(tris, *nearest(tris, size, batch * size * size), batch, size)


def rasterize(screen: torch.Tensor, faces: torch.Tensor, image_size: int, cull_backfaces: bool = False) -> Fragments:
    """Z-buffered coverage of pixel centres by triangles, on the device of ``screen``.

    Each triangle's pixel box is tested cell by cell (see the comment above :class:`_Triangles`); a
    pixel keeps the covering triangle with the largest depth, ties broken by the larger (image, face)
    position so that the result is deterministic.

    Args:
        screen: ``B x V x 3`` pixel u, v and depth (from :func:`project_to_pixels`).
        faces: ``F x 3`` vertex indices.
        image_size: S.
        cull_backfaces: drop triangles that face away from the camera (needs
            consistently outward-wound faces: counter-clockwise seen from outside).
    Returns:
        :class:`Fragments`.
    """
    return _rasterize(screen, faces, image_size, cull_backfaces)[0]


def interpolate(fragments: Fragments, faces: torch.Tensor, attribute: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of a per-vertex attribute ``B x V x C`` to ``B x S x S x C`` (0 off the mesh)."""
    batch, size = fragments.face_index.shape[:2]
    n_vertices, channels = attribute.shape[1:]
    covered = torch.nonzero(fragments.face_index.view(-1) >= 0).squeeze(1)  # only pixels on the mesh
    image = torch.div(covered, size * size, rounding_mode="floor")
    vertex = faces.to(attribute.device)[fragments.face_index.view(-1)[covered]] + (image * n_vertices)[:, None]
    values = attribute.reshape(-1, channels)[vertex]  # P x 3 x C
    out = attribute.new_zeros(batch * size * size, channels)
    out[covered] = (fragments.bary.view(-1, 3)[covered, :, None] * values).sum(1)
    return out.view(batch, size, size, channels)


def _lambert(normals, albedo, light_direction, ambient, diffuse) -> torch.Tensor:
    """:func:`shade` on aligned (or broadcastable) ``... x 3`` tensors."""
    normals = torch.nn.functional.normalize(normals, dim=-1)
    lambert = (normals * light_direction).sum(-1, keepdim=True).clamp_min(0)
    return (albedo * (ambient + diffuse * lambert)).clamp(0, 1)


def shade(normals: torch.Tensor, albedo: torch.Tensor, light_direction: torch.Tensor,
          ambient: torch.Tensor, diffuse: torch.Tensor) -> torch.Tensor:
    """Lambert shading per pixel.

    Args:
        normals: ``B x S x S x 3`` (need not be unit; they are normalised here).
        albedo: ``B x S x S x 3`` in [0, 1].
        light_direction: ``B x 3`` unit vectors towards the light, in camera space (+z to the viewer).
        ambient, diffuse: ``B x 3`` light colours.
    Returns:
        ``B x S x S x 3`` = albedo * (ambient + diffuse * max(0, n . l)), clamped to [0, 1].
    """
    return _lambert(normals, albedo, light_direction[:, None, None], ambient[:, None, None], diffuse[:, None, None])


def _shade_covered(covered: _Covered, faces: torch.Tensor, rows: torch.Tensor, vertex_offset: torch.Tensor | None,
                   light_direction: torch.Tensor, ambient: torch.Tensor, diffuse: torch.Tensor) -> torch.Tensor:
    """``P x 3`` lit colours of covered pixels: :func:`interpolate` and :func:`shade`, pixel by pixel.

    Args:
        covered: the pixels.
        faces: ``F x 3``; a pixel's corners are columns ``faces[face] + vertex_offset`` of ``rows``.
        rows: ``6 x N`` albedo r, g, b and normal x, y, z per vertex.
        vertex_offset: ``P`` (the first column of each pixel's image), or None.
        light_direction, ambient, diffuse: ``3`` (one image) or ``P x 3``.
    """
    corner = faces.index_select(0, covered.face)  # P x 3
    if vertex_offset is not None:
        corner += vertex_offset[:, None]
    colour = torch.empty(2, len(corner), 3, dtype=rows.dtype, device=rows.device)  # albedo, normal
    for k, row in enumerate(rows):
        weighted = row.index_select(0, corner.view(-1)).view(-1, 3).mul_(covered.bary)  # w_i x_i at the 3 corners
        torch.add(weighted[:, 0], weighted[:, 1], out=colour[k // 3, :, k % 3]).add_(weighted[:, 2])
    return _lambert(colour[1], colour[0], light_direction, ambient, diffuse)


@torch.no_grad()
def render(vertices: torch.Tensor, faces: torch.Tensor, camera: torch.Tensor, image_size: int,
           albedo: torch.Tensor, light_direction: torch.Tensor, ambient: torch.Tensor, diffuse: torch.Tensor,
           background: torch.Tensor) -> tuple[torch.Tensor, Fragments]:
    """Render lit, coloured meshes over backgrounds, on the device of ``vertices``.

    Only covered pixels are interpolated and shaded (the same per-pixel formulas as
    :func:`interpolate` and :func:`shade`, so the same bits), then written over a copy of the background.

    Args:
        vertices: ``B x V x 3`` posed meshes in FLAME space.
        faces: ``F x 3``, counter-clockwise seen from outside.
        camera: ``B x 3`` weak perspective (s, tx, ty).
        image_size: S.
        albedo: ``B x V x 3`` per-vertex colours in [0, 1].
        light_direction, ambient, diffuse: see :func:`shade`.
        background: ``B x 3 x S x S`` in [0, 1].
    Returns:
        images ``B x 3 x S x S`` in [0, 1], and the :class:`Fragments` (for visibility).
    """
    batch, n_vertices = vertices.shape[:2]
    size, per_image, device = image_size, image_size * image_size, vertices.device
    faces = faces.to(device)
    screen = torch.empty_like(vertices)
    rows = torch.empty(6, batch * n_vertices, dtype=albedo.dtype, device=device)  # attributes, vertex by vertex
    normals = vertex_normals(vertices, faces)
    for images in _image_blocks(batch, 6 * n_vertices, device):
        screen[images] = project_to_pixels(vertices[images], camera[images], size)
        vertex_range = slice(images.start * n_vertices, images.stop * n_vertices)
        rows[:3, vertex_range] = albedo[images].reshape(-1, 3).T
        rows[3:, vertex_range] = normals[images].reshape(-1, 3).T
    fragments, covered = _rasterize(screen, faces, size, cull_backfaces=True)
    out = torch.empty(background.shape, dtype=background.dtype, device=device)
    source, target, step = background.reshape(-1), out.view(-1), _limit(device, out.numel())
    for start in range(0, out.numel(), step):
        target[start:start + step].copy_(source[start:start + step])
    step = _limit(device, 3 * per_image * batch) // 3  # P x 3 elements per op
    for block in covered:
        for s in range(0, len(block.pixel), step):
            part = block._replace(pixel=block.pixel[s:s + step], face=block.face[s:s + step],
                                  bary=block.bary[s:s + step])
            if block.image is not None:  # one image: its own vertices, its light as a vector
                b = block.image
                lit = _shade_covered(part, faces, rows[:, b * n_vertices:(b + 1) * n_vertices], None,
                                     light_direction[b], ambient[b], diffuse[b])
                image_start = b * 3 * per_image
            else:  # several images: each pixel's image picks its vertices and light
                image = torch.div(part.pixel, per_image, rounding_mode="floor")
                lit = _shade_covered(part, faces, rows, image * n_vertices,
                                     *(x.index_select(0, image) for x in (light_direction, ambient, diffuse)))
                image_start = image * (3 * per_image)
            # Channel c of pixel j (flat image * S^2 + j) sits at 3 image S^2 + c S^2 + j of the output.
            index = part.pixel % per_image + image_start
            for channel in range(3):
                target.index_copy_(0, index + channel * per_image, lit[:, channel].to(out.dtype))
    return out, fragments
