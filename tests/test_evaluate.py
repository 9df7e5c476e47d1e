"""The NoW metric: point-to-triangle distances, alignment, ICP, crop, benchmark, export, bad input."""
from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
import trimesh

from ringnet_lib.decoder import Decoder
from ringnet_lib.evaluation import (NOW_IBUG68, NOW_STATIC_INDEX, Similarity, align_by_landmarks,
                                    closest_points_on_mesh, closest_points_on_triangles, crop_points, crop_sphere,
                                    cumulative_error_curve, evaluate_shapes, heldout_betas, make_scan,
                                    neutral_meshes, now_errors, now_landmarks_from_ibug68, now_prediction_paths,
                                    refine_alignment, results_rows, results_table, summarize_errors, umeyama,
                                    write_now_prediction)
from ringnet_lib.evaluation.report import write_report
from ringnet_lib.flame import FLAME

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def decoder():
    return Decoder(FLAME(dtype=torch.float64))


@pytest.fixture(scope="module")
def flame(decoder):
    return decoder.flame


def random_rotation(generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


def random_mesh(seed: int, n_vertices: int = 200, n_faces: int = 400):
    rng = np.random.default_rng(seed)
    vertices = rng.normal(size=(n_vertices, 3))
    faces = np.stack([rng.choice(n_vertices, 3, replace=False) for _ in range(n_faces)])
    return vertices, faces


# ------------------------------------------------------------------ point to triangle
TRIANGLE = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("point, expected", [
    ([0.5, 0.5, 3.0], [0.5, 0.5, 0.0]),      # above the interior: straight down
    ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),      # on edge AB
    ([1.0, -1.0, 0.5], [1.0, 0.0, 0.0]),     # outside edge AB
    ([2.0, 2.0, 0.0], [1.0, 1.0, 0.0]),      # outside the hypotenuse BC
    ([-1.0, 1.0, 0.0], [0.0, 1.0, 0.0]),     # outside edge AC
    ([0.0, 2.0, 0.0], [0.0, 2.0, 0.0]),      # at vertex C
    ([-1.0, -1.0, 1.0], [0.0, 0.0, 0.0]),    # vertex region A
    ([3.0, -1.0, 0.0], [2.0, 0.0, 0.0]),     # vertex region B
    ([-0.5, 3.0, -2.0], [0.0, 2.0, 0.0]),    # vertex region C
])
def test_closest_point_on_triangle_analytic(point, expected):
    got = closest_points_on_triangles(torch.tensor(point, dtype=torch.float64), TRIANGLE)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_degenerate_triangles_are_segments():
    segment = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    collinear = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    point = torch.tensor([1.5, 1.0, 0.0], dtype=torch.float64)
    for triangle in (segment, collinear):
        assert torch.allclose(closest_points_on_triangles(point, triangle),
                              torch.tensor([1.5, 0.0, 0.0], dtype=torch.float64), atol=1e-12)


def test_pairwise_matches_trimesh_triangles():
    rng = np.random.default_rng(1)
    triangles, points = rng.normal(size=(5000, 3, 3)), 1.5 * rng.normal(size=(5000, 3))
    ours = closest_points_on_triangles(torch.tensor(points), torch.tensor(triangles)).numpy()
    theirs = trimesh.triangles.closest_point(triangles, points)
    assert np.abs(ours - theirs).max() < 1e-10


@pytest.mark.parametrize("seed", [0, 1])
def test_mesh_distance_matches_brute_force_and_trimesh(seed):
    vertices, faces = random_mesh(seed)
    points = 1.2 * np.random.default_rng(seed + 10).normal(size=(300, 3))
    result = closest_points_on_mesh(torch.tensor(points), torch.tensor(vertices), torch.tensor(faces))
    # Brute force over all (point, triangle) pairs with trimesh's exact per-triangle routine.
    tri = np.repeat(vertices[faces][None], len(points), 0).reshape(-1, 3, 3)
    pairs = np.repeat(points, len(faces), 0)
    brute = np.linalg.norm(trimesh.triangles.closest_point(tri, pairs) - pairs, axis=1).reshape(len(points), -1)
    assert np.abs(result.distances.numpy() - brute.min(1)).max() < 1e-10
    assert np.allclose(np.linalg.norm(result.closest_points.numpy() - points, axis=1), result.distances.numpy())
    pytest.importorskip("rtree")  # trimesh.proximity needs it
    _, distance, _ = trimesh.proximity.closest_point(trimesh.Trimesh(vertices, faces, process=False), points)
    assert np.abs(result.distances.numpy() - distance).max() < 1e-10


