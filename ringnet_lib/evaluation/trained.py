"""Score a trained encoder on the synthetic NoW-like benchmark.

    python -m ringnet_lib.evaluation.trained runs/quick/checkpoint.pt --out outputs/eval

    results = benchmark_checkpoint("runs/quick/checkpoint.pt")   # {"trained encoder": ..., "mean shape (β = 0)": ...}
    print(results_table(results))
    write_benchmark(results, "outputs/evaluation")                  # metrics.md, metrics.csv, metrics.json, metrics.png

The held-out identities are drawn exactly like the run's training data (same generator, same
image size) but with a seed no training run uses (:data:`~ringnet_lib.evaluation.benchmark.HELDOUT_SEED`);
each image gives one prediction, neutralised (ψ = 0, pose = 0) and scored against its identity's
ground-truth neutral mesh with the NoW metric (:func:`ringnet_lib.evaluation.evaluate_shapes`).
The mean shape (β = 0) is the baseline every model must beat: a ratio below 1 is better than it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..checks import check_memory
from ..data.dataset import FaceDataset
from ..data.synthesize import SynthConfig, synthesize_dataset
from ..data.synthetic import SyntheticRingSet
from ..decoder import Decoder
from ..params import SHAPE
from ..training.checkpoint import CheckpointError, load_encoder
from ..training.config import RENDER, TrainConfig
from ..training.data import make_rings
from .benchmark import HELDOUT_SEED, evaluate_shapes, results_rows, results_table
from .now import cumulative_error_curve
from .report import check_writable, write_report

BASELINE = "mean shape (β = 0)"
MODEL = "trained encoder"
IMAGES_PER_IDENTITY = 2  # the command line's images (scans) per held-out identity

# Peak memory of a benchmark, measured (peak RSS over the imports, default head, one thread): 4 images of 32 px and
# 1,000 points per scan 90 MB; per image 480 kB (its meshes: truth, prediction, baseline, decoder intermediates) and
# 110 bytes per pixel (rendering); per scan point about 580 bytes while its ICP runs (one scan at a time); and the
# errors kept, per image and point, 2 methods x (float32 + a float64 summary + the pooled copies). Rounded up.
BYTES_PER_IMAGE = 600e3
BYTES_PER_PIXEL = 150.0
BYTES_PER_SCAN_POINT = 1000.0
BYTES_PER_ERROR = 2 * 32.0


def benchmark_memory(n_identities: int, images_per_identity: int, n_points: int, image_size: int) -> dict:
    """Bytes a benchmark of that size needs, by cause: ``{"identities": ..., "points": ..., "both": ...}``
    (``both``: the errors kept, one per image and scan point)."""
    images = float(n_identities) * images_per_identity
    return {"identities": images * (BYTES_PER_IMAGE + BYTES_PER_PIXEL * float(image_size) ** 2),
            "points": float(n_points) * BYTES_PER_SCAN_POINT, "both": images * float(n_points) * BYTES_PER_ERROR}


def check_benchmark_memory(n_identities: int, n_points: int, image_size: int,
                           images_per_identity: int = IMAGES_PER_IDENTITY) -> None:
    """Refuse, before any work, a benchmark too big for this machine, naming the flag that makes it so."""
    needed = benchmark_memory(n_identities, images_per_identity, n_points, image_size)
    flag = "--identities" if needed["identities"] >= needed["points"] else "--points"
    value = n_identities if flag == "--identities" else n_points
    check_memory(f"{flag} {value}", sum(needed.values()),
                 f"lower {flag} (the benchmark holds {n_identities * images_per_identity:,} images of {image_size} px "
                 f"and samples {n_points:,} points per scan)", share=0.5)


def _check_heldout_seed(seed: int, config: TrainConfig) -> None:
    if seed == config.data_seed:
        raise ValueError(f"the held-out seed {seed} equals the training data_seed: those identities were trained on")


def heldout_rings(config: TrainConfig, n_identities: int, images_per_identity: int,
                  seed: int = HELDOUT_SEED) -> SyntheticRingSet:
    """Held-out identities of a ``data="render"`` run, drawn like its training data (same renders, pose
    and expression ranges, image size): a :class:`~ringnet_lib.data.synthetic.SyntheticRingSet` whose
    :meth:`~ringnet_lib.data.synthetic.SyntheticRingSet.render_images` gives images and their truth."""
    _check_heldout_seed(seed, config)
    return make_rings(replace(config, data=RENDER, n_identities=max(2, n_identities),
                              images_per_identity=images_per_identity, ring_size=2, n_rings=None, data_seed=seed,
                              flip_probability=0.0))


def heldout_images(decoder: Decoder, config: TrainConfig, n_identities: int, images_per_identity: int,
                   seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of identities no run trained on, drawn like ``config``'s training data.

    Args:
        decoder: the decoder the images are made with (the run's own).
        config: a :class:`~ringnet_lib.training.config.TrainConfig`. ``data == "render"``: rendered like
            its rings; otherwise (``"synthetic"`` or a folder of the synthetic generator's output) the
            textured generator with its defaults, written to a temporary folder and read back.
        n_identities: benchmark identities.
        images_per_identity: images (scans) per identity.
        seed: keep it apart from every training ``data_seed``.
    Returns:
        ``images`` N x 3 x S x S and true ``betas`` N x 100, N = n_identities x images_per_identity.
    """
    if config.data == RENDER:
        rings = heldout_rings(config, n_identities, images_per_identity, seed)
        rendered = rings.render_images(torch.arange(rings.n_images), decoder)
        return rendered["images"].cpu(), rendered["true_shape"].cpu()
    _check_heldout_seed(seed, config)
    with tempfile.TemporaryDirectory(prefix="heldout_") as folder:
        synthesize_dataset(SynthConfig(identities=max(2, n_identities), per_identity=images_per_identity, seed=seed,
                                       size=max(config.image_size, 64)), Path(folder) / "data", decoder,
                           progress=False)
        faces = FaceDataset(Path(folder) / "data", image_size=config.image_size)
        items = faces.ring(range(len(faces)))
    return items["images"], items["true_shape"]


