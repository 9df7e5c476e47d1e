"""RingNet's losses against brute-force loops and hand-computed cases."""
from __future__ import annotations

import itertools

import pytest
import torch

from ringnet_lib import losses


def brute_force_ring_loss(shapes: torch.Tensor, margin: float, include_self_pairs: bool = True) -> torch.Tensor:
    """The paper's formula with explicit loops over rings i and pairs j, k (last position = other identity)."""
    total = shapes.new_zeros(())
    n_rings, ring = shapes.shape[:2]
    for i in range(n_rings):
        negative = shapes[i, ring - 1]
        for j, k in itertools.product(range(ring - 1), repeat=2):
            if j == k and not include_self_pairs:
                continue
            positive_distance = (shapes[i, j] - shapes[i, k]).pow(2).sum()
            negative_distance = (shapes[i, j] - negative).pow(2).sum()
            total = total + torch.clamp(positive_distance - negative_distance + margin, min=0)
    return total


@pytest.mark.parametrize("ring", [2, 3, 6])
@pytest.mark.parametrize("include_self_pairs", [True, False])
def test_ring_loss_matches_the_loops(ring, include_self_pairs):
    generator = torch.Generator().manual_seed(ring)
    shapes = 0.15 * torch.randn(5, ring, 7, generator=generator, dtype=torch.float64)
    expected = brute_force_ring_loss(shapes, 0.5, include_self_pairs)
    got_sum = losses.ring_loss(shapes, 0.5, include_self_pairs, reduction="sum")
    got_mean = losses.ring_loss(shapes, 0.5, include_self_pairs)
    # the case must exercise active hinges (R = 2 without j = k has no pair at all)
    assert (expected > 0) == (ring > 2 or include_self_pairs)
    torch.testing.assert_close(got_sum, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_mean, expected / 5, rtol=1e-12, atol=1e-12)
    per_ring = losses.ring_loss(shapes, 0.5, include_self_pairs, reduction="none")
    assert per_ring.shape == (5,)


def test_ring_loss_hand_computed():
    # 1-d shapes: positives 0 and 2, negative 1. d01 = 4, d02 = 1, d12 = 1.
    # (j,k)=(0,0): max(0, 0-1+.5)=0; (0,1): 4-1+.5=3.5; (1,0): 3.5; (1,1): 0 -> 7.
    shapes = torch.tensor([[[0.0], [2.0], [1.0]]])
    assert losses.ring_loss(shapes).item() == pytest.approx(7.0)
    # Negative close to both positives: the j = k terms are active (0.5 - 0.25 each).
    shapes = torch.tensor([[[0.0], [0.0], [0.5]]])
    assert losses.ring_loss(shapes).item() == pytest.approx(4 * 0.25)
    assert losses.ring_loss(shapes, include_self_pairs=False).item() == pytest.approx(2 * 0.25)


def test_satisfied_margin_gives_zero_and_zero_gradient():
    # Positives identical, the negative 1 away (squared distance 1 > η = 0.5).
    shapes = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]], requires_grad=True)
    loss = losses.ring_loss(shapes)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(shapes.grad) == 0


def test_ring_loss_gradient_pulls_positives_together_and_pushes_the_negative_away():
    shapes = torch.tensor([[[0.0], [1.0], [1.2]]], requires_grad=True)  # positives 0, 1; negative 1.2
    losses.ring_loss(shapes).backward()
    step = -shapes.grad[0, :, 0]  # gradient descent direction
    assert step[0] > 0 and step[1] < 0  # the positives move towards each other... (0 up, 1 down)
    assert step[2] > 0  # ...and the negative moves away from them (upwards, they are below it)


def test_ring_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B x R x n"):
        losses.ring_loss(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="reduction"):
        losses.ring_loss(torch.zeros(1, 3, 2), reduction="max")


def test_landmark_loss_hand_computed_and_confidence():
    predicted = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    target = torch.tensor([[[0.5, -0.5], [1.0, 3.0]]])
    # residuals |dx|+|dy|: 1.0 and 2.0; mean over 2 landmarks -> 1.5
    assert losses.landmark_loss(predicted, target).item() == pytest.approx(1.5)
    # confidence 0 on the second: (1.0 * 1 + 0 * 2) / 2 landmarks
    assert losses.landmark_loss(predicted, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
    # any leading dims (B x R x L x 2)
    assert losses.landmark_loss(predicted[None], target[None], torch.ones(1, 1, 2)).item() == pytest.approx(1.5)


def test_landmark_loss_gradient_points_towards_the_target():
    predicted = torch.tensor([[[0.2, -0.3]]], requires_grad=True)
    losses.landmark_loss(predicted, torch.zeros(1, 1, 2), torch.tensor([[0.5]])).backward()
    torch.testing.assert_close(predicted.grad, torch.tensor([[[0.5, -0.5]]]))


def test_landmark_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        losses.landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 51, 2))
    with pytest.raises(ValueError, match="confidence"):
        losses.landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 68, 2), torch.ones(1, 51))


