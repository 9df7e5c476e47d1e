"""RingNet's losses, stateless: the ring (shape consistency) loss, the landmark loss, regularisers.

    total = λ_sc · L_sc + λ_proj · L_proj + λ_β ‖β‖² + λ_ψ ‖ψ‖²    (paper: λ = 1, 60, 1e-4, 1e-4)

Normalisation (chosen once, here, so that λ does not depend on batch size):

* ring loss: **summed** over the (R-1)² anchor/positive pairs of a ring, as the
  paper's Σ_{j,k}, then **averaged** over the B rings (the paper's Σ_i; use
  ``reduction="sum"`` for the literal sum).
* landmark loss: |Δx| + |Δy| weighted by the confidence, **averaged** over
  landmarks and images (HMR-style mean; a landmark with confidence 0 still
  counts in the denominator, so hiding landmarks does not inflate the others).
* regularisers: ‖β‖² and ‖ψ‖² **summed** over coefficients, **averaged** over images.

Ring layout: ``shapes`` is ``B x R x n``; positions ``0 .. R-2`` show one
identity, position ``R-1`` another (the paper's β_iR).

The consistency term is swappable for ablations (:data:`CONSISTENCY_MODES`):
``"ring"`` (the paper's), ``"swap"`` (DECA's shape swap within an identity),
``"mean"`` (each identity's shapes replaced by their mean before decoding),
``"none"``. ``"swap"`` and ``"mean"`` change which shapes are decoded; the
helpers here build those shapes, the training step decodes them.

One term is *not* RingNet's: :func:`true_shape_mse`, the error to the true β of
synthetic data, weighted by ``LossWeights.true_shape_mse`` (0 by default). RingNet has
no 3D labels; the term is a diagnostic, to measure what a trunk and a time budget
could learn of shape if the training signal were perfect.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RING_MARGIN = 0.5  # η in the paper
CONSISTENCY_MODES = ("ring", "swap", "mean", "none")


@dataclass(frozen=True)
class LossWeights:
    """The λ of the total loss, named as the terms they weigh; the paper's values by default."""

    consistency: float = 1.0  # λ_sc, the ring (shape consistency) loss
    landmarks: float = 60.0  # λ_proj, the landmark (projection) loss
    shape_norm: float = 1e-4  # λ_β, the regulariser ‖β‖²
    expression_norm: float = 1e-4  # λ_ψ, the regulariser ‖ψ‖²
    true_shape_mse: float = 0.0  # weight of true_shape_mse: a diagnostic on synthetic data, not RingNet's (0)


def pairwise_squared_distances(shapes: torch.Tensor) -> torch.Tensor:
    """``B x R x n`` -> ``B x R x R``: ‖β_ij − β_ik‖², exact (no ‖a‖²+‖b‖²−2ab cancellation)."""
    difference = shapes[:, :, None, :] - shapes[:, None, :, :]  # B x R x R x n
    return difference.pow(2).sum(dim=-1)


def ring_loss(shapes: torch.Tensor, margin: float = RING_MARGIN, include_self_pairs: bool = True,
              reduction: str = "mean") -> torch.Tensor:
    """The paper's shape consistency loss, vectorised over rings and pairs.

    L_sc = Σ_i Σ_{j,k=1..R-1} max(0, ‖β_ij − β_ik‖² − ‖β_ij − β_iR‖² + η)

    ``j = k`` is included by default because the paper's sums run over all
    ``j, k``; those terms read ``max(0, η − ‖β_ij − β_iR‖²)``: each anchor
    pushes the other identity at least √η away even when all its positives
    already agree. ``include_self_pairs=False`` drops those R-1 terms, keeping
    the (R-1)(R-2) pairs with j != k.

    Args:
        shapes: ``B x R x n``; positions ``0..R-2`` one identity, ``R-1`` another.
        margin: η.
        include_self_pairs: keep the ``j = k`` terms.
        reduction: ``"mean"`` over rings (default), ``"sum"`` (the paper's Σ_i) or ``"none"`` (``B``).
    Returns:
        scalar (or ``B``).
    """
    if shapes.ndim != 3 or shapes.shape[1] < 2:
        raise ValueError(f"shapes must be B x R x n with R >= 2, got {tuple(shapes.shape)}")
    ring = shapes.shape[1]
    distances = pairwise_squared_distances(shapes)  # B x R x R
    positive = distances[:, :-1, :-1]  # B x x: ‖β_ij − β_ik‖²
    negative = distances[:, :-1, -1:]  # B x x 1: ‖β_ij − β_iR‖², broadcast over k
    terms = torch.relu(positive - negative + margin)
    if not include_self_pairs:
        off_diagonal = ~torch.eye(ring - 1, dtype=torch.bool, device=shapes.device)
        terms = terms * off_diagonal
    per_ring = terms.sum(dim=(1, 2))
    return _reduce(per_ring, reduction)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor,
                  confidence: torch.Tensor | None = None) -> torch.Tensor:
    """Confidence-weighted L1 between projected and given 2D landmarks (the paper's L_proj).

    Args:
        predicted: ``... x L x 2`` (e.g. ``B x 68 x 2``), normalised image coordinates.
        target: same shape.
        confidence: ``... x L`` weights in [0, 1]; all ones when omitted.
    Returns:
        scalar: mean over landmarks and images of ``confidence * (|Δx| + |Δy|)``.
    """
    if predicted.shape != target.shape or predicted.shape[-1] != 2:
        raise ValueError(f"predicted and target must both be ... x L x 2, got {tuple(predicted.shape)} "
                         f"and {tuple(target.shape)}")
    residual = (predicted - target).abs().sum(dim=-1)  # ... x L
    if confidence is not None:
        if confidence.shape != residual.shape:
            raise ValueError(f"confidence must be {tuple(residual.shape)}, got {tuple(confidence.shape)}")
        residual = confidence * residual
    return residual.mean()