@torch.no_grad()
def predict_params(encoder, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``N x 3 x S x S`` -> ``N x 159`` float32 on the CPU (eval mode: dropout off, BatchNorm running statistics)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    return torch.cat([encoder(chunk.to(device)).params.float().cpu() for chunk in images.split(batch)])


def benchmark_encoder(encoder, config: TrainConfig, decoder: Decoder, n_identities: int = 12,
                      images_per_identity: int = 2, n_points: int | None = 1000, icp_iterations: int = 10,
                      seed: int = HELDOUT_SEED) -> dict:
    """The NoW metric of ``encoder`` and of the mean shape on the same held-out scans.

    Returns:
        ``{MODEL: evaluate_shapes(...), BASELINE: evaluate_shapes(...)}``; :func:`median_ratio` of it is
        the model's pooled median over the baseline's (below 1: better than the mean shape).
    """
    images, truth = heldout_images(decoder, config, n_identities, images_per_identity, seed)
    predicted = predict_params(encoder, images)[:, SHAPE]
    options = {"n_points": n_points, "icp_iterations": icp_iterations}
    return {MODEL: evaluate_shapes(predicted, truth, decoder, **options),
            BASELINE: evaluate_shapes(torch.zeros_like(truth), truth, decoder, **options)}


def median_ratio(results: dict, model: str = MODEL, baseline: str = BASELINE) -> float:
    """Pooled median error of ``model`` over that of ``baseline``."""
    return results[model]["pooled"]["median_mm"] / results[baseline]["pooled"]["median_mm"]


def benchmark_checkpoint(checkpoint: str | Path, decoder: Decoder | None = None,
                         flame_model: str | Path | None = None, **options) -> dict:
    """:func:`benchmark_encoder` on a ``checkpoint.pt`` (loaded by :func:`ringnet_lib.training.load_encoder`)."""
    encoder, config, decoder = load_encoder(checkpoint, decoder=decoder, flame_model=flame_model)
    return benchmark_encoder(encoder, config, decoder, **options)


def error_curves_figure(results: dict, max_mm: float = 6.0, title: str = "held-out synthetic identities"):
    """NoW's cumulative error curves, one per method. Returns the Figure."""
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
    """``metrics.md`` (the table, the ratio), ``metrics.csv``, ``metrics.json`` and ``metrics.png`` in ``out_dir``."""
    text = f"# NoW metric, {title}\n\nLower is better; a ratio of 1.0 is no better than the mean face.\n\n"
    text += results_table(results) + "\n"
    if MODEL in results and BASELINE in results:
        text += f"\nMedian error of the trained encoder / mean shape: {median_ratio(results):.3f}\n"
    data = {name: {"pooled": r["pooled"], "per_identity": r["per_identity"]} for name, r in results.items()}
    figure = error_curves_figure(results, title=title)
    return write_report(out_dir, "metrics", text, results_rows(results), data, figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.evaluation.trained",
                                     description="Score a training checkpoint on held-out synthetic identities "
                                                 "(NoW metric) next to the mean shape.")
    parser.add_argument("checkpoint", help="checkpoint.pt written by python -m ringnet_lib.train")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.md/.csv/.json/.png")
    parser.add_argument("--identities", type=int, default=12,
                        help=f"held-out identities, >= 2 ({IMAGES_PER_IDENTITY} images each)")
    parser.add_argument("--points", type=int, default=1000, help="points sampled per scan, >= 100")
    parser.add_argument("--flame-model", type=Path, help="a FLAME folder, instead of the one the checkpoint names")
    args = parser.parse_args(argv)
    problems = [f"--identities {args.identities}: give 2 or more" if args.identities < 2 else "",
                f"--points {args.points}: give 100 or more" if args.points < 100 else ""]
    try:  # everything a user can get wrong is refused here, before the work (minutes) and without writing
        if any(problems):
            raise ValueError(next(p for p in problems if p))
        check_writable(args.out, "--out")
        encoder, config, decoder = load_encoder(args.checkpoint, flame_model=args.flame_model)
        check_benchmark_memory(args.identities, args.points, config.image_size)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = benchmark_encoder(encoder, config, decoder, n_identities=args.identities,
                                images_per_identity=IMAGES_PER_IDENTITY, n_points=args.points)
    paths = write_benchmark(results, args.out)
    print(results_table(results))
    print(f"median error, trained / mean shape: {median_ratio(results):.3f} (lower is better; 1.0 = the mean face)")
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