def test_regularisers_and_total():
    beta = torch.tensor([[1.0, 2.0], [0.0, 2.0]])  # squared norms 5 and 4 -> mean 4.5
    assert losses.squared_norm(beta).item() == pytest.approx(4.5)
    terms = {"consistency": torch.tensor(2.0), "landmarks": torch.tensor(0.5), "shape_norm": torch.tensor(100.0),
             "expression_norm": torch.tensor(10.0)}
    # paper's λ: 1 * 2 + 60 * 0.5 + 1e-4 * 100 + 1e-4 * 10
    assert losses.total_loss(terms).item() == pytest.approx(2 + 30 + 0.01 + 0.001)
    assert losses.LossWeights() == losses.LossWeights(1.0, 60.0, 1e-4, 1e-4)


def test_mean_and_swap_consistency_helpers():
    shapes = torch.tensor([[[1.0], [3.0], [5.0], [10.0]]])
    identity = torch.tensor([[7, 7, 7, 2]])
    torch.testing.assert_close(losses.mean_shapes(shapes, identity), torch.tensor([[[3.0], [3.0], [3.0], [10.0]]]))
    assert losses.swap_partner(identity).tolist() == [[1, 2, 0, 3]]  # cyclic within the identity, alone: itself
    torch.testing.assert_close(losses.swapped_shapes(shapes, identity), torch.tensor([[[3.0], [5.0], [1.0], [10.0]]]))
    # groups anywhere in the ring
    assert losses.swap_partner(torch.tensor([[1, 2, 1, 2]])).tolist() == [[2, 3, 0, 1]]
    assert losses.default_ring_identity(2, 3).tolist() == [[0, 0, 1], [0, 0, 1]]


def test_true_shape_mse_is_the_mean_squared_error_and_only_counts_when_weighted():
    predicted = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    truth = torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    # squared errors 1, 0, 4, 4 -> mean 2.25
    assert losses.true_shape_mse(predicted, truth).item() == pytest.approx(2.25)
    with pytest.raises(ValueError, match="true β"):
        losses.true_shape_mse(predicted, truth[:, :1])
    terms = {"consistency": torch.tensor(2.0), "landmarks": torch.tensor(0.5), "shape_norm": torch.tensor(100.0),
             "expression_norm": torch.tensor(10.0)}
    paper = losses.total_loss(terms).item()  # no true_shape_mse key needed at weight 0
    terms["true_shape_mse"] = torch.tensor(3.0)
    assert losses.total_loss(terms).item() == pytest.approx(paper)
    weighted = losses.LossWeights(true_shape_mse=0.5)
    assert losses.total_loss(terms, weighted).item() == pytest.approx(paper + 1.5)


@pytest.mark.parametrize("consistency", ["ring", "swap", "mean", "none"])
def test_ring_net_terms_are_the_named_losses_and_the_keys_of_the_weights(consistency):
    generator = torch.Generator().manual_seed(4)
    shape, expression = torch.randn(3, 4, 5, generator=generator), torch.randn(3, 4, 2, generator=generator)
    landmarks2d, target = torch.randn(3, 4, 6, 2, generator=generator), torch.randn(3, 4, 6, 2, generator=generator)
    confidence = torch.rand(3, 4, 6, generator=generator)
    swapped2d = torch.randn(3, 4, 6, 2, generator=generator)
    true_shape = torch.randn(3, 4, 5, generator=generator)
    terms = losses.ring_net_terms(shape, expression, landmarks2d, target, confidence, consistency, 0.3,
                                  swapped2d if consistency == "swap" else None)
    assert set(terms) == {"consistency", "landmarks", "shape_norm", "expression_norm"}
    expected_consistency = {"ring": losses.ring_loss(shape, 0.3),
                            "swap": losses.landmark_loss(swapped2d, target, confidence)}.get(consistency,
                                                                                             torch.tensor(0.0))
    torch.testing.assert_close(terms["consistency"], expected_consistency, rtol=0, atol=0)
    torch.testing.assert_close(terms["landmarks"], losses.landmark_loss(landmarks2d, target, confidence),
                               rtol=0, atol=0)
    torch.testing.assert_close(terms["shape_norm"], losses.squared_norm(shape), rtol=0, atol=0)
    torch.testing.assert_close(terms["expression_norm"], losses.squared_norm(expression), rtol=0, atol=0)
    # Every key is a weight's name: the total is Σ weight · term.
    weights = losses.LossWeights(2.0, 3.0, 5.0, 7.0, 11.0)
    with_truth = losses.ring_net_terms(shape, expression, landmarks2d, target, confidence, consistency, 0.3,
                                       swapped2d if consistency == "swap" else None, true_shape)
    torch.testing.assert_close(with_truth["true_shape_mse"], losses.true_shape_mse(shape, true_shape), rtol=0, atol=0)
    expected_total = (2 * terms["consistency"] + 3 * terms["landmarks"] + 5 * terms["shape_norm"]
                      + 7 * terms["expression_norm"] + 11 * with_truth["true_shape_mse"])
    torch.testing.assert_close(losses.total_loss(with_truth, weights), expected_total)