def test_head_mesh_distance_matches_trimesh_in_mm(flame):
    """On the default head, in mm: trimesh's routines use absolute tolerances (about 1e-12), which bite on
    metre-sized coordinates of mm-sized triangles (we saw 0.4 um errors there), so compare in mm."""
    vertices = 1000.0 * flame(shape=heldout_betas(1).double()).vertices[0]
    generator = torch.Generator().manual_seed(1)
    points = vertices[::25] + 2.0 * torch.randn(len(vertices[::25]), 3, generator=generator, dtype=torch.float64)
    ours = closest_points_on_mesh(points, vertices, flame.faces).distances.numpy()
    tri, p = vertices[flame.faces].numpy(), points.numpy()
    pairs = np.repeat(p, len(tri), 0)
    brute = np.linalg.norm(trimesh.triangles.closest_point(np.tile(tri, (len(p), 1, 1)), pairs) - pairs, axis=1)
    assert np.abs(ours - brute.reshape(len(p), -1).min(1)).max() < 1e-9
    pytest.importorskip("rtree")
    _, theirs, _ = trimesh.proximity.closest_point(trimesh.Trimesh(vertices.numpy(), flame.faces.numpy(),
                                                                   process=False), p)
    assert np.abs(ours - theirs).max() < 1e-9


def test_small_memory_budget_gives_the_same_answer(flame):
    vertices = flame(shape=torch.zeros(1, 100, dtype=torch.float64)).vertices[0]
    points = vertices[::20] + 0.004 * torch.randn(len(vertices[::20]), 3, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64)
    big = closest_points_on_mesh(points, vertices, flame.faces)
    small = closest_points_on_mesh(points, vertices, flame.faces, pair_budget=5000)
    assert torch.allclose(big.distances, small.distances, atol=1e-14)


# ------------------------------------------------------------------ alignment
def test_umeyama_recovers_a_similarity():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    truth = Similarity(torch.tensor(1.7, dtype=torch.float64), random_rotation(generator),
                       torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64))
    fit = umeyama(source, truth.apply(source))
    assert abs(float(fit.scale) - 1.7) < 1e-12
    assert torch.allclose(fit.rotation, truth.rotation, atol=1e-12)
    assert torch.allclose(fit.translation, truth.translation, atol=1e-12)
    assert torch.linalg.det(fit.rotation) > 0
    rigid = umeyama(source, truth.apply(source), with_scale=False)
    assert float(rigid.scale) == 1.0


def test_umeyama_never_reflects():
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(20, 3, generator=generator, dtype=torch.float64)
    mirrored = source * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.linalg.det(umeyama(source, mirrored).rotation) > 0


def test_landmark_alignment_recovers_a_known_transform(flame):
    out = flame(shape=heldout_betas(1).double())
    landmarks = out.static_landmarks[0, list(NOW_STATIC_INDEX)]
    generator = torch.Generator().manual_seed(2)
    truth = Similarity(torch.tensor(1000.0, dtype=torch.float64), random_rotation(generator),  # m -> mm scan
                       torch.tensor([10.0, -20.0, 300.0], dtype=torch.float64))
    fit = align_by_landmarks(landmarks, truth.apply(landmarks))
    moved = fit.apply(out.vertices[0])
    assert (moved - truth.apply(out.vertices[0])).norm(dim=-1).max() < 1e-8  # mm
    assert abs(float(fit.scale) / 1000.0 - 1) < 1e-12


