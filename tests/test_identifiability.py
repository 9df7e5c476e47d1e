"""What landmarks can tell about shape: the linear-Gaussian model, checked against finite differences and sampling."""
from __future__ import annotations

import math

import pytest
import torch

from ringnet_lib.camera import project_weak_perspective
from ringnet_lib.decoder import Decoder
from ringnet_lib.evaluation import identifiability as ident
from ringnet_lib.flame import FLAME
from ringnet_lib.landmarks import head_rotation, yaw_degrees


@pytest.fixture(scope="module")
def decoder():
    return Decoder(FLAME(dtype=torch.float64))


def test_shape_columns_of_the_jacobian_match_finite_differences(decoder):
    flame = decoder.flame
    jacobian, prior = ident.linear_landmark_model(decoder, yaws_deg=[20.0])
    # The linearisation's view: yaw +20 in landmarks.py's sign (head_rotation), read back as +20.
    pose15 = torch.zeros(1, 15, dtype=torch.float64)
    pose15[0, :3] = torch.tensor(head_rotation([20.0])[0])
    assert yaw_degrees(pose15).item() == pytest.approx(20.0, abs=1e-9)
    assert pose15[0, 1].item() == pytest.approx(-math.radians(20.0), abs=1e-12)
    camera = torch.tensor([[7.5, 0.0, 0.0]], dtype=torch.float64)

    def landmarks(shape):
        return project_weak_perspective(decoder.landmarks(flame(shape=shape, pose=pose15)), camera).reshape(-1)

    step = 1e-4
    for k in (0, 5, 40):
        delta = torch.zeros(1, flame.n_shape, dtype=torch.float64)
        delta[0, k] = step
        numeric = (landmarks(delta) - landmarks(-delta)) / (2 * step)
        assert torch.allclose(jacobian[:, k], numeric, atol=1e-8)
    assert prior.shape == (jacobian.shape[1],) and bool((prior[:flame.n_shape] == 1).all())


def test_the_posterior_error_is_what_sampling_the_model_gives(decoder):
    """Draw identities, nuisances and noise from the model; the posterior mean's error must match."""
    options = dict(yaws_deg=[0.0], expression_std=0.3)
    flame = decoder.flame
    info = ident.landmark_shape_information(decoder, landmark_sigma_px=2.0, image_size=64, **options)
    jacobian, prior_variance = ident.linear_landmark_model(decoder, **options)
    sigma = 2.0 * 2.0 / 64
    generator = torch.Generator().manual_seed(0)
    n = 4000
    unknowns = torch.randn(n, len(prior_variance), generator=generator, dtype=torch.float64) * prior_variance.sqrt()
    observed = unknowns @ jacobian.T + sigma * torch.randn(n, jacobian.shape[0], generator=generator,
                                                           dtype=torch.float64)
    precision = torch.diag(1 / prior_variance) + jacobian.T @ jacobian / sigma ** 2
    estimate = torch.linalg.solve(precision, (observed @ jacobian / sigma ** 2).T).T  # posterior means
    directions = ident.face_shape_directions(decoder)
    n_points = directions.shape[0] // 3
    shape = slice(0, flame.n_shape)
    sampled = math.sqrt(float((((estimate[:, shape] - unknowns[:, shape]) @ directions.T) ** 2).sum())
                        / (n * n_points)) * 1000
    mean_shape = math.sqrt(float(((unknowns[:, shape] @ directions.T) ** 2).sum()) / (n * n_points)) * 1000
    assert sampled == pytest.approx(info["posterior_mm"], rel=0.03)
    assert mean_shape == pytest.approx(info["prior_mm"], rel=0.03)


def test_more_views_and_sharper_landmarks_tell_more(decoder):
    blind = ident.landmark_shape_information(decoder, [0.0], landmark_sigma_px=1e4)
    one = ident.landmark_shape_information(decoder, [0.0], landmark_sigma_px=1.0)
    sharp = ident.landmark_shape_information(decoder, [0.0], landmark_sigma_px=0.1)
    ring = ident.landmark_shape_information(decoder, [-30.0, -15.0, 0.0, 15.0, 30.0], landmark_sigma_px=1.0)
    assert blind["ratio"] > 0.999
    assert ring["ratio"] < sharp["ratio"] < one["ratio"] < 1.0
    # Even noise-free landmarks of one image leave much of the face unknown.
    assert sharp["ratio"] > 0.4
    assert one["prior_mm"] == pytest.approx(ring["prior_mm"])
