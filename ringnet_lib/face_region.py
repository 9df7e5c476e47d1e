"""NoW's face region: its 7 landmarks, its crop sphere, and a shape error measured over that region.

NoW (Sanyal et al., CVPR 2019; github.com/soubhiksanyal/now_evaluation) scores the face only:
the scan is cut to a sphere placed by 7 landmarks. The same region serves the NoW protocol
(:mod:`ringnet_lib.evaluation.now`), the training's per-run shape error
(:func:`face_region_error_mm`) and the identifiability bound, so it is defined here, once.

The 7 landmarks, in NoW's order (its README's picture and the example of the FG2018
challenge it builds on), as 1-based iBUG-68 numbers; "right" is the subject's right:

    0 right eye outer corner   iBUG 37        4 nose bottom (subnasale)  iBUG 34
    1 right eye inner corner   iBUG 40        5 right mouth corner       iBUG 49
    2 left eye inner corner    iBUG 43        6 left mouth corner        iBUG 55
    3 left eye outer corner    iBUG 46

Point 4 is the *bottom* of the nose (the middle nostril point, iBUG 34), not the
tip (iBUG 31): NoW's crop goes from it up towards the nose bridge.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .alignment import umeyama
from .checks import check_finite
from .params import N_CONTOUR, N_STATIC

METRES_TO_MM = 1000.0
NOW_LANDMARK_NAMES = ("right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer",
                      "nose_bottom", "right_mouth_corner", "left_mouth_corner")
NOW_IBUG68 = (37, 40, 43, 46, 34, 49, 55)  # 1-based iBUG numbers, NoW's order
# FLAME's 51 static landmarks are iBUG 18..68, so iBUG k (1-based) is static index k - 18.
NOW_STATIC_INDEX = tuple(k - 1 - N_CONTOUR for k in NOW_IBUG68)  # (19, 22, 25, 28, 16, 31, 37)
N_NOW_LANDMARKS = len(NOW_IBUG68)

# NoW's crop: centre = nose_bottom + 0.3 (nose_bridge - nose_bottom), where the "nose
# bridge" is the midpoint of the inner eye corners (iBUG 40 and 43), and radius =
# 1.4 (outer-eye distance (iBUG 37 to 46) + nose length (bridge to bottom)) / 2.
CROP_CENTRE_FRACTION = 0.3
CROP_RADIUS_FACTOR = 1.4


def check_landmarks(name: str, landmarks: torch.Tensor) -> torch.Tensor:
    """Return ``landmarks`` as a tensor if it is ``7 x 3`` and finite, else raise a ValueError saying what to do."""
    landmarks = torch.as_tensor(landmarks)
    if landmarks.shape != (N_NOW_LANDMARKS, 3):
        hint = (" (that looks like the 51 static or 68 iBUG landmarks: select NoW's 7 with NOW_STATIC_INDEX "
                "or now_landmarks_from_ibug68)" if landmarks.ndim == 2 and landmarks.shape[0] in (51, 68) else "")
        raise ValueError(f"{name} must be 7 x 3 (NoW's landmarks in the order {NOW_LANDMARK_NAMES}), "
                         f"got {tuple(landmarks.shape)}{hint}")
    check_finite(name, landmarks)
    return landmarks


def now_landmarks_from_static(static_landmarks: torch.Tensor) -> torch.Tensor:
    """NoW's 7 from FLAME's 51 static landmarks: ``... x 51 x 3`` -> ``... x 7 x 3``."""
    if static_landmarks.shape[-2:] != (N_STATIC, 3):
        raise ValueError(f"expected ... x 51 x 3 static landmarks (iBUG 18..68), got {tuple(static_landmarks.shape)}")
    return static_landmarks[..., list(NOW_STATIC_INDEX), :]


def now_landmarks_from_ibug68(landmarks68: torch.Tensor) -> torch.Tensor:
    """NoW's 7 from the 68 iBUG landmarks (zero-based rows): ``... x 68 x 3`` -> ``... x 7 x 3``."""
    if landmarks68.shape[-2:] != (68, 3):
        raise ValueError(f"expected ... x 68 x 3 iBUG landmarks, got {tuple(landmarks68.shape)}")
    return landmarks68[..., [k - 1 for k in NOW_IBUG68], :]


class CropSphere(NamedTuple):
    centre: torch.Tensor  # 3
    radius: torch.Tensor  # scalar


def crop_sphere(landmarks: torch.Tensor) -> CropSphere:
    """NoW's face crop from the scan's 7 landmarks (units of the landmarks).

    Args:
        landmarks: ``7 x 3`` in NoW's order.
    Returns:
        :class:`CropSphere`: centre ``3`` and radius.
    """
    landmarks = check_landmarks("scan landmarks", landmarks)
    nose_bottom = landmarks[4]
    nose_bridge = (landmarks[1] + landmarks[2]) / 2  # between the inner eye corners
    centre = nose_bottom + CROP_CENTRE_FRACTION * (nose_bridge - nose_bottom)
    outer_eye_distance = (landmarks[0] - landmarks[3]).norm()
    nose_length = (nose_bridge - nose_bottom).norm()
    return CropSphere(centre, CROP_RADIUS_FACTOR * (outer_eye_distance + nose_length) / 2)


def crop_mask(points: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Which of ``N x 3`` points lie in NoW's crop sphere (distance <= radius, as NoW): ``N`` bool."""
    sphere = crop_sphere(landmarks)
    return (points - sphere.centre.to(points.dtype)).norm(dim=-1) <= sphere.radius


def face_region_error_mm(decoder, predicted_shape: torch.Tensor, true_shape: torch.Tensor) -> torch.Tensor:
    """Mean vertex distance (mm) between neutral meshes over the face, after a similarity fit.

    A quick shape error for training curves (no scan, no ICP): the vertices inside NoW's
    crop sphere of the *mean* head, the predicted mesh aligned onto the true one by
    Umeyama (rotation, translation and scale: a weak-perspective camera cannot tell a
    bigger head from a closer one, so global scale is not shape).

    Args:
        decoder: a :class:`ringnet_lib.decoder.Decoder`.
        predicted_shape: ``N x 100`` predicted β.
        true_shape: ``N x 100`` true β.
    Returns:
        ``N`` errors in mm.
    """
    check_finite("predicted β", predicted_shape)
    mean = decoder.neutral(torch.zeros(1, true_shape.shape[1], device=true_shape.device))
    face = crop_mask(mean.vertices[0], now_landmarks_from_static(mean.static_landmarks[0]))
    predicted = decoder.neutral(predicted_shape).vertices[:, face].double()
    truth = decoder.neutral(true_shape).vertices[:, face].double()
    aligned = umeyama(predicted, truth).apply(predicted)
    return (aligned - truth).norm(dim=-1).mean(-1).float() * METRES_TO_MM
