"""Score a trained encoder on the synthetic NoW-like benchmark.

    python -m ringnet_lib.evaluation.trained runs/quick/checkpoint.pt --out outputs/eval

    results = benchmark_checkpoint("runs/quick/checkpoint.pt")      # {"trained encoder": ..., "mean shape (β = 0)": ...}
    print(results_table(results))
    write_benchmark(results, "outputs/evaluation")                  # metrics.md, metrics.csv, metrics.json, errors.png

The held-out identities are drawn exactly like the run's training data (same
generator, same image size) but with a seed no training run uses
(:data:`HELDOUT_SEED`); each image gives one prediction, neutralised (ψ = 0,
pose = 0) and scored against its identity's ground-truth neutral mesh with the
NoW metric (:func:`ringnet_lib.evaluation.evaluate_shapes`). The mean shape
(β = 0) is the baseline every model must beat.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .benchmark import evaluate_shapes, results_table, write_results_csv
from ..params import SHAPE
from .now import cumulative_error_curve

HELDOUT_SEED = 2019  # no training preset uses this data seed (they use 0)
BASELINE = "mean shape (β = 0)"
MODEL = "trained encoder"


def _check_heldout_seed(seed: int, config) -> None:
    if seed == config.data_seed:
        raise ValueError(f"the held-out seed {seed} equals the training data_seed: those identities were trained on")


def heldout_memory_set(flame, config, n_identities: int, images_per_identity: int, seed: int = HELDOUT_SEED):
    """Held-out identities of a ``data="memory"`` run, drawn like its training data (same renders, pose
    and expression ranges, image size), as an :class:`ringnet_lib.training.synthetic.InMemoryRingSet`:
    its images, and the true parameters of each (``image_params``). At least 2 identities."""
    from dataclasses import replace

    from ..training.data import make_dataset

    _check_heldout_seed(seed, config)
    return make_dataset(replace(config, data="memory", n_identities=max(2, n_identities),
                                images_per_identity=images_per_identity, ring_size=2, n_rings=0, data_seed=seed),
                        flame)


def heldout_images(flame, config, n_identities: int, images_per_identity: int,
                   seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of identities no run trained on, drawn like ``config``'s training data.

    Args:
        flame: the decoder the images are made with (the run's own).
        config: a :class:`ringnet_lib.train.TrainConfig`. ``data == "memory"``: the in-memory
            renders with the config's expression and pose ranges; otherwise (``"synthetic"``
            or a folder of the synthetic generator's output) the textured generator with
            its defaults, written to a temporary folder and read back through ``FaceDataset``.
        n_identities, images_per_identity: benchmark size (one scan per image).
        seed: keep it apart from every training ``data_seed``.
    Returns:
        ``images`` N x 3 x S x S and true ``betas`` N x 100, N = n_identities x images_per_identity.
    """
    if config.data == "memory":
        data = heldout_memory_set(flame, config, n_identities, images_per_identity, seed)
        return data.images, data.image_params[:, SHAPE]
    import tempfile

    from ..data.dataset import FaceDataset
    from ..data.synthesize import SynthConfig, synthesize_dataset

    _check_heldout_seed(seed, config)
    n_identities = max(2, n_identities)
    with tempfile.TemporaryDirectory(prefix="heldout_") as folder:
        synthesize_dataset(SynthConfig(identities=n_identities, per_identity=images_per_identity, seed=seed,
                                       size=max(config.image_size, 64)), folder, flame, progress=False)
        faces = FaceDataset(folder, image_size=config.image_size)
        items = faces[tuple(range(len(faces)))]
    return items["image"], items["shape"]


