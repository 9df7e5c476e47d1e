"""Random appearance for synthetic faces: skin, facial features, lighting, backgrounds.

All randomness comes from a ``numpy.random.Generator`` passed in, so that the
generator is reproducible per image (see :mod:`ringnet_lib.data.synthesize`).
Colours are in [0, 1] RGB.
"""
from __future__ import annotations

import numpy as np
import torch

from ..mesh import distance_to_segments


def distance_to_polyline(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Distance of ``V x 3`` points to a polyline of ``L x 3`` corners, in the (x, y) plane -> ``V``."""
    return distance_to_segments(points[:, :2], np.stack([polyline[:-1, :2], polyline[1:, :2]], axis=1))

# Skin tones from light to dark (hand-picked RGB); a face takes a random blend of two neighbours.
SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.80, 0.58, 0.45],
                       [0.64, 0.44, 0.31], [0.46, 0.31, 0.21], [0.30, 0.20, 0.14]])
HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.32, 0.18],
                         [0.75, 0.62, 0.40], [0.55, 0.55, 0.55]])
IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.12, 0.08, 0.05], [0.25, 0.40, 0.55], [0.30, 0.40, 0.25]])


def feature_masks(template: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Soft per-vertex masks of facial features on the neutral mesh.

    Args:
        template: ``V x 3`` neutral vertices (metres, FLAME frame).
        landmarks: ``68 x 3`` iBUG landmarks on that mesh.
    Returns:
        dict of ``V`` arrays in [0, 1]: lips, brows, eye_white, iris, scalp. Only vertices on
        the front (z above the landmarks' mean minus 2 cm) get facial features.
    """
    front = template[:, 2] > landmarks[:, 2].mean() - 0.02
    soft = lambda d, r: np.clip(1.5 - d / r, 0, 1)  # 1 inside radius r/2, fading to 0 at 1.5 r
    mouth = np.concatenate([landmarks[48:60], landmarks[48:49]])
    lips = soft(distance_to_polyline(template, mouth), 0.006) * front
    brows = np.maximum(soft(distance_to_polyline(template, landmarks[17:22]), 0.005),
                       soft(distance_to_polyline(template, landmarks[22:27]), 0.005)) * front
    eye_white = np.zeros(len(template))
    iris = np.zeros(len(template))
    for eye in (landmarks[36:42], landmarks[42:48]):
        centre = eye.mean(0)
        half_width = np.ptp(eye[:, 0]) / 2
        half_height = max(np.ptp(eye[:, 1]) / 2, 0.003)
        ellipse = ((template[:, 0] - centre[0]) / half_width) ** 2 + ((template[:, 1] - centre[1]) / half_height) ** 2
        eye_white = np.maximum(eye_white, (ellipse < 1.0) * front)
        iris = np.maximum(iris, (np.linalg.norm(template[:, :2] - centre[:2], axis=1) < 0.6 * half_height + 0.002)
                          * front)
    brow_top = landmarks[17:27, 1].max()
    back = template[:, 2] < landmarks[:, 2].mean() - 0.04
    scalp = np.clip((template[:, 1] - brow_top - 0.025) / 0.01, 0, 1)
    scalp = np.maximum(scalp, back * np.clip((template[:, 1] - landmarks[30, 1]) / 0.01, 0, 1))
    return {"lips": lips, "brows": brows, "eye_white": eye_white, "iris": iris, "scalp": scalp}


def random_albedo(template: np.ndarray, masks: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One identity's per-vertex colours ``V x 3``: skin tone, blotchy texture, lips, brows, eyes, hair.

    Args:
        template: ``V x 3`` neutral vertices (texture noise is a function of position).
        masks: from :func:`feature_masks`.
        rng: random source.
    """
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    low = int(tone)
    skin = SKIN_TONES[low] * (1 - (tone - low)) + SKIN_TONES[min(low + 1, len(SKIN_TONES) - 1)] * (tone - low)
    # Low-frequency blotches: a few random plane waves over the surface (wavelengths 3-10 cm).
    directions = rng.normal(size=(6, 3))
    frequencies = rng.uniform(60, 200, size=6)[:, None] * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    waves = np.sin(template @ frequencies.T + rng.uniform(0, 2 * np.pi, size=6)).mean(axis=1)
    colour = skin[None] * (1 + 0.12 * waves[:, None] + 0.03 * rng.normal(size=(len(template), 1)))
    lip_colour = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.8, 1.05)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    brow_colour = hair * 0.8 + 0.05
    iris_colour = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]
    blend = lambda base, mask, target: base * (1 - mask[:, None]) + mask[:, None] * target
    colour = blend(colour, masks["lips"], lip_colour)
    colour = blend(colour, masks["brows"] * rng.uniform(0.6, 1.0), brow_colour)
    colour = blend(colour, masks["eye_white"], np.array([0.78, 0.76, 0.72]))
    colour = blend(colour, masks["iris"], iris_colour)
    if rng.random() < 0.75:  # some synthetic people are bald
        colour = blend(colour, masks["scalp"], hair * (1 + 0.1 * waves[:, None]))
    return np.clip(colour, 0, 1)


def random_lighting(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Light for ``n`` images: unit directions ``n x 3`` from the front hemisphere, ambient and diffuse ``n x 3``."""
    direction = np.stack([rng.uniform(-0.8, 0.8, n), rng.uniform(-0.5, 0.9, n), rng.uniform(0.4, 1.0, n)], axis=1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    tint = 1 + rng.uniform(-0.08, 0.08, size=(n, 3))
    ambient = rng.uniform(0.25, 0.55, size=(n, 1)) * tint
    diffuse = rng.uniform(0.5, 0.9, size=(n, 1)) * tint
    return direction, ambient, diffuse


def random_background(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``n x 3 x S x S`` smooth random colour fields plus a little pixel noise, in [0, 1]."""
    grid = rng.integers(2, 6)
    coarse = torch.as_tensor(rng.uniform(0.05, 0.95, size=(n, 3, grid, grid)), dtype=torch.float32)
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    noise = torch.as_tensor(rng.normal(scale=0.02, size=(n, 1, size, size)), dtype=torch.float32)
    return (field + noise).clamp(0, 1)
