"""Augmentations that keep the 68 landmarks consistent with the pixels.

A horizontal flip mirrors x (normalised coordinates: x -> -x, as pixel u -> S - u) AND
renames the points: the subject's left eye corner becomes a right eye corner, so point k
of the flipped face is point ``IBUG68_FLIP[k]`` of the original.
"""
from __future__ import annotations

import torch


def _ibug68_flip() -> list[int]:
    """The iBUG 68 mirror permutation (zero-based): flipped[k] = original[perm[k]]."""
    pairs = [(i, 16 - i) for i in range(17)]                          # jaw contour 0..16
    pairs += [(17 + i, 26 - i) for i in range(5)]                     # brows 17..21 <-> 26..22
    pairs += [(31 + i, 35 - i) for i in range(5)]                     # nostrils 31..35
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48 + i, 54 - i) for i in range(7)]                     # outer upper lip 48..54
    pairs += [(55, 59), (56, 58), (57, 57)]                           # outer lower lip
    pairs += [(60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]       # inner lip
    perm = list(range(68))  # the nose bridge 27..30 maps to itself
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


IBUG68_FLIP: tuple[int, ...] = tuple(_ibug68_flip())


def flip_landmarks(landmarks: torch.Tensor, confidence: torch.Tensor | None = None):
    """Mirror normalised landmarks ``... x 68 x 2`` (x -> -x) and re-index them; confidences ``... x 68`` follow."""
    perm = torch.tensor(IBUG68_FLIP)
    flipped = landmarks[..., perm, :] * landmarks.new_tensor([-1.0, 1.0])
    return flipped if confidence is None else (flipped, confidence[..., perm])


def flip_sample(image: torch.Tensor, landmarks: torch.Tensor, confidence: torch.Tensor):
    """Horizontal flip of ``... x 3 x H x W`` images with their normalised landmarks and confidences."""
    flipped, conf = flip_landmarks(landmarks, confidence)
    return image.flip(-1), flipped, conf