@torch.no_grad()
def predict_params(encoder, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``N x 3 x S x S`` -> ``N x 159`` float32 on the CPU (eval mode: dropout off, BatchNorm running statistics)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    return torch.cat([encoder(chunk.to(device)).params.float().cpu() for chunk in images.split(batch)])


def predict_betas(encoder, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``N x 3 x S x S`` -> ``N x 100`` predicted β (eval mode: dropout off, BatchNorm running statistics)."""
    return predict_params(encoder, images, batch)[:, SHAPE]


def benchmark_encoder(encoder, config, flame, n_identities: int = 12, images_per_identity: int = 2,
                      n_points: int | None = 1000, icp_iterations: int = 10, seed: int = HELDOUT_SEED) -> dict:
    """The NoW metric of ``encoder`` and of the mean shape on the same held-out scans.

    Returns:
        ``{MODEL: evaluate_shapes(...), BASELINE: evaluate_shapes(...)}``; :func:`median_ratio` of it is
        the model's pooled median over the baseline's (below 1: better than the mean shape).
    """
    images, truth = heldout_images(flame, config, n_identities, images_per_identity, seed)
    predicted = predict_betas(encoder, images)
    results = {MODEL: evaluate_shapes(predicted, truth, flame, n_points=n_points, icp_iterations=icp_iterations),
               BASELINE: evaluate_shapes(torch.zeros_like(truth), truth, flame, n_points=n_points,
                                         icp_iterations=icp_iterations)}
    return results


def median_ratio(results: dict, model: str = MODEL, baseline: str = BASELINE) -> float:
    """Pooled median error of ``model`` over that of ``baseline``."""
    return results[model]["pooled"]["median_mm"] / results[baseline]["pooled"]["median_mm"]


def benchmark_checkpoint(checkpoint: str | Path, flame=None, **options) -> dict:
    """:func:`benchmark_encoder` on a ``checkpoint.pt`` of :func:`ringnet_lib.train.train` (loaded as the demo does)."""
    from ..demo import load_model

    encoder, config, flame = load_model(checkpoint, flame=flame)
    return benchmark_encoder(encoder, config, flame, **options)


def error_curves_figure(results: dict, max_mm: float = 6.0, title: str = "held-out synthetic identities"):
    """NoW's cumulative error curves, one per method. Returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        thresholds, fractions = cumulative_error_curve(np.concatenate(result["errors_mm"]), max_mm)
        axis.plot(thresholds, 100 * fractions, label=f"{name}: median {result['pooled']['median_mm']:.2f} mm")
    axis.set_xlabel("scan-to-mesh error (mm)")
    axis.set_ylabel("% of scan points")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def write_benchmark(results: dict, out_dir: str | Path, title: str = "held-out synthetic identities") -> dict:
    """``metrics.md`` (the table and the ratio), ``metrics.csv``, ``metrics.json`` and ``errors.png`` in ``out_dir``."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "metrics.md", "csv": out / "metrics.csv", "json": out / "metrics.json",
             "png": out / "errors.png"}
    text = f"# NoW metric, {title}\n\n{results_table(results)}\n"
    if MODEL in results and BASELINE in results:
        text += f"\nMedian error of the trained encoder / mean shape: {median_ratio(results):.3f}\n"
    paths["md"].write_text(text)
    write_results_csv(results, paths["csv"])
    paths["json"].write_text(json.dumps({name: {"pooled": r["pooled"], "per_identity": r["per_identity"]}
                                         for name, r in results.items()}, indent=1))
    figure = error_curves_figure(results, title=title)
    figure.savefig(paths["png"], dpi=100)
    plt.close(figure)
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.evaluation.trained",
                                     description="Score a training checkpoint on held-out synthetic identities "
                                                 "(NoW metric) next to the mean shape.")
    parser.add_argument("checkpoint", help="checkpoint.pt written by python -m ringnet_lib.train")
    parser.add_argument("--out", required=True, help="folder for metrics.md/.csv/.json and errors.png")
    parser.add_argument("--identities", type=int, default=12, help="held-out identities (2 images each)")
    parser.add_argument("--points", type=int, default=1000, help="points sampled per scan")
    args = parser.parse_args(argv)
    from ..demo import DemoError

    try:
        results = benchmark_checkpoint(args.checkpoint, n_identities=args.identities, n_points=args.points)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = write_benchmark(results, args.out)
    print(results_table(results))
    print(f"median error, trained / mean shape: {median_ratio(results):.3f}")
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
