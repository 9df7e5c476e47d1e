"""Point-to-mesh distance: ringnet_lib against trimesh (and any other library installed), one run.

    python bench/point_to_mesh.py [--repeats N] [--points N] [--check-points N] [--previous FILE]

1. 100k points on and up to 3 cm off the default head (9,840 faces), float64: the median
   time of ours (``closest_points_on_mesh``) and of trimesh's ``proximity.closest_point``,
   interleaved, their ratio (target: ours/trimesh <= 1.0), and each one's largest error
   against brute force (every triangle, Ericson's test in float64) on a subset.
   libigl (``igl``), point-cloud-utils and open3d are timed too when they import (they are
   not dependencies; ``--site DIR`` adds a folder they were installed into).
   ``--previous FILE`` also times an older ``evaluation/geometry.py`` (e.g. from
   ``git show HEAD~1:ringnet_lib/evaluation/geometry.py``) on ``--previous-points`` points.
2. The NoW metric (``now_errors``: landmark alignment + ICP) on a 100k-point synthetic scan
   (``make_scan``), median time (target <= 2 s), beside one trimesh query of the same points
   on the same mesh, interleaved.

Times are wall-clock medians, then the process's CPU seconds: the machine is shared, and a
busy neighbour stretches wall time 2-10x, so compare the side-by-side ratios first.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types

import numpy as np
import torch
import trimesh

from ringnet_lib.decoder import Decoder
from ringnet_lib.evaluation import heldout_betas, make_scan, neutral_meshes, now_errors
from ringnet_lib.evaluation.geometry import closest_point_barycentrics
from ringnet_lib.evaluation.mesh_index import closest_points_on_mesh


def timed(function) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = function()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def brute_force(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, chunk: int = 2 ** 21) -> np.ndarray:
    """The minimum over all triangles of the exact point-triangle distance (float64)."""
    triangles = torch.from_numpy(vertices[faces])
    out = []
    for part in torch.from_numpy(points).split(max(1, chunk // len(triangles))):
        weights = closest_point_barycentrics(part[:, None], triangles[None])
        closest = (weights[..., None] * triangles[None]).sum(-2)
        out.append((closest - part[:, None]).norm(dim=-1).min(1).values)
    return torch.cat(out).numpy()


def head_and_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default head (a random identity, metres) and n points: 30 % on it, 70 % up to 3 cm off."""
    torch.manual_seed(seed)
    decoder = Decoder()
    with torch.no_grad():
        vertices = decoder.neutral(torch.randn(1, 100)).vertices[0].double()
    faces = decoder.flame.faces.long()
    generator = torch.Generator().manual_seed(seed + 1)
    triangles = vertices[faces]
    which = torch.randint(len(faces), (n,), generator=generator)
    weights = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    points = (weights[:, :, None] / weights.sum(1)[:, None, None] * triangles[which]).sum(1)
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    off = 0.03 * torch.rand(n, generator=generator, dtype=torch.float64) * (torch.rand(n, generator=generator) > 0.3)
    points = points + direction / direction.norm(dim=1, keepdim=True) * off[:, None]
    return vertices.numpy(), faces.numpy(), points.numpy()


def other_libraries() -> dict:
    """Closest-point functions of libraries that import here: name -> f(points, vertices, faces) -> distances."""
    found = {}
    if importlib.util.find_spec("igl"):
        import igl
        found["libigl point_mesh_squared_distance"] = \
            lambda p, v, f: np.sqrt(igl.point_mesh_squared_distance(p, v, f.astype(np.int64))[0])
    if importlib.util.find_spec("point_cloud_utils"):
        import point_cloud_utils as pcu
        found["point-cloud-utils closest_points_on_mesh"] = \
            lambda p, v, f: pcu.closest_points_on_mesh(p, v, f.astype(np.int32))[0]
    if importlib.util.find_spec("open3d"):
        try:
            import open3d as o3d
        except ImportError as error:  # open3d imports dash and more at import time
            print(f"open3d installed but does not import: {error}")
        else:
            def open3d_distances(p, v, f):
                scene = o3d.t.geometry.RaycastingScene()  # float32 only
                scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
                closest = scene.compute_closest_points(o3d.core.Tensor(p.astype(np.float32)))["points"].numpy()
                return np.linalg.norm(closest.astype(np.float64) - p, axis=1)
            found["open3d RaycastingScene (float32)"] = open3d_distances
    return found


def load_previous(path: str):
    """An older ``evaluation/geometry.py`` as a module of the package (its relative imports work)."""
    module = types.ModuleType("ringnet_lib.evaluation._previous_geometry")
    module.__package__ = "ringnet_lib.evaluation"
    with open(path) as file:
        exec(compile(file.read(), path, "exec"), module.__dict__)
    return module