def squared_norm(coefficients: torch.Tensor) -> torch.Tensor:
    """‖β‖² or ‖ψ‖²: ``... x n`` -> scalar, summed over coefficients, averaged over the rest."""
    return coefficients.pow(2).sum(dim=-1).mean()


def same_identity(identity: torch.Tensor) -> torch.Tensor:
    """``B x R`` identity labels -> ``B x R x R`` boolean: same person."""
    return identity[:, :, None] == identity[:, None, :]


def default_ring_identity(batch: int, ring: int, device=None) -> torch.Tensor:
    """``B x R`` labels of the paper's layout: 0 for positions ``0..R-2``, 1 for the last."""
    identity = torch.zeros(batch, ring, dtype=torch.long, device=device)
    identity[:, -1] = 1
    return identity


def mean_shapes(shapes: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Each shape replaced by the mean of its identity's shapes within the ring.

    Args:
        shapes: ``B x R x n``.
        identity: ``B x R`` labels.
    Returns:
        ``B x R x n``.
    """
    groups = same_identity(identity).to(shapes.dtype)  # B x R x R
    return groups @ shapes / groups.sum(dim=-1, keepdim=True)


def swap_partner(identity: torch.Tensor) -> torch.Tensor:
    """For every ring position, the next position (cyclically) with the same identity.

    Args:
        identity: ``B x R`` labels.
    Returns:
        ``B x R`` long indices into the ring; a position whose identity occurs
        once is its own partner.
    """
    ring = identity.shape[1]
    positions = torch.arange(ring, device=identity.device)
    # Cyclic distance from r to r' (1 .. R-1 for others, R for itself), infinite across identities.
    step = (positions[None, :] - positions[:, None] - 1) % ring + 1  # R x R
    step = step.expand(identity.shape[0], -1, -1).to(torch.float32)
    step = torch.where(same_identity(identity), step, torch.full_like(step, float("inf")))
    return step.argmin(dim=-1)


def swapped_shapes(shapes: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """DECA's shape consistency: every image takes another same-identity image's shape.

    Args:
        shapes: ``B x R x n``.
        identity: ``B x R`` labels.
    Returns:
        ``B x R x n``: ``shapes[b, swap_partner(identity)[b, r]]``.
    """
    partner = swap_partner(identity)  # B x R
    return torch.gather(shapes, 1, partner[..., None].expand(-1, -1, shapes.shape[-1]))


def true_shape_mse(shapes: torch.Tensor, true_shapes: torch.Tensor) -> torch.Tensor:
    """Mean squared error to the true β, per coefficient: ``mean((β − β_true)²)``.

    Not RingNet's (it has no 3D labels): an upper-bound diagnostic for synthetic data.

    Args:
        shapes: ``... x n`` predicted β.
        true_shapes: ``... x n`` the data's β, same shape.
    Returns:
        scalar.
    """
    if shapes.shape != true_shapes.shape:
        raise ValueError(f"predicted β {tuple(shapes.shape)} and true β {tuple(true_shapes.shape)} differ")
    return (shapes - true_shapes).pow(2).mean()


def ring_net_terms(shape: torch.Tensor, expression: torch.Tensor, landmarks2d: torch.Tensor, target: torch.Tensor,
                   confidence: torch.Tensor, consistency: str = "ring", margin: float = RING_MARGIN,
                   swapped_landmarks2d: torch.Tensor | None = None,
                   true_shape: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every loss term of one batch of rings, by name (the keys of :class:`LossWeights`).

    Args:
        shape: ``B x R x 100`` predicted β; expression: ``B x R x 50`` predicted ψ.
        landmarks2d: ``B x R x L x 2`` decoded landmarks; target: the same, given; confidence: ``B x R x L``.
        consistency: one of :data:`CONSISTENCY_MODES` ("mean" decodes with :func:`mean_shapes`
            before this, so its term here is the landmark loss; "swap" gives ``swapped_landmarks2d``).
        margin: η of the ring loss.
        swapped_landmarks2d: ``B x R x L x 2`` decoded with :func:`swapped_shapes` ("swap" only).
        true_shape: ``B x R x 100`` the data's β, to add the ``true_shape_mse`` diagnostic.
    Returns:
        ``{"consistency", "landmarks", "shape_norm", "expression_norm"}`` (+ ``"true_shape_mse"``), scalars.
    """
    if consistency == "ring":
        consistency_term = ring_loss(shape, margin)
    elif consistency == "swap":
        consistency_term = landmark_loss(swapped_landmarks2d, target, confidence)
    else:  # "mean" (its effect is in the decoded landmarks) and "none"
        consistency_term = shape.new_zeros(())
    terms = {"consistency": consistency_term, "landmarks": landmark_loss(landmarks2d, target, confidence),
             "shape_norm": squared_norm(shape), "expression_norm": squared_norm(expression)}
    if true_shape is not None:
        terms["true_shape_mse"] = true_shape_mse(shape, true_shape.to(shape.dtype))
    return terms


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights = LossWeights()) -> torch.Tensor:
    """Σ λ_name · term_name over the terms given: λ_sc·L_sc + λ_proj·L_proj + λ_β‖β‖² + λ_ψ‖ψ‖²
    (+ the true-β diagnostic when present). Keys are :class:`LossWeights`' field names."""
    return sum(getattr(weights, name) * value for name, value in terms.items())
