"""Helpers the course's notebooks share: the CI switch, showing and saving figures, drawing landmarks,
the default checkpoint path, and "load it if it exists, else train a short run".

    from ringnet_lib.notebook import SMOKE, Figures, draw_landmarks, load_or_train
    figures = Figures(figure_dir, prefix="01")
    figures.show(fig, "template")           # displays it, and saves 01_template.png when figure_dir is set
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .params import CONTOUR_IN_68
from .training.checkpoint import CheckpointError, load_encoder
from .training.config import TrainConfig
from .training.loop import train

SMOKE = "CI" in os.environ  # CI (CI=true) runs every notebook: each one reads this to run a tiny version
# The checkpoint notebook 06 trains, 07 evaluates and 08 uses, and `make demo` writes (relative to notebooks/).
DEFAULT_CHECKPOINT = Path("../outputs/quick/checkpoint.pt")


class Figures:
    """Show figures inline and, when ``figure_dir`` is set, save them as ``<prefix>_<name>.png``."""

    def __init__(self, figure_dir: str | Path | None, prefix: str):
        self.figure_dir = None if figure_dir is None else Path(figure_dir)
        self.prefix = prefix

    def show(self, figure, name: str) -> None:
        if self.figure_dir is not None:
            self.figure_dir.mkdir(parents=True, exist_ok=True)
            figure.savefig(self.figure_dir / f"{self.prefix}_{name}.png", dpi=100, bbox_inches="tight")
        plt.show()


def draw_landmarks(ax, points, confidence=None, size: float = 6.0, **style) -> None:
    """68 points in an image: the contour (iBUG 1..17) as a red line, the 51 static ones in blue; with
    ``confidence`` (68), every point coloured by it instead (red 0 -> green 1)."""
    points = np.asarray(torch.as_tensor(points).detach().cpu())
    if confidence is not None:
        ax.scatter(points[:, 0], points[:, 1], s=size, c=np.asarray(confidence), cmap="RdYlGn", vmin=0, vmax=1,
                   **style)
        return
    contour = points[CONTOUR_IN_68]
    ax.plot(contour[:, 0], contour[:, 1], "r.-", ms=size, lw=1, **style)
    ax.plot(points[CONTOUR_IN_68.stop:, 0], points[CONTOUR_IN_68.stop:, 1], "b.", ms=size - 1, **style)


def load_or_train(checkpoint: str | Path | None, fallback: TrainConfig):
    """The encoder of ``checkpoint`` when that file exists; otherwise train ``fallback`` (a short run) and say so.

    Returns ``(encoder, config, decoder, trained_here)``, ``trained_here`` True when the fallback ran.
    """
    if checkpoint is not None and Path(checkpoint).is_file():
        try:
            encoder, config, decoder = load_encoder(checkpoint)
            print(f"loaded {checkpoint} (trained {config.preset} preset, {config.trunk}, {config.image_size} px)")
            return encoder, config, decoder, False
        except CheckpointError as error:
            print(f"cannot use {checkpoint}: {error}")
    print(f"no checkpoint at {checkpoint}: training a short run instead ({fallback.max_steps or fallback.epochs} "
          f"{'steps' if fallback.max_steps else 'epochs'} into {fallback.out_dir}); its numbers mean little. "
          "Run notebook 06 (or `make demo`) for a real one.")
    result = train(fallback)
    encoder, config, decoder = load_encoder(result.checkpoint)
    return encoder, config, decoder, True
