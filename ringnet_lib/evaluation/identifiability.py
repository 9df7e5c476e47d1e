"""How much face shape can 2D landmarks tell? A linear-Gaussian answer.

RingNet learns shape from 68 landmarks only. Some shape directions move no
landmark (cheek depth seen from the front), and others move landmarks the way a
change of expression, pose or camera would. This module measures what is left:
linearise the projected landmarks around the mean head at given yaws,

    y = J [β, ψ_v, pose_v, camera_v] + noise,    noise ~ N(0, σ² I),

put the training data's priors on every unknown, and the posterior covariance
of β is ``(P⁻¹ + JᵀJ / σ²)⁻¹`` restricted to β. Its effect on the face (NoW's crop
of the mean head, with the 7 similarity directions removed: weak perspective
cannot see scale, and NoW aligns them away) is the expected shape error of the
*best possible* predictor from those landmarks, next to the mean shape's.

    info = landmark_shape_information(Decoder(), yaws_deg=[0.0], landmark_sigma_px=1.0, image_size=64)
    info["ratio"]    # ~0.7: one image's landmarks remove about half of the shape variance, no more

The ratio is of root-mean-square vertex errors (mm); NoW's median scan-to-mesh
error behaves alike (fitting exact landmarks of one image gave 0.66 of the mean
shape's median here).
"""
from __future__ import annotations

import math

import torch

from ..alignment import similarity_basis
from ..decoder import Decoder
from ..face_region import METRES_TO_MM, crop_mask
from ..landmarks import head_rotation
from ..params import join_params
from .benchmark import neutral_meshes


def linear_landmark_model(decoder: Decoder, yaws_deg=(0.0,), camera_scale: float = 7.5, expression_std: float = 0.5,
                          rotation_std: float = 0.3, jaw_std: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The linearised landmarks of one identity seen at ``yaws_deg``, and the priors of the unknowns.

    Unknowns, in order: β (n_shape), then per view ψ (n_expression), global rotation (3), jaw (3),
    camera (s, tx, ty). Linearised at zero β, ψ and jaw, rotation = the yaw, t = 0.

    Returns:
        ``jacobian`` (2·L·n_views) x n_unknowns (float64, normalised image units per unit), and
        ``prior_variance`` n_unknowns (camera: 1 for s, 0.1² for t).
    """
    flame = decoder.flame
    n_views, n_shape, n_expression = len(yaws_deg), flame.n_shape, flame.n_expression
    dtype = flame.v_template.dtype

    def landmarks(shape, expression, rotation, jaw, camera):
        params = join_params(camera, torch.cat([rotation, jaw], -1), shape.expand(n_views, -1), expression)
        return decoder(params).landmarks2d.reshape(-1)  # what training projects

    rotation = torch.tensor(head_rotation(list(yaws_deg)), dtype=dtype)  # the yaws, in landmarks.py's sign
    point = (torch.zeros(1, n_shape, dtype=dtype), torch.zeros(n_views, n_expression, dtype=dtype), rotation,
             torch.zeros(n_views, 3, dtype=dtype),
             torch.tensor([[camera_scale, 0.0, 0.0]], dtype=dtype).repeat(n_views, 1))
    jacobians = torch.autograd.functional.jacobian(landmarks, point)
    jacobian = torch.cat([j.reshape(j.shape[0], -1) for j in jacobians], 1).double()
    prior_variance = torch.cat([
        torch.ones(n_shape), torch.full((n_views * n_expression,), expression_std ** 2),
        torch.full((n_views * 3,), rotation_std ** 2), torch.full((n_views * 3,), jaw_std ** 2),
        torch.tensor([1.0, 0.1 ** 2, 0.1 ** 2]).repeat(n_views)]).double().clamp_min(1e-12)
    return jacobian, prior_variance


def face_shape_directions(decoder: Decoder) -> torch.Tensor:
    """``3P x n_shape`` (float64): the shape directions on NoW's face crop of the mean head, minus
    what a similarity transform can do (P face vertices, rows ordered vertex-major, xyz)."""
    flame = decoder.flame
    vertices, seven = neutral_meshes(decoder, torch.zeros(1, flame.n_shape, dtype=flame.v_template.dtype))
    face = crop_mask(vertices[0], seven[0])
    directions = flame.shape_directions[face].double().reshape(-1, flame.n_shape)
    basis = similarity_basis(vertices[0][face].double())
    return directions - basis @ (basis.T @ directions)


def landmark_shape_information(decoder: Decoder, yaws_deg=(0.0,), landmark_sigma_px: float = 1.0,
                               image_size: int = 64, **model_options) -> dict:
    """Expected face-shape error of the best predictor from the landmarks of views at ``yaws_deg``.

    Args:
        decoder: the decoder (the algebra runs in float64).
        yaws_deg: one view per yaw, all of the same identity (several: what a ring sees).
        landmark_sigma_px: landmark noise (a detector's, or a network's precision), pixels of ``image_size``.
        image_size: S; normalised coordinates span 2 over S pixels.
        model_options: :func:`linear_landmark_model`'s (camera_scale, expression_std, rotation_std,
            jaw_std); ``expression_std`` near 0 means neutral faces.
    Returns:
        ``{"prior_mm", "posterior_mm", "ratio", "n_views"}``: RMS face-region vertex errors (mm)
        of the mean shape and of the posterior mean, and their ratio.
    """
    jacobian, prior_variance = linear_landmark_model(decoder, yaws_deg, **model_options)
    flame = decoder.flame
    sigma = landmark_sigma_px * 2.0 / image_size
    precision = torch.diag(1 / prior_variance) + jacobian.T @ jacobian / sigma ** 2
    shape_covariance = torch.linalg.inv(precision)[:flame.n_shape, :flame.n_shape]
    directions = face_shape_directions(decoder)
    n_points = directions.shape[0] // 3
    prior = math.sqrt(float((directions ** 2).sum()) / n_points) * METRES_TO_MM
    posterior = math.sqrt(float(torch.trace(directions @ shape_covariance @ directions.T)) / n_points) * METRES_TO_MM
    return {"prior_mm": prior, "posterior_mm": posterior, "ratio": posterior / prior, "n_views": len(yaws_deg)}