def test_icp_reduces_the_error_from_a_perturbed_start(decoder, flame):
    vertices, landmarks = neutral_meshes(decoder, heldout_betas(1).double())
    scan = make_scan(vertices[0], flame.faces, landmarks[0], n_points=500, seed=0)
    generator = torch.Generator().manual_seed(3)
    small_rotation = torch.linalg.matrix_exp(torch.tensor([[0, -0.04, 0.02], [0.04, 0, -0.03], [-0.02, 0.03, 0]],
                                                          dtype=torch.float64))
    start = Similarity(torch.tensor(1.02, dtype=torch.float64), small_rotation,
                       0.003 * torch.randn(3, generator=generator, dtype=torch.float64))
    perturbed = start.apply(vertices[0])
    icp = refine_alignment(scan.points, perturbed, flame.faces, iterations=6)
    assert icp.history[0] > 1e-3 and icp.history[-1] < 0.01 * icp.history[0]  # metres: > 1 mm to < 10 um
    assert all(b < a for a, b in zip(icp.rms_history, icp.rms_history[1:]))  # the objective never increases
    # The recovered transform undoes the perturbation.
    assert (icp.transform.apply(perturbed) - vertices[0]).norm(dim=-1).max() < 1e-4
    rigid_start = Similarity(torch.ones((), dtype=torch.float64), small_rotation, start.translation)
    rigid = refine_alignment(scan.points, rigid_start.apply(vertices[0]), flame.faces, iterations=6, with_scale=False)
    assert float(rigid.transform.scale) == 1.0 and rigid.history[-1] < 0.01 * rigid.history[0]
    # The full metric on the exact mesh with noisy landmarks: the refinement removes the landmark error.
    noisy = landmarks[0] + 0.002 * torch.randn(7, 3, generator=generator, dtype=torch.float64)
    result = now_errors(scan.points, landmarks[0], vertices[0], flame.faces, noisy, icp_iterations=6, crop=False)
    assert float(result.distances_landmarks_only.mean()) > 3e-4
    assert float(result.distances.mean()) < 0.05 * float(result.distances_landmarks_only.mean())


# ------------------------------------------------------------------ crop, statistics
def test_crop_sphere_follows_now():
    landmarks = torch.tensor([[-45.0, 30, 0], [-15, 30, 0], [15, 30, 0], [45, 30, 0],
                              [0, -20, 10], [-25, -45, 0], [25, -45, 0]], dtype=torch.float64)
    sphere = crop_sphere(landmarks)
    bridge = torch.tensor([0.0, 30, 0], dtype=torch.float64)
    nose = bridge - landmarks[4]
    assert torch.allclose(sphere.centre, landmarks[4] + 0.3 * nose)
    assert math.isclose(float(sphere.radius), 1.4 * (90.0 + float(nose.norm())) / 2)


def test_now_landmarks_use_the_documented_ibug_points():
    assert NOW_IBUG68 == (37, 40, 43, 46, 34, 49, 55)
    landmarks68 = torch.arange(68, dtype=torch.float64)[:, None].expand(68, 3)
    assert now_landmarks_from_ibug68(landmarks68)[:, 0].tolist() == [36, 39, 42, 45, 33, 48, 54]
    assert [k - 18 for k in NOW_IBUG68] == list(NOW_STATIC_INDEX)


def test_statistics_and_cumulative_curve():
    errors = np.array([0.5, 1.0, 1.5, 4.0])
    stats = summarize_errors(errors)
    assert stats["median_mm"] == 1.25 and stats["mean_mm"] == 1.75 and math.isclose(stats["std_mm"], errors.std())
    thresholds, fraction = cumulative_error_curve(errors, max_mm=5, steps=11)
    assert fraction[0] == 0 and fraction[-1] == 1 and np.all(np.diff(fraction) >= 0)
    assert fraction[list(thresholds).index(1.0)] == 0.5