def point_to_mesh(args) -> None:
    vertices, faces, points = head_and_points(args.points)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    ours = lambda p: closest_points_on_mesh(torch.from_numpy(p), torch.from_numpy(vertices),
                                            torch.from_numpy(faces)).distances.numpy()
    theirs = lambda p: trimesh.proximity.closest_point(mesh, p)[1]
    candidates = {"ours (ringnet_lib)": ours, "trimesh proximity.closest_point": theirs}
    candidates.update({name: (lambda f: lambda p: f(p, vertices, faces))(f) for name, f in other_libraries().items()})
    print(f"\n1. {len(points):,} points (30 % on the surface, 70 % up to 3 cm off) on the default head "
          f"({len(faces):,} faces), float64, {args.repeats} interleaved repeats")
    check = points[np.random.default_rng(0).choice(len(points), min(args.check_points, len(points)), replace=False)]
    start = time.perf_counter()
    reference = brute_force(check, vertices, faces)
    print(f"   brute force on {len(check):,} of them: {time.perf_counter() - start:.1f} s")
    theirs(points[:100])  # trimesh builds its rtree on the first call
    walls, cpus = {name: [] for name in candidates}, {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, function in candidates.items():
            wall, cpu, _ = timed(lambda: function(points))
            walls[name].append(wall)
            cpus[name].append(cpu)
    base_wall, base_cpu = (statistics.median(x["trimesh proximity.closest_point"]) for x in (walls, cpus))
    print(f"   {'':42} {'wall s':>8} {'/trimesh':>9} {'cpu s':>7} {'/trimesh':>9} {'max error vs brute force':>25}")
    for name, function in candidates.items():
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        error = np.abs(function(check) - reference).max()
        print(f"   {name:42} {wall:8.2f} {wall / base_wall:9.3f} {cpu:7.2f} {cpu / base_cpu:9.3f} {error:22.2e} m")
    if args.previous:
        previous = load_previous(args.previous)
        run = lambda p: previous.closest_points_on_mesh(torch.from_numpy(p), torch.from_numpy(vertices),
                                                        torch.from_numpy(faces)).distances.numpy()
        part = points[:args.previous_points]
        wall, cpu, _ = timed(lambda: run(part))
        scale = len(points) / len(part)
        error = np.abs(run(check) - reference).max()
        print(f"   {'previous: ' + args.previous[-32:]:42} {wall * scale:8.2f} {wall * scale / base_wall:9.3f} "
              f"{cpu * scale:7.2f} {cpu * scale / base_cpu:9.3f} {error:22.2e} m  (timed on {len(part):,} points, "
              f"x{scale:.0f})")


def now_metric(args) -> None:
    decoder = Decoder()
    betas = heldout_betas(2).double()
    true_v, true_l = neutral_meshes(decoder, betas[:1])
    pred_v, pred_l = neutral_meshes(decoder, 0.5 * betas[1:])
    true_v, true_l, pred_v, pred_l = true_v[0].double(), true_l[0].double(), pred_v[0].double(), pred_l[0].double()
    faces = decoder.flame.faces
    scan = make_scan(true_v, faces, true_l, n_points=args.points, seed=0)
    result = now_errors(scan.points, scan.landmarks, pred_v, faces, pred_l, crop=False)
    # trimesh's one query: the same scan points on the same (final, aligned) predicted mesh.
    mesh = trimesh.Trimesh(result.aligned_vertices.numpy(), faces.numpy(), process=False)
    trimesh.proximity.closest_point(mesh, scan.points[:100].numpy())
    ours_wall, ours_cpu, theirs_wall, theirs_cpu = [], [], [], []
    for _ in range(args.repeats):
        wall, cpu, _ = timed(lambda: now_errors(scan.points, scan.landmarks, pred_v, faces, pred_l, crop=False))
        ours_wall.append(wall)
        ours_cpu.append(cpu)
        wall, cpu, _ = timed(lambda: trimesh.proximity.closest_point(mesh, scan.points.numpy()))
        theirs_wall.append(wall)
        theirs_cpu.append(cpu)
    a, b, c, d = (statistics.median(x) for x in (ours_wall, theirs_wall, ours_cpu, theirs_cpu))
    print(f"\n2. NoW metric (landmarks + ICP, {len(result.icp_history) - 1} accepted steps) on a "
          f"{len(scan.points):,}-point synthetic scan, float64, {args.repeats} interleaved repeats")
    print(f"   now_errors: {a:.2f} s wall ({c:.2f} s cpu), target <= 2 s; one trimesh closest_point of the same "
          f"points: {b:.2f} s wall ({d:.2f} s cpu); ratio {a / b:.2f} (cpu {c / d:.2f})")
    print(f"   mean error {float(result.distances.mean()) * 1000:.4f} mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--check-points", type=int, default=2000)
    parser.add_argument("--site", action="append", default=[], help="a folder to import other libraries from")
    parser.add_argument("--previous", help="an older evaluation/geometry.py to time as well")
    parser.add_argument("--previous-points", type=int, default=5000)
    parser.add_argument("--skip-now", action="store_true")
    args = parser.parse_args()
    sys.path.extend(args.site)
    torch.set_num_threads(1)  # every candidate runs on one core: numpy, rtree and ours alike
    print(f"torch {torch.__version__}, numpy {np.__version__}, trimesh {trimesh.__version__}, one thread")
    point_to_mesh(args)
    if not args.skip_now:
        now_metric(args)


if __name__ == "__main__":
    main()
