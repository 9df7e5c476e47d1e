"""Analytic properties of the decoder, independent of any reference implementation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ringnet_lib import lbs, model_io, testing
from ringnet_lib.flame import FLAME
from ringnet_lib.params import JOINT_NAMES


@pytest.fixture(scope="module")
def flame64():
    return FLAME(testing.random_flame_model(300, seed=1), dtype=torch.float64)


@pytest.fixture(scope="module")
def flame_without_correctives():
    raw = testing.random_flame_dict(300, seed=2)
    raw["posedirs"] = np.zeros_like(raw["posedirs"])
    jaw = JOINT_NAMES.index("jaw")
    raw["weights"][::2, jaw] = 0.0  # half the vertices ignore the jaw
    raw["weights"] /= raw["weights"].sum(axis=1, keepdims=True)
    return FLAME(model_io.flame_model_from_dict(raw), dtype=torch.float64)


def test_rodrigues_matches_scipy():
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(size=(50, 3)) * 2.0, rng.normal(size=(5, 3)) * 1e-6, np.zeros((1, 3))])
    ours = lbs.batch_rodrigues(torch.tensor(vectors)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(vectors).as_matrix(), atol=1e-12)


def test_rodrigues_gradient_at_zero_is_finite_and_exact():
    rotation_vector = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    point = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    rotated = lbs.batch_rodrigues(rotation_vector)[0] @ point
    # d(R p)/dr at r = 0 is -[p]_x (the cross-product matrix of p).
    jacobian = torch.stack([torch.autograd.grad(rotated[i], rotation_vector, retain_graph=True)[0][0]
                            for i in range(3)])
    expected = -torch.tensor([[0, -0.5, -0.2], [0.5, 0, -0.3], [0.2, 0.3, 0]], dtype=torch.float64)
    torch.testing.assert_close(jacobian, expected)


def test_zero_parameters_give_the_template(flame64):
    out = flame64(pose=torch.zeros(2, 15, dtype=torch.float64))
    torch.testing.assert_close(out.vertices, flame64.v_template.expand(2, -1, -1), rtol=0, atol=1e-14)
    torch.testing.assert_close(out.joints[0], flame64.joint_template)


def test_global_rotation_rotates_every_vertex_about_the_root(flame64):
    axis_angle = torch.tensor([[0.3, -1.1, 0.4]], dtype=torch.float64)
    pose = torch.cat([axis_angle, torch.zeros(1, 12, dtype=torch.float64)], dim=1)
    out = flame64(pose=pose)
    rotation = torch.tensor(Rotation.from_rotvec(axis_angle[0].numpy()).as_matrix())
    root = flame64.joint_template[0]
    expected = (flame64.v_template - root) @ rotation.T + root
    torch.testing.assert_close(out.vertices[0], expected, rtol=0, atol=1e-12)


def test_jaw_rotation_moves_only_jaw_weighted_vertices(flame_without_correctives):
    flame = flame_without_correctives
    pose = torch.zeros(1, 15, dtype=torch.float64)
    jaw = JOINT_NAMES.index("jaw")
    pose[0, 3 * jaw] = 0.4
    moved = (flame(pose=pose).vertices[0] - flame.v_template).norm(dim=1)
    jaw_weight = flame.weights[:, jaw]
    assert moved[jaw_weight == 0].max().item() < 1e-14
    assert moved[jaw_weight > 0.5].min().item() > 0  # and the jaw-weighted ones do move


def test_translation_shifts_everything(flame64):
    translation = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    shape = torch.randn(1, 100, dtype=torch.float64)
    without, with_t = flame64(shape=shape), flame64(shape=shape, translation=translation)
    torch.testing.assert_close(with_t.vertices, without.vertices + translation[:, None])
    torch.testing.assert_close(with_t.joints, without.joints + translation[:, None])


def test_skinning_equals_per_vertex_matrix_product():
    rng = torch.Generator().manual_seed(0)
    vertices = torch.randn(3, 20, 3, generator=rng, dtype=torch.float64)
    transforms = torch.randn(3, 5, 3, 4, generator=rng, dtype=torch.float64)
    weights = torch.softmax(torch.randn(20, 5, generator=rng, dtype=torch.float64), dim=1)
    expected = torch.zeros_like(vertices)
    for b in range(3):
        for v in range(20):
            blended = sum(weights[v, j] * transforms[b, j] for j in range(5))
            expected[b, v] = blended[:, :3] @ vertices[b, v] + blended[:, 3]
    torch.testing.assert_close(lbs.skin_vertices(vertices, transforms, weights), expected)


def test_kinematic_chain_child_follows_parent():
    joints = torch.tensor([[[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 0], [-1, 1, 0]]], dtype=torch.float64)
    rotations = torch.eye(3, dtype=torch.float64).repeat(1, 5, 1, 1)
    rotations[0, 1] = lbs.batch_rodrigues(torch.tensor([[0.0, 0.0, np.pi / 2]], dtype=torch.float64))[0]
    posed, _ = lbs.kinematic_chain(rotations, joints, [-1, 0, 1, 1, 1])
    # A quarter turn about z at the neck (0, 1, 0) sends the eye at (1, 1, 0) to (0, 2, 0).
    torch.testing.assert_close(posed[0, 3], torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(posed[0, 2], torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


def test_blend_shapes_are_linear(flame64):
    shape_a, shape_b = torch.randn(1, 100, dtype=torch.float64), torch.randn(1, 100, dtype=torch.float64)
    template = flame64.v_template
    offset = lambda s: flame64(shape=s).vertices - template  # noqa: E731
    torch.testing.assert_close(offset(shape_a + 2 * shape_b), offset(shape_a) + 2 * offset(shape_b))


def test_wrong_parameter_sizes_raise(flame64):
    with pytest.raises(ValueError, match="shape must be B x 100"):
        flame64(shape=torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="pose must be B x 15"):
        flame64(shape=torch.zeros(2, 100, dtype=torch.float64), pose=torch.zeros(2, 6, dtype=torch.float64))


def test_skinning_returns_the_local_joint_rotations(flame64):
    """linear_blend_skinning gives (vertices, joints, rotations): each joint's own Rodrigues matrix."""
    shape, expression, pose = (torch.tensor(a) for a in testing.random_parameters(3, seed=8, dtype=np.float64))
    coefficients = torch.cat([shape, expression], dim=1)
    vertices, joints, rotations = lbs.linear_blend_skinning(
        coefficients, pose, flame64.v_template, flame64.directions, flame64.joint_template,
        flame64.joint_directions, flame64.parents, flame64.weights)
    expected = torch.tensor(Rotation.from_rotvec(pose.reshape(-1, 3).numpy()).as_matrix()).reshape(3, 5, 3, 3)
    torch.testing.assert_close(rotations, expected, rtol=0, atol=1e-12)
    out = flame64(shape=shape, expression=expression, pose=pose)
    torch.testing.assert_close(out.vertices, vertices, rtol=0, atol=0)
    torch.testing.assert_close(out.joints, joints, rtol=0, atol=0)
    torch.testing.assert_close(out.rotations, rotations, rtol=0, atol=0)