# ------------------------------------------------------------------ bad input
def test_bad_input_gives_clear_errors(decoder, flame):
    vertices, landmarks = neutral_meshes(decoder, torch.zeros(1, 100, dtype=torch.float64))
    broken = vertices[0].clone()
    broken[5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        now_errors(vertices[0], landmarks[0], broken, flame.faces, landmarks[0])
    with pytest.raises(ValueError, match="7 x 3.*NOW_STATIC_INDEX"):
        now_errors(vertices[0], landmarks[0], vertices[0], flame.faces, torch.zeros(51, 3))
    with pytest.raises(ValueError, match="holds none"):
        crop_points(vertices[0] + 10.0, landmarks[0])
    with pytest.raises(ValueError, match="same N x n_shape"):
        evaluate_shapes(torch.zeros(2, 100), torch.zeros(3, 100), decoder)


# ------------------------------------------------------------------ benchmark and export
def test_benchmark_discriminates_and_tabulates(decoder, tmp_path):
    truth = heldout_betas(2).double()
    perturbed = truth + 0.2 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    kwargs = dict(n_points=400, icp_iterations=4)
    exact = evaluate_shapes(truth, truth, decoder, **kwargs)
    mean_shape = evaluate_shapes(torch.zeros_like(truth), truth, decoder, **kwargs)
    close = evaluate_shapes(perturbed, truth, decoder, **kwargs)
    assert exact["pooled"]["mean_mm"] < 1e-6
    assert close["pooled"]["mean_mm"] < mean_shape["pooled"]["mean_mm"]
    assert close["pooled"]["median_mm"] < mean_shape["pooled"]["median_mm"]
    assert len(mean_shape["per_identity"]) == 2 and mean_shape["pooled"]["n_points"] == 800
    results = {"mean shape": mean_shape, "perturbed truth": close}
    table = results_table(results)
    assert table.count("\n") == 3 and "| mean shape |" in table
    # The CSV is results_rows written by the report writer (write_results_csv's replacement).
    import matplotlib.pyplot as plt
    data = {name: result["pooled"] for name, result in results.items()}
    paths = write_report(tmp_path, "now", table, results_rows(results), data, plt.figure())
    rows = paths["csv"].read_text().strip().splitlines()
    assert rows[0].startswith("method,identity,median_mm") and len(rows) == 1 + 2 * 3


def test_export_writes_nows_layout(decoder, flame, tmp_path):
    vertices, landmarks = neutral_meshes(decoder, torch.zeros(1, 100, dtype=torch.float64))
    line = "FaMoS_180424_03335_TA/multiview_neutral/IMG_0041.jpg"
    obj_path, npy_path = write_now_prediction(tmp_path, line, vertices[0], flame.faces, landmarks[0])
    assert obj_path == tmp_path / "FaMoS_180424_03335_TA" / "multiview_neutral" / "IMG_0041.obj"
    assert (obj_path, npy_path) == now_prediction_paths(tmp_path, line)
    assert np.load(npy_path).shape == (7, 3)
    mesh = trimesh.load(obj_path, process=False)
    assert np.allclose(mesh.vertices, vertices[0].numpy(), atol=1e-8)
    assert np.array_equal(mesh.faces, flame.faces.numpy())
    with pytest.raises(ValueError, match="7 x 3"):
        write_now_prediction(tmp_path, line, vertices[0], flame.faces, landmarks[0][:5])


def test_documented_arguments_exist_in_the_evaluation_package():
    from ringnet_lib import alignment, face_region  # moved out of evaluation.geometry / evaluation.now
    from ringnet_lib.evaluation import benchmark, export, geometry, now
    for module in (benchmark, export, geometry, now, alignment, face_region):
        for _, function in inspect.getmembers(module, inspect.isfunction):
            doc = inspect.getdoc(function) or ""
            if function.__module__ != module.__name__ or "Args:" not in doc:
                continue
            block = doc.split("Args:")[1].split("Returns:")[0]
            documented = set(re.findall(r"^    (\w+)(?: \(.*?\))?:", block, re.MULTILINE))
            assert documented <= set(inspect.signature(function).parameters), function.__name__
