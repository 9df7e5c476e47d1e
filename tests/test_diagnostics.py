"""Per-parameter errors and the landmark error budget of evaluation/diagnostics.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib.data.synthetic import SyntheticRingSet
from ringnet_lib.decoder import Decoder
from ringnet_lib.encoder import RingNetEncoder
from ringnet_lib.evaluation.diagnostics import (diagnose_encoder, diagnostics_figure, landmark_error_budget,
                                                parameter_errors)
from ringnet_lib.losses import landmark_loss
from ringnet_lib.params import CAMERA, EXPRESSION, N_PARAMS, POSE, SHAPE


@pytest.fixture(scope="module")
def decoder():
    return Decoder()


@pytest.fixture(scope="module")
def data():
    return SyntheticRingSet(n_identities=4, images_per_identity=3, ring_size=2, image_size=32, seed=7)


@pytest.fixture(scope="module")
def rendered(data, decoder):
    """Every pool image rendered, with its true parameters (what InMemoryRingSet held up front)."""
    return data.render_images(torch.arange(data.n_images), decoder)


def test_parameter_errors_match_numpy():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(41, N_PARAMS, generator=generator)
    predicted = truth + 0.3 * torch.randn(41, N_PARAMS, generator=generator)
    errors = parameter_errors(predicted, truth)
    t, p = truth.double().numpy(), predicted.double().numpy()
    pitch = POSE.start
    assert errors["pitch"]["model"] == pytest.approx(np.abs(p[:, pitch] - t[:, pitch]).mean())
    assert errors["pitch"]["constant"] == pytest.approx(np.abs(t[:, pitch] - np.median(t[:, pitch])).mean())
    shape_t = t[:, SHAPE.start:SHAPE.stop]
    assert errors["shape β"]["constant"] == pytest.approx(np.abs(shape_t - np.median(shape_t, 0)).mean())
    assert errors["camera scale s"]["ratio"] == pytest.approx(
        errors["camera scale s"]["model"] / errors["camera scale s"]["constant"])


def test_parameter_errors_of_perfect_and_constant_predictions():
    generator = torch.Generator().manual_seed(1)
    truth = torch.randn(31, N_PARAMS, generator=generator)  # odd N: the median is one of the samples
    assert all(row["model"] == 0 for row in parameter_errors(truth, truth).values())
    constant = truth.median(0).values.expand_as(truth)
    assert all(row["ratio"] == pytest.approx(1.0) for row in parameter_errors(constant, truth).values())
    truth[:, POSE.start + 2] = 0.0  # a scalar that never varies has no constant to beat: left out
    assert "roll" not in parameter_errors(truth + 0.1, truth)
    with pytest.raises(ValueError, match="differ"):
        parameter_errors(truth[:3], truth)


def test_rendered_truth_reproduces_the_target_landmarks(decoder, rendered):
    with torch.no_grad():
        projected = decoder(rendered["true_params"]).landmarks2d
    assert torch.allclose(projected, rendered["landmarks"][:, decoder.target_index], atol=1e-5)


def test_budget_swaps_exactly_the_named_groups(decoder, rendered):
    truth, landmarks, confidence = rendered["true_params"], rendered["landmarks"], rendered["confidence"]
    perfect = landmark_error_budget(decoder, truth, truth, landmarks, confidence)
    assert perfect.pop("mean shape, rest true") > 0.01  # the mean shape is not the truth
    assert max(perfect.values()) < 1e-5

    # Only the shape is wrong (the mean shape): swapping the shape in fixes everything,
    # swapping anything else changes nothing.
    mean_shape = truth.clone()
    mean_shape[:, SHAPE] = 0
    budget = landmark_error_budget(decoder, mean_shape, truth, landmarks, confidence)
    assert budget["prediction"] > 0.01
    assert budget["shape from the truth"] < 1e-5
    for name in ("camera from the truth", "pose from the truth", "expression from the truth",
                 "only shape predicted", "mean shape, rest true"):
        assert budget[name] == pytest.approx(budget["prediction"], rel=1e-5)

    # Only the camera and the expression are wrong.
    wrong = truth.clone()
    wrong[:, CAMERA.start] *= 1.1
    wrong[:, EXPRESSION] += 0.5
    budget = landmark_error_budget(decoder, wrong, truth, landmarks, confidence)
    assert budget["only shape predicted"] < 1e-5
    assert 0 < budget["camera from the truth"] < budget["prediction"]
    assert 0 < budget["expression from the truth"] < budget["prediction"]
    assert budget["pose from the truth"] == pytest.approx(budget["prediction"], rel=1e-5)


def test_diagnose_encoder_scores_what_the_encoder_predicts(decoder, data, rendered):
    torch.manual_seed(0)
    encoder = RingNetEncoder(trunk="resnet18", dropout=0.5)
    errors, budget = diagnose_encoder(encoder, data, decoder, n_images=5, batch=2)
    assert not encoder.training  # evaluated as at test time
    with torch.no_grad():
        predicted = encoder(rendered["images"][:5]).params
        expected = landmark_loss(decoder(predicted).landmarks2d, rendered["landmarks"][:5, decoder.target_index])
    assert budget["prediction"] == pytest.approx(float(expected), rel=1e-5)
    reference = parameter_errors(predicted, rendered["true_params"][:5])
    assert errors.keys() == reference.keys()
    for name, row in errors.items():  # batches of 2 vs one batch of 5: float rounding only
        assert row == pytest.approx(reference[name], rel=1e-5)
    figure = diagnostics_figure(errors, budget, image_size=32)
    assert len(figure.axes) == 2 and len(figure.axes[1].patches) == len(budget)
    with pytest.raises(TypeError, match="does not know the true parameters"):
        diagnose_encoder(encoder, object(), decoder)
    fresh = SyntheticRingSet(n_identities=None, images_per_identity=3, ring_size=2, image_size=32, n_rings=4)
    with pytest.raises(TypeError, match="does not know the true parameters"):  # no pool: no per-image truth
        diagnose_encoder(encoder, fresh, decoder)
