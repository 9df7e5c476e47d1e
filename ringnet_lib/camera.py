"""Weak-perspective camera and image coordinates: the one place the convention is written.

Convention (used everywhere in ringnet_lib):

* **FLAME space**: metres, +x towards the subject's left (image right for a frontal face),
  +y up, +z out of the face, towards the camera. The camera looks along -z.
* **Weak perspective** (RingNet's camera): a 3D point X projects to
  ``x_n = s * (X[..., :2] + t)`` with ``camera = (s, tx, ty)``. Depth is dropped, so the
  scale ``s`` stands for focal length / distance, and ``t`` is a translation in FLAME units
  applied *before* scaling.
* **Normalised image coordinates**: x and y in [-1, 1] across the square crop,
  +x to the right, **+y up** (FLAME's), so no sign flip happens in the projection.
* **Pixel coordinates** for a square crop of side ``S``: (0, 0) is the top-left corner of
  the top-left pixel, +v **down**; pixel ``(i, j)`` (column, row) covers
  ``[i, i+1] x [j, j+1]``, so its centre is ``(i + 0.5, j + 0.5)``::

      u = (x + 1) * S / 2
      v = (1 - y) * S / 2
"""
from __future__ import annotations

import torch


def project_weak_perspective(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Weak-perspective projection to normalised coordinates.

    Args:
        points: ``B x N x 3`` in FLAME space.
        camera: ``B x 3`` = (s, tx, ty).
    Returns:
        ``B x N x 2``: ``s * (points[..., :2] + t)``, normalised, +y up.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be B x N x 3, got {tuple(points.shape)}")
    if camera.ndim != 2 or camera.shape[-1] != 3 or camera.shape[0] != points.shape[0]:
        raise ValueError(f"camera must be B x 3 with B={points.shape[0]}, got {tuple(camera.shape)}")
    scale = camera[:, None, :1]  # B x 1 x 1
    shift = camera[:, None, 1:]  # B x 1 x 2
    return scale * (points[..., :2] + shift)


def normalized_to_pixels(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Normalised (+y up, [-1, 1]) to pixel coordinates (+v down, [0, S]).

    Args:
        points: ``... x 2`` normalised (x, y).
        image_size: side ``S`` of the square crop in pixels.
    Returns:
        ``... x 2`` pixel (u, v) with ``u = (x + 1) S / 2``, ``v = (1 - y) S / 2``.
    """
    half = image_size / 2.0
    u = (points[..., 0] + 1.0) * half
    v = (1.0 - points[..., 1]) * half
    return torch.stack([u, v], dim=-1)


def pixels_to_normalized(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Inverse of :func:`normalized_to_pixels`.

    Args:
        points: ``... x 2`` pixel (u, v), +v down, origin at the top-left corner.
        image_size: side ``S`` of the square crop in pixels.
    Returns:
        ``... x 2`` normalised (x, y), +y up: ``x = 2u/S - 1``, ``y = 1 - 2v/S``.
    """
    half = image_size / 2.0
    x = points[..., 0] / half - 1.0
    y = 1.0 - points[..., 1] / half
    return torch.stack([x, y], dim=-1)


def camera_looking_at(points: torch.Tensor, fill: float = 0.8, scale: torch.Tensor | float | None = None
                      ) -> torch.Tensor:
    """A weak-perspective camera that centres ``points`` in the crop (the framing every generator uses).

    Args:
        points: ``B x N x 3``.
        fill: fraction of the crop's width [-1, 1] covered by the larger 2D extent.
        scale: ``B`` (or a number): use this scale instead of the one ``fill`` gives, so that the
            size of the head in the image varies with the head (the in-memory training data).
    Returns:
        ``B x 3`` = (s, tx, ty): the 2D box of the points is centred, and ``s`` is ``scale``
        or ``2 fill / extent``.
    """
    low = points[..., :2].amin(dim=1)
    high = points[..., :2].amax(dim=1)
    if scale is None:
        extent = (high - low).amax(dim=-1).clamp_min(1e-8)  # B
        scale = 2.0 * fill / extent
    scale = torch.as_tensor(scale, dtype=points.dtype, device=points.device).expand(points.shape[0])
    shift = -(low + high) / 2.0
    return torch.cat([scale[:, None], shift], dim=-1)


def fit_weak_perspective(points: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """The weak-perspective camera that best maps 3D points onto 2D targets (least squares, closed form).

    Minimises ``sum_i w_i |s (X_i[:2] + t) - y_i|^2``: with ``u = s t`` the problem is linear
    in (s, u), so s is the weighted covariance over the variance of the centred points, and
    ``t = (ȳ - s x̄) / s``. Where fitting starts (before the head is posed).

    Args:
        points: ``B x N x 3``.
        target: ``B x N x 2`` normalised image coordinates.
        weights: ``B x N`` non-negative (e.g. landmark confidences); all ones when omitted.
    Returns:
        ``B x 3`` = (s, tx, ty), ``s`` clamped above 1e-8.
    """
    xy = points[..., :2]
    weights = torch.ones_like(xy[..., 0]) if weights is None else weights.to(xy.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    mean_x = (weights[..., None] * xy).sum(dim=1)  # B x 2
    mean_y = (weights[..., None] * target).sum(dim=1)
    centred_x, centred_y = xy - mean_x[:, None], target - mean_y[:, None]
    scale = ((weights[..., None] * centred_x * centred_y).sum(dim=(1, 2))
             / (weights[..., None] * centred_x ** 2).sum(dim=(1, 2)).clamp_min(1e-12)).clamp_min(1e-8)
    shift = mean_y / scale[:, None] - mean_x
    return torch.cat([scale[:, None], shift], dim=-1)
