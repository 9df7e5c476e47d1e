"""Exact point-to-mesh distances: the hierarchy search and the ICP tracker against brute force.

Brute force is :func:`closest_point_barycentrics` (Ericson, torch, float64) on every (point, triangle)
pair; the search must find the same minimum to 1e-9 m (it finds it to rounding, ~1e-16).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib.decoder import Decoder
from ringnet_lib.evaluation import mesh_index, now
from ringnet_lib.evaluation.geometry import closest_point_barycentrics
from ringnet_lib.evaluation.mesh_index import MeshIndex, MeshTracker, closest_points_on_mesh, point_to_mesh_distance
from ringnet_lib.evaluation.now import refine_alignment
from ringnet_lib.flame import FLAME

torch.set_num_threads(1)


def brute_force(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 2 ** 20):
    """Distance to every triangle, then the minimum: ``N`` distances, ``N x F`` all of them (float64)."""
    triangles = vertices.double()[faces.long()]
    points = points.double()
    rows = []
    for part in points.split(max(1, chunk // len(triangles))):
        weights = closest_point_barycentrics(part[:, None], triangles[None])  # n x F x 3
        closest = (weights[..., None] * triangles[None]).sum(-2)
        rows.append((closest - part[:, None]).norm(dim=-1))
    every = torch.cat(rows)
    return every.min(1).values, every


def check_exact(result, points, vertices, faces, tolerance=1e-9):
    """Distances equal brute force; closest points, faces and barycentrics agree with each other."""
    best, every = brute_force(points, vertices, faces)
    assert (result.distances.double() - best).abs().max() <= tolerance
    # The returned face is a closest face, and its barycentrics give the returned point.
    on_face = every.gather(1, result.face_index[:, None])[:, 0]
    assert (on_face - best).abs().max() <= tolerance
    triangles = vertices.double()[faces.long()][result.face_index]
    from_weights = (result.barycentrics.double()[..., None] * triangles).sum(1)
    assert (from_weights - result.closest_points.double()).norm(dim=-1).max() <= tolerance
    assert ((result.closest_points.double() - points.double()).norm(dim=-1) - result.distances.double()).abs().max() \
        <= tolerance
    assert (result.barycentrics >= -1e-12).all() and torch.allclose(result.barycentrics.sum(1).double(),
                                                                     torch.ones(len(points), dtype=torch.float64))
    # Where the nearest face is unique, it is the one returned.
    second = every.topk(2, dim=1, largest=False).values[:, 1] if every.shape[1] > 1 else best + 1
    unique = second - best > 1e-9
    assert torch.equal(result.face_index[unique], every.argmin(1)[unique])
    return best


def random_soup(seed: int, n_faces: int = 300, n_vertices: int = 150):
    """Random vertices and faces: long thin, overlapping, crossing triangles of all sizes."""
    generator = torch.Generator().manual_seed(seed)
    vertices = torch.randn(n_vertices, 3, generator=generator, dtype=torch.float64)
    vertices *= torch.exp(torch.randn(n_vertices, 1, generator=generator, dtype=torch.float64))
    faces = torch.stack([torch.randperm(n_vertices, generator=generator)[:3] for _ in range(n_faces)])
    return vertices, faces


def points_around(vertices, n, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    picked = vertices[torch.randint(len(vertices), (n,), generator=generator)]
    return picked + scale * torch.randn(n, 3, generator=generator, dtype=torch.float64)


@pytest.fixture(scope="module")
def head():
    decoder = Decoder(FLAME(dtype=torch.float64))
    with torch.no_grad():
        vertices = decoder.neutral(torch.randn(1, 100, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64)).vertices[0]
    return vertices, decoder.flame.faces


# ------------------------------------------------------------------ one search
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_meshes_match_brute_force(seed):
    vertices, faces = random_soup(seed)
    points = torch.cat([points_around(vertices, 300, 0.3, seed), points_around(vertices, 100, 3.0, seed + 7)])
    check_exact(closest_points_on_mesh(points, vertices, faces), points, vertices, faces, tolerance=1e-12)


def test_degenerate_triangles_match_brute_force():
    vertices, faces = random_soup(3, n_faces=120)
    vertices = torch.cat([vertices, torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 3, 3]],
                                                 dtype=torch.float64)])
    n = len(vertices)
    degenerate = torch.tensor([[n - 4, n - 3, n - 2],   # collinear
                               [n - 4, n - 4, n - 2],   # repeated corner: a segment
                               [n - 1, n - 1, n - 1],   # a point
                               [n - 2, n - 4, n - 3],   # collinear, another order
                               [0, 0, 1]])
    faces = torch.cat([faces, degenerate])
    points = torch.cat([points_around(vertices[-4:], 200, 0.5, 4), vertices[-4:],
                        torch.tensor([[1.5, 0.0, 0.0], [2.5, 0.1, 0.0], [3.0, 3.0, 3.1]], dtype=torch.float64)])
    result = closest_points_on_mesh(points, vertices, faces)
    check_exact(result, points, vertices, faces, tolerance=1e-12)
    assert float(result.distances[-3]) == 0.0  # inside the collinear triangle's segment


def test_slivers_match_brute_force():
    """Triangles from 1e-3 to 1e-9 as wide as long: near the degenerate threshold both tests agree."""
    generator = torch.Generator().manual_seed(18)
    corners = []
    for thin in (1e-3, 1e-5, 1e-6, 1e-7, 3e-8, 1e-9):
        a = 0.1 * torch.randn(20, 3, generator=generator, dtype=torch.float64)
        along = torch.nn.functional.normalize(torch.randn(20, 3, generator=generator, dtype=torch.float64), dim=1)
        across = torch.linalg.cross(along, torch.randn(20, 3, generator=generator, dtype=torch.float64))
        across = torch.nn.functional.normalize(across, dim=1)
        t = 2 * torch.rand(20, 1, generator=generator, dtype=torch.float64) - 0.5
        corners.append(torch.stack([a, a + 0.01 * along, a + 0.01 * (t * along + thin * across)], 1))
    vertices = torch.cat(corners).reshape(-1, 3)
    faces = torch.arange(len(vertices)).reshape(-1, 3)
    points = points_around(vertices, 300, 0.003, 19)
    check_exact(closest_points_on_mesh(points, vertices, faces), points, vertices, faces, tolerance=1e-12)


def test_a_mesh_of_degenerate_triangles_only():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 3, 3], [0, 0, 2]])
    points = points_around(vertices, 100, 1.0, 5)
    check_exact(closest_points_on_mesh(points, vertices, faces), points, vertices, faces, tolerance=1e-12)


def test_points_on_vertices_edges_and_faces(head):
    vertices, faces = head
    triangles = vertices[faces.long()]
    generator = torch.Generator().manual_seed(6)
    pick = torch.randint(len(faces), (150,), generator=generator)
    weights = torch.rand(150, 3, generator=generator, dtype=torch.float64)
    weights /= weights.sum(1, keepdim=True)
    inside = (weights[..., None] * triangles[pick]).sum(1)
    on_edge = 0.5 * (triangles[pick, 0] + triangles[pick, 1])
    on_vertex = vertices[torch.randint(len(vertices), (100,), generator=generator)]
    points = torch.cat([inside, on_edge, on_vertex])
    result = closest_points_on_mesh(points, vertices, faces)
    assert result.distances.max() < 1e-15  # metres: the points are on the surface
    check_exact(result, points, vertices, faces)


def test_head_in_metres_matches_brute_force(head):
    vertices, faces = head
    generator = torch.Generator().manual_seed(7)
    near = vertices[torch.randint(len(vertices), (150,), generator=generator)]
    offset = torch.randn(150, 3, generator=generator, dtype=torch.float64)
    offset *= 0.03 * torch.rand(150, 1, generator=generator, dtype=torch.float64) / offset.norm(dim=1, keepdim=True)
    check_exact(closest_points_on_mesh(near + offset, vertices, faces), near + offset, vertices, faces)


def test_far_points_and_a_small_memory_budget(head):
    vertices, faces = head
    generator = torch.Generator().manual_seed(8)
    direction = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    far = direction / direction.norm(dim=1, keepdim=True) * torch.logspace(0, 3, 40, dtype=torch.float64)[:, None]
    near = points_around(vertices, 60, 0.005, 9)
    points = torch.cat([far, near])
    result = closest_points_on_mesh(points, vertices, faces)
    check_exact(result, points, vertices, faces)
    # A budget of a few pairs splits every frontier: the same answer (up to ties between faces
    # sharing the closest vertex or edge, whose distances differ in the last bit).
    small = closest_points_on_mesh(points, vertices, faces, pair_budget=7)
    assert (small.distances - result.distances).abs().max() <= 1e-15
    assert (small.closest_points - result.closest_points).abs().max() <= 1e-15
    assert torch.equal(point_to_mesh_distance(points, vertices, faces), result.distances)


def test_one_triangle_and_float32():
    triangle = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0]])
    faces = torch.tensor([[0, 1, 2]])
    points = torch.tensor([[0.5, 0.5, 3.0], [3.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
    result = closest_points_on_mesh(points, triangle, faces)
    assert result.distances.dtype == torch.float32 and result.face_index.dtype == torch.long
    expected = torch.tensor([[0.5, 0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert torch.allclose(result.closest_points, expected, atol=1e-7)
    assert torch.allclose(result.distances, (points - expected).norm(dim=1))


def test_empty_points_and_bad_input(head):
    vertices, faces = head
    empty = closest_points_on_mesh(torch.zeros(0, 3, dtype=torch.float64), vertices, faces)
    assert empty.distances.shape == (0,) and empty.closest_points.shape == (0, 3)
    with pytest.raises(ValueError, match="N x 3"):
        closest_points_on_mesh(torch.zeros(5, 2), vertices, faces)
    with pytest.raises(ValueError, match="non-empty F x 3"):
        closest_points_on_mesh(vertices[:5], vertices, faces[:0])
    with pytest.raises(ValueError, match="NaN"):
        closest_points_on_mesh(torch.full((2, 3), float("nan")), vertices, faces)


def test_gradients_flow_to_points_and_vertices():
    vertices, faces = random_soup(10, n_faces=50)
    vertices.requires_grad_(True)
    points = points_around(vertices.detach(), 20, 0.5, 10).requires_grad_(True)
    result = closest_points_on_mesh(points, vertices, faces)
    result.distances.sum().backward()
    direction = (points - result.closest_points).detach()
    direction /= direction.norm(dim=1, keepdim=True)
    assert torch.allclose(points.grad, direction, atol=1e-9)  # d|p - x|/dp for a fixed closest feature
    assert vertices.grad is not None and torch.isfinite(vertices.grad).all()


# ------------------------------------------------------------------ the tracker (many queries of moved points)
@pytest.mark.parametrize("step", [1e-5, 1e-3, 2e-2])
def test_tracker_stays_exact_under_moves(head, step):
    vertices, faces = head
    index = MeshIndex(vertices, faces)
    tracker = MeshTracker(index)
    points = points_around(vertices, 400, 0.004, 11)
    generator = torch.Generator().manual_seed(12)
    for call in range(4):
        result = tracker.closest_points(points)
        fresh = index.closest_points(points)
        assert (result.distances - fresh.distances).abs().max() <= 1e-15
        assert (result.closest_points - fresh.closest_points).norm(dim=1).max() <= 1e-15
        if call in (0, 3):
            check_exact(result, points, vertices, faces)
        # A rigid move plus a per-point jitter, as between ICP proposals.
        angle = step * torch.randn(3, generator=generator, dtype=torch.float64)
        rotation = torch.linalg.matrix_exp(torch.tensor([[0, -angle[2], angle[1]], [angle[2], 0, -angle[0]],
                                                         [-angle[1], angle[0], 0]], dtype=torch.float64))
        points = points @ rotation.T + step * 0.1 * torch.randn(3, generator=generator, dtype=torch.float64) \
            + step * 0.01 * torch.randn(points.shape, generator=generator, dtype=torch.float64)
    if step == 1e-5:
        assert tracker.searched < 2 * len(points)  # tiny moves: most answers are certified, not searched


def test_tracker_on_a_new_point_set_and_degenerate_triangles():
    vertices, faces = random_soup(13, n_faces=100)
    faces = torch.cat([faces, torch.tensor([[0, 0, 1], [2, 2, 2]])])
    tracker = MeshTracker(MeshIndex(vertices, faces))
    for n, seed in ((50, 0), (50, 1), (80, 2)):  # another point set, then another size
        points = points_around(vertices, n, 0.4, seed)
        check_exact(tracker.closest_points(points), points, vertices, faces, tolerance=1e-12)


def test_icp_with_the_tracker_equals_icp_with_fresh_searches(head, monkeypatch):
    vertices, faces = head
    generator = torch.Generator().manual_seed(14)
    scan = points_around(vertices[vertices[:, 2] > 0], 3000, 0.001, 15)
    small_rotation = torch.linalg.matrix_exp(torch.tensor([[0, -0.03, 0.02], [0.03, 0, -0.01], [-0.02, 0.01, 0]],
                                                          dtype=torch.float64))
    moved = 1.02 * vertices @ small_rotation.T + 0.003 * torch.randn(3, generator=generator, dtype=torch.float64)
    tracked = refine_alignment(scan, moved, faces, iterations=6)

    class FreshSearch:  # what the refinement did before: a full exact search at every proposal
        def __init__(self, index):
            self.index = index

        def closest_points(self, points):
            return self.index.closest_points(points)

    monkeypatch.setattr(now, "MeshTracker", FreshSearch)
    fresh = refine_alignment(scan, moved, faces, iterations=6)
    assert len(tracked.history) == len(fresh.history) > 2
    assert np.allclose(tracked.rms_history, fresh.rms_history, rtol=1e-12, atol=0)
    assert (tracked.distances - fresh.distances).abs().max() <= 1e-15
    for a, b in zip(tracked.transform, fresh.transform):
        assert torch.allclose(a, b, rtol=0, atol=1e-13)
    # And the final distances are the exact ones on the refined mesh.
    best, _ = brute_force(scan[::15], tracked.transform.apply(moved), faces)
    assert (tracked.distances[::15] - best).abs().max() <= 1e-9


def test_descent_never_prunes_what_could_be_closest():
    """The float32 descent rounds boxes outwards and the radius up: with the exact distance as the
    radius, the closest triangle's box is never pruned, even for points far from the origin."""
    vertices, faces = random_soup(16, n_faces=200)
    for shift in (0.0, 1e3, 1e6):
        moved = vertices + shift
        index = MeshIndex(moved, faces)
        points = points_around(moved, 200, 0.2, 17)
        best, every = brute_force(points, moved, faces)
        q = points.numpy()
        found = {}
        for pt, face in index._descend(np.arange(len(q)), q, best.numpy() ** 2, mesh_index.PAIR_BUDGET):
            for i, f in zip(pt.tolist(), face.tolist()):
                found.setdefault(i, set()).add(f)
        closest = every.argmin(1).tolist()
        assert all(closest[i] in found.get(i, ()) for i in range(len(q)))
