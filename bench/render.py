"""Renderer speed: :func:`ringnet_lib.data.render.render` beside the renderer it replaced, in one run.

    python bench/render.py                          # 224 and 64 px, 32 grey heads, 2 threads, then the quick preset
    python bench/render.py --sizes 224 --repeats 9 --threads 1 --no-train

What is timed is what training renders: the grey heads of :func:`ringnet_lib.data.synthetic.render_grey_heads`
(posed default heads, 4,926 vertices and 9,840 faces each, half of them facing away, drawn as the
training data draws them), ``--images`` at a time, at each size. The baseline is
:func:`baseline_render` below, a verbatim copy of the renderer as it was (one scatter over every
bounding-box pixel of every triangle); the two are called alternately (so a busy machine slows
both alike) and the medians are compared. Reported per size: images/s (wall clock) and images per
CPU-second of each, the ratio new / old, whether the images are identical, and how far 224 px is
from the aim, >= 200 images/s on 2 cores. That is one call, on one thread; training on the CPU renders
in its loader's worker processes side by side, which ``bench/data_loading.py --data render`` measures.

Last, the quick preset in a fresh process (``python -m ringnet_lib.train --preset quick --max-steps 1
--no-tensorboard --eval-rings 0``): seconds until its progress bar appears (the loop has everything
built and starts its first step; aim <= 20 s) and until that step is done.

On a machine that other processes keep busy, torch's OpenMP threads spin while they wait for each
other, so every op big enough to be split over threads costs milliseconds: the old renderer (and
mesh.vertex_normals, which both call) then runs several times slower on two threads than on
one. The new one keeps its loops under torch's intra-op grain (``_SERIAL`` in render.py). Compare
``--threads 1``, the images per CPU-second, or ``OMP_WAIT_POLICY=PASSIVE`` to see the effect.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from ringnet_lib.camera import camera_looking_at
from ringnet_lib.data import render as new
from ringnet_lib.data.synthetic import (AMBIENT, DIFFUSE, GREY_ALBEDO, LIGHT_DIRECTION, draw_views)
from ringnet_lib.decoder import Decoder
from ringnet_lib.mesh import vertex_normals
from ringnet_lib.params import join_params

AIM_IMAGES_PER_S = 200  # at 224 px on 2 cores
AIM_FIRST_STEP_S = 20


# ---------------------------------------------------------------------------------------------
# BASELINE (the benchmark's reference, not used by the library): ringnet_lib/data/render.py's
# rasterize, interpolate, shade and render as they were before the batched rewrite, verbatim
# apart from the names. It makes the same images, bit for bit (checked below).
# ---------------------------------------------------------------------------------------------

def _baseline_edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of triangle (a, b, p); inputs ``... x 2``."""
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def baseline_rasterize(screen: torch.Tensor, faces: torch.Tensor, image_size: int,
                       cull_backfaces: bool = False) -> new.Fragments:
    """The old rasteriser: every bounding-box pixel of every triangle, then two scatter passes (CPU only)."""
    batch, size = screen.shape[0], image_size
    tri = screen[:, faces]  # B x F x 3(corner) x 3(u, v, depth)
    area = _baseline_edge(tri[:, :, 0, :2], tri[:, :, 1, :2], tri[:, :, 2, :2])  # B x F
    keep = area.abs() > 1e-12
    if cull_backfaces:
        keep &= area < 0
    lo = torch.ceil(tri[..., :2].amin(dim=2) - 0.5).clamp(0, size - 1)  # B x F x 2 first pixel index
    hi = torch.floor(tri[..., :2].amax(dim=2) - 0.5).clamp(-1, size - 1)  # last pixel index
    extent = (hi - lo + 1).clamp_min(0)
    count = (extent[..., 0] * extent[..., 1]).long() * keep
    batch_idx, face_idx = torch.nonzero(count, as_tuple=True)
    count = count[batch_idx, face_idx]
    width = extent[batch_idx, face_idx, 0].long()
    first = lo[batch_idx, face_idx].long()  # T x 2

    corners = tri[batch_idx, face_idx]  # T x 3 x 3
    a, b, c = corners[:, 0, :2], corners[:, 1, :2], corners[:, 2, :2]
    inv_area = 1.0 / area[batch_idx, face_idx]
    planes = torch.stack([
        -(c[:, 1] - b[:, 1]) * inv_area, (c[:, 0] - b[:, 0]) * inv_area,
        ((c[:, 1] - b[:, 1]) * b[:, 0] - (c[:, 0] - b[:, 0]) * b[:, 1]) * inv_area,
        -(a[:, 1] - c[:, 1]) * inv_area, (a[:, 0] - c[:, 0]) * inv_area,
        ((a[:, 1] - c[:, 1]) * c[:, 0] - (a[:, 0] - c[:, 0]) * c[:, 1]) * inv_area], dim=1)  # T x 6

    owner = torch.repeat_interleave(torch.arange(len(count)), count)  # N fragments -> triangle
    local = torch.arange(len(owner)) - (torch.cumsum(count, 0) - count)[owner]
    row_in_box = torch.div(local, width[owner], rounding_mode="floor")
    px = first[owner, 0] + local - row_in_box * width[owner]
    py = first[owner, 1] + row_in_box
    u, v = px.to(screen.dtype) + 0.5, py.to(screen.dtype) + 0.5  # pixel centres
    p = planes[owner]  # N x 6
    w0 = p[:, 0] * u + p[:, 1] * v + p[:, 2]
    w1 = p[:, 3] * u + p[:, 4] * v + p[:, 5]
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
    fragment = torch.nonzero(inside).squeeze(1)
    weights = torch.stack([w0[fragment], w1[fragment], w2[fragment]], dim=-1)
    owner = owner[fragment]
    depth = (weights * corners[owner, :, 2]).sum(-1)
    pixel = batch_idx[owner] * size * size + py[fragment] * size + px[fragment]

    n_pixels = batch * size * size
    zbuffer = torch.full((n_pixels,), float("-inf"), dtype=screen.dtype)
    zbuffer.scatter_reduce_(0, pixel, depth, reduce="amax")
    front = depth >= zbuffer[pixel]
    winner = torch.full((n_pixels,), -1, dtype=torch.long)
    winner.scatter_reduce_(0, pixel[front], torch.nonzero(front).squeeze(1), reduce="amax")
    covered = torch.nonzero(winner >= 0).squeeze(1)
    best = winner[covered]

    face_index = torch.full((n_pixels,), -1, dtype=torch.long)
    face_index[covered] = face_idx[owner[best]]
    bary = torch.zeros(n_pixels, 3, dtype=screen.dtype)
    bary[covered] = weights[best]
    return new.Fragments(face_index.view(batch, size, size), bary.view(batch, size, size, 3),
                         zbuffer.view(batch, size, size))


