"""Progress line and TensorBoard logs of a run (rank 0 only).

The progress line (steps, the last losses, time left) goes to stderr every
``progress_interval`` seconds, so a terminal shows it even while papermill runs the
training notebook. Every loss term goes to TensorBoard every ``log_every`` steps; every
``image_every`` steps, the first ring's images with the target (green) and the
projected (red) landmarks drawn over them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from ..camera import normalized_to_pixels


def landmark_overlay_figure(images: torch.Tensor, predicted: torch.Tensor | None, target: torch.Tensor):
    """A matplotlib figure: ``R x 3 x H x W`` images, ``R x L x 2`` normalised landmarks (target green,
    predicted red; ``predicted=None`` draws the targets only)."""
    ring, size = images.shape[0], images.shape[-1]
    figure, axes = plt.subplots(1, ring, figsize=(2.2 * ring, 2.4), squeeze=False)
    predicted = [None] * ring if predicted is None else predicted
    for axis, image, guess, truth in zip(axes[0], images, predicted, target):
        axis.imshow(image.detach().float().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        for points, colour in ((truth, "lime"), (guess, "red")):
            if points is None:
                continue
            pixels = normalized_to_pixels(points.detach().float().cpu(), size)
            axis.scatter(pixels[:, 0], pixels[:, 1], s=4, c=colour)
        axis.set_xlim(0, size)
        axis.set_ylim(size, 0)
        axis.axis("off")
    figure.tight_layout()
    return figure


class RunLogger:
    """tqdm (throttled with ``mininterval``) and a TensorBoard writer, both optional."""

    def __init__(self, config, out_dir: Path, total_steps: int, start_step: int, enabled: bool = True):
        self.config, self.enabled = config, enabled
        self.bar = self.writer = None
        if not enabled:
            return
        if config.progress:
            # The terminal's stderr, not the notebook's: under papermill a kernel's stderr goes into the
            # output notebook, and the terminal would show papermill's cell bar frozen for the whole run.
            stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
            self.bar = tqdm(total=total_steps, initial=start_step, mininterval=config.progress_interval,
                            desc="train", unit="step", file=stream, dynamic_ncols=False, ncols=100)
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: 1 s to import; only with --tensorboard
            self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def step(self, step: int, record: dict, batch: dict, prediction, target_index: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if step % self.config.log_every == 0:
                self.bar.set_postfix(total=f"{record['total']:.3g}", landmarks=f"{record['landmarks']:.3g}",
                                     refresh=False)
        if self.writer is None:
            return
        if step % self.config.log_every == 0 or step == 1:
            for name, value in record.items():
                if name != "step":
                    self.writer.add_scalar(f"loss/{name}", value, step)
        if step % self.config.image_every == 0 or step == 1:
            target = batch["landmarks"][0][:, target_index]
            figure = landmark_overlay_figure(batch["images"][0], prediction.landmarks2d[0], target)
            self.writer.add_figure("landmarks/overlay", figure, step)
            plt.close(figure)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