def baseline_interpolate(fragments: new.Fragments, faces: torch.Tensor, attribute: torch.Tensor) -> torch.Tensor:
    batch, size = fragments.face_index.shape[:2]
    channels = attribute.shape[-1]
    covered = torch.nonzero(fragments.face_index.view(-1) >= 0).squeeze(1)
    image_idx = torch.div(covered, size * size, rounding_mode="floor")
    corner_vertex = faces[fragments.face_index.view(-1)[covered]]  # P x 3
    values = attribute[image_idx[:, None], corner_vertex]  # P x 3 x C
    out = attribute.new_zeros(batch * size * size, channels)
    out[covered] = (fragments.bary.view(-1, 3)[covered, :, None] * values).sum(1)
    return out.view(batch, size, size, channels)


def baseline_shade(normals, albedo, light_direction, ambient, diffuse) -> torch.Tensor:
    normals = torch.nn.functional.normalize(normals, dim=-1)
    lambert = (normals * light_direction[:, None, None]).sum(-1, keepdim=True).clamp_min(0)
    return (albedo * (ambient[:, None, None] + diffuse[:, None, None] * lambert)).clamp(0, 1)


def baseline_render(vertices, faces, camera, image_size, albedo, light_direction, ambient, diffuse, background):
    """The old :func:`ringnet_lib.data.render.render` (``project_to_pixels`` is unchanged)."""
    screen = new.project_to_pixels(vertices, camera, image_size)
    fragments = baseline_rasterize(screen, faces, image_size, cull_backfaces=True)
    colour = baseline_interpolate(fragments, faces, torch.cat([albedo, vertex_normals(vertices, faces)], dim=-1))
    lit = baseline_shade(colour[..., 3:], colour[..., :3], light_direction, ambient, diffuse)
    mask = (fragments.face_index >= 0)[:, None]
    return torch.where(mask, lit.permute(0, 3, 1, 2), background), fragments


# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def grey_heads(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` posed default heads framed as the training data frames them: vertices, faces, camera."""
    decoder = Decoder()
    generator = torch.Generator().manual_seed(seed)
    views = draw_views(count, generator, expression_std=0.5, max_yaw_degrees=30.0)
    shape = torch.randn(count, 100, generator=generator)
    heads = decoder(join_params(torch.zeros(count, 3), views["true_pose"], shape, views["true_expression"]))
    camera = camera_looking_at(heads.landmarks3d, scale=views["camera_jitter"][:, 0])
    camera[:, 1:] += views["camera_jitter"][:, 1:]
    return heads.vertices, decoder.flame.faces, camera


def grey_arguments(vertices: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """albedo, light, ambient, diffuse, background as :func:`render_grey_heads` passes them."""
    n = len(vertices)
    light = torch.nn.functional.normalize(vertices.new_tensor(LIGHT_DIRECTION), dim=0).expand(n, 3)
    return (torch.full_like(vertices, GREY_ALBEDO), light, vertices.new_full((n, 3), AMBIENT),
            vertices.new_full((n, 3), DIFFUSE), vertices.new_zeros(n, 3, size, size))


def time_renderers(sizes: list[int], images: int, repeats: int) -> dict:
    """Wall and CPU seconds of both renderers, alternated, per size (after one untimed call each)."""
    vertices, faces, camera = grey_heads(images)
    results = {}
    for size in sizes:
        arguments = (vertices, faces, camera, size, *grey_arguments(vertices, size))
        first = {name: fn(*arguments)[0] for name, fn in (("old", baseline_render), ("new", new.render))}
        difference = (first["new"] - first["old"]).abs().max().item()
        times = {"old": [], "new": []}
        for _ in range(repeats):
            for name, fn in (("old", baseline_render), ("new", new.render)):
                wall, cpu = time.perf_counter(), time.process_time()
                fn(*arguments)
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        results[size] = {"difference": difference, **{
            name: (images / statistics.median(t[0] for t in ts), images / statistics.median(t[1] for t in ts))
            for name, ts in times.items()}}
    return results


def first_step_seconds() -> tuple[float | None, float | None, float, float]:
    """The quick preset in a fresh process: seconds until its first step starts (the progress bar
    appears) and ends (1/1), the whole run, and the child's CPU seconds."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ringnet_lib.train", "--preset", "quick", "--max-steps", "1",
                   "--no-tensorboard", "--eval-rings", "0", "--out-dir", out, "--overwrite"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen, started, finished = b"", None, None
        while chunk := os.read(process.stdout.fileno(), 4096):
            seen += chunk
            now = time.perf_counter() - start
            if started is None and b"train:" in seen:
                started = now
            if finished is None and b"1/1" in seen:
                finished = now
        if process.wait():
            raise SystemExit(f"the quick preset failed:\n{seen.decode(errors='replace')[-2000:]}")
        total = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return started, finished, total, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--images", type=int, default=32, help="images per render call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-train", action="store_true", help="skip the quick preset's first step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.images} grey heads per call, {args.threads} thread(s), median of {args.repeats} alternated calls; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for size, r in time_renderers(args.sizes, args.images, args.repeats).items():
        (old_wall, old_cpu), (new_wall, new_cpu) = r["old"], r["new"]
        same = "identical images" if r["difference"] == 0 else f"images differ by up to {r['difference']:.2g}"
        print(f"{size:4d} px: old {old_wall:6.1f} images/s ({old_cpu:6.1f} per CPU-s) | new {new_wall:6.1f} images/s "
              f"({new_cpu:6.1f} per CPU-s) | new/old {new_wall / old_wall:.2f} wall, {new_cpu / old_cpu:.2f} CPU "
              f"| {same}")
        if size == 224:
            print(f"      aim >= {AIM_IMAGES_PER_S} images/s on 2 cores: {new_wall:.0f} images/s here "
                  f"({100 * new_wall / AIM_IMAGES_PER_S:.0f} % of it), {1000 / new_cpu:.1f} CPU-ms per image; the "
                  f"renderer's loops run on one thread by design (render.py, _SERIAL), so an idle machine gives "
                  f"about its images per CPU-second on one thread (--threads 1), whatever its cores; training on the "
                  f"CPU renders in its loader's worker processes, one call each, side by side: "
                  f"python bench/data_loading.py --data render --sizes 224 --workers 2 measures that")
    if not args.no_train:
        started, finished, total, cpu = first_step_seconds()
        show = lambda s: "not seen" if s is None else f"{s:.1f} s"
        print(f"quick preset, fresh process: first step starts after {show(started)} (aim <= {AIM_FIRST_STEP_S} s), "
              f"done after {show(finished)}; whole run {total:.1f} s, {cpu:.1f} CPU-s; "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
