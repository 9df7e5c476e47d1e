"""RingNet's ablations at equal steps: ring size R, λ_sc, and three consistency terms.

    python -m ringnet_lib.ablation --ci    --out runs/ablation_ci      # seconds: tiny, checks the pipeline
    python -m ringnet_lib.ablation --quick --out runs/ablation         # CPU minutes (make ablation)
    python -m ringnet_lib.ablation --paper --out runs/ablation_paper   # a GPU: the paper preset (R=6, 224 px)
    python -m ringnet_lib.ablation --quick --only "R=2,R=6" --steps 300 --out runs/ablation_r
    python -m ringnet_lib.ablation --quick --only "ring R=4,no consistency" --seeds 0,1,2 --out runs/ring_effect

Every run calls :func:`ringnet_lib.train.train` with the mode's preset, the same
``max_steps`` and seed, and only the ablated fields changed (:data:`ABLATIONS`):

=================  ==========  ===========  ======
run                ring_size   consistency  λ_sc
=================  ==========  ===========  ======
ring R=4           4           ring         1
ring R=2           2           ring         1
ring R=6           6           ring         1
no consistency     4           ring         0
swap (DECA)        4           swap         1
mean (ring mean)   4           mean         1
=================  ==========  ===========  ======

Equal *steps*, not equal images: a step holds ``batch_size`` rings of R images, so R=6
sees 1.5x the images of R=4 in the same number of steps (the paper's trade-off too).

Each trained encoder is scored on held-out synthetic identities (a data seed no
training run uses) twice: with :func:`ringnet_lib.evaluation.evaluate_shapes`, the NoW
metric (the predicted β per image, neutralised, against the ground-truth neutral mesh;
a "mean shape" row, β = 0, is the baseline), and with :func:`shape_spread_ratio`, how far
the β predicted for one person's images scatter relative to how much people differ, which
is what the ring loss acts on directly. ``--seeds`` repeats every run with other seeds, and
the table and the plot show the mean and the spread over them. Outputs in
``--out``: ``ablation.md`` (the table), ``ablation.csv``, ``ablation.json``,
``ablation.png`` (median error per run, and the loss curves), ``runs/<name>/checkpoint.pt``.

The papermill equivalent of one run executes the training notebook with the same fields
(:func:`papermill_command` prints it), e.g.
``papermill -k python3 notebooks/06_training.ipynb out.ipynb -p preset quick -p max_steps 400 -p ring_size 6``;
06 reads only the fields in its ``parameters`` cell, so ablated fields it does not list
are injected but unused. Calling ``train()`` directly, as here, is the same function and faster.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .cli import ConfigError
from .decoder import Decoder
from .evaluation import evaluate_shapes
from .evaluation.benchmark import HELDOUT_SEED
from .evaluation.report import write_report
from .evaluation.trained import BASELINE, heldout_images, predict_params
from .params import SHAPE
from .training import TrainConfig, changed_fields, load_encoder, train, validate_config
from .training.checkpoint import CheckpointError

# name -> the TrainConfig fields that differ from the reference run ("ring R=4").
ABLATIONS = {
    "ring R=4": dict(ring_size=4, consistency="ring", w_consistency=1.0),
    "ring R=2": dict(ring_size=2, consistency="ring", w_consistency=1.0),
    "ring R=6": dict(ring_size=6, consistency="ring", w_consistency=1.0),
    "no consistency": dict(ring_size=4, consistency="ring", w_consistency=0.0),
    "swap": dict(ring_size=4, consistency="swap", w_consistency=1.0),
    "mean": dict(ring_size=4, consistency="mean", w_consistency=1.0),
}


@dataclass(frozen=True)
class Mode:
    """How big every run of one ablation is."""

    preset: str
    train: dict  # TrainConfig overrides shared by every run (max_steps among them)
    heldout_identities: int  # identities in the held-out benchmark
    heldout_images: int  # images per held-out identity (each one scan)
    scan_points: int
    icp_iterations: int


MODES = {
    # A test runs this in well under a minute: it checks the pipeline, not that anything learns.
    "ci": Mode("quick", dict(data="render", max_steps=2, image_size=32, batch_size=2, n_identities=4,
                             images_per_identity=5, eval_rings=0), 2, 2, 300, 2),
    # The quick preset (rendered rings, 64 px, ResNet-18) for 400 steps per run, about a third of
    # the quick preset's length, so the six runs take about 15 minutes on 2 CPU cores.
    "quick": Mode("quick", dict(max_steps=400, eval_rings=0), 12, 4, 1000, 10),
    # For a GPU: the paper's preset (R=6 reference there; R is overridden per run here).
    "paper": Mode("paper", dict(max_steps=20000, eval_rings=0), 50, 2, 2000, 10),
}


def heldout_set(decoder: Decoder, mode: Mode, config: TrainConfig,
                seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The mode's held-out benchmark images and true β (:func:`ringnet_lib.evaluation.trained.heldout_images`)."""
    return heldout_images(decoder, config, mode.heldout_identities, mode.heldout_images, seed)


def score(predicted: torch.Tensor, truth: torch.Tensor, decoder: Decoder, mode: Mode) -> dict:
    """NoW metric of neutralised predictions (:func:`ringnet_lib.evaluation.evaluate_shapes`)."""
    return evaluate_shapes(predicted, truth, decoder, n_points=mode.scan_points, icp_iterations=mode.icp_iterations)


def run_config(name: str, mode_name: str, out: Path, steps: int | None = None, device: str = "cpu",
               seed: int = 0) -> TrainConfig:
    """The TrainConfig of one ablation run (its weights, dropout and ring order from ``seed``)."""
    mode = MODES[mode_name]
    overrides = {**mode.train, **ABLATIONS[name], "out_dir": out / "runs" / f"{slug(name)}_seed{seed}",
                 "device": device, "seed": seed, "tensorboard": False, "progress": False, "overwrite": True}
    if steps:
        overrides["max_steps"] = steps
    return TrainConfig.from_preset(mode.preset, **overrides)


def slug(name: str) -> str:
    """A folder name for a run: ``"ring R=4"`` -> ``"ring_R4"``."""
    return "".join(c if c.isalnum() else "_" for c in name.replace("=", "")).strip("_")


def notebook_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (what papermill can change)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return {m for c in tagged for m in re.findall(r"^(\w+)\s*=", "".join(c["source"]), re.MULTILINE)}


def papermill_command(config: TrainConfig, notebook: str | Path = "notebooks/06_training.ipynb",
                      output: str = "out.ipynb") -> str:
    """The papermill command that trains ``config`` through the training notebook (fields that differ
    from the preset); fields the notebook's parameters cell does not read are named in a trailing comment."""
    changed = changed_fields(config)
    command = f"papermill -k python3 {notebook} {output} -p preset {config.preset} " + " ".join(
        f"-p {k} {'None' if v is None else v}" for k, v in changed.items())
    ignored = sorted(set(changed) - notebook_parameters(notebook)) if Path(notebook).is_file() else []
    return command + (f"  # not read by the notebook's parameters cell: {', '.join(ignored)}" if ignored else "")


def shape_spread_ratio(betas: torch.Tensor, identity: torch.Tensor) -> float:
    """How much the β predicted for one person's images scatter, relative to how much people differ.

    ``within`` = mean over identities of the mean squared distance of their images' β to the identity's
    mean β; ``between`` = mean squared distance of the identities' means to the overall mean. The ratio
    ``within / between`` is what the ring loss pushes down (same person close, others apart): 0 for
    a perfect identity code, about 1 (or more) when β ignore who is in the image.

    Args:
        betas: ``N x 100`` predicted β.
        identity: ``N`` identity labels (at least 2 identities, 2 images each).
    Returns:
        the ratio (float; ``inf`` when all identities share one mean).
    """
    labels = torch.unique(identity)
    means = torch.stack([betas[identity == label].mean(0) for label in labels])
    within = torch.stack([(betas[identity == label] - means[i]).pow(2).sum(-1).mean()
                          for i, label in enumerate(labels)]).mean()
    between = (means - means.mean(0)).pow(2).sum(-1).mean()
    return float(within / between) if between > 0 else float("inf")


def run_ablation(mode_name: str, out: str | Path, only: list[str] | None = None, steps: int | None = None,
                 device: str = "cpu", seeds: tuple[int, ...] = (0,), log=print) -> dict:
    """Train every ablation run once per seed, score it, write the table, CSV, JSON and plot.

    Each run is scored twice on the same held-out identities: the NoW median over the mean shape's
    (``vs_mean_shape``) and :func:`shape_spread_ratio` of its predicted β (``spread_ratio``).

    Returns:
        ``{"rows": [dict per run and seed, the baseline first], "summary": [dict per run: mean and std over
        seeds], "table": markdown, "paths": {...}, "seconds": float}``.
    """
    if mode_name not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode_name!r}")
    names = list(ABLATIONS) if not only else only
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation runs {unknown}; choose from {list(ABLATIONS)}")
    if not seeds:
        raise ValueError("give at least one seed")
    started, mode, out = time.perf_counter(), MODES[mode_name], Path(out)
    configs = {(name, seed): run_config(name, mode_name, out, steps, device, seed) for name in names for seed in seeds}
    for config in configs.values():  # a bad device or seed is named now, not after the first runs
        validate_config(config)
    decoder = Decoder()
    images, truth = heldout_set(decoder, mode, next(iter(configs.values())))
    identity = torch.arange(len(truth)) // mode.heldout_images
    baseline = score(torch.zeros_like(truth), truth, decoder, mode)
    rows = [row_of(BASELINE, None, None, baseline, baseline, None)]
    histories = {}
    for (name, seed), config in configs.items():
        log(f"[{name}, seed {seed}] {papermill_command(config)}")
        result = train(config, decoder=decoder)
        encoder = load_encoder(result.checkpoint, decoder=decoder)[0]  # the checkpoint, as the demo loads it
        predicted = predict_params(encoder, images)[:, SHAPE]
        rows.append(row_of(name, config, result, score(predicted, truth, decoder, mode), baseline,
                           shape_spread_ratio(predicted, identity)))
        histories.setdefault(name, []).append([r["landmarks"] for r in result.history])
        log(f"[{name}, seed {seed}] {result.steps} steps in {result.seconds:.0f} s: NoW median "
            f"{rows[-1]['vs_mean_shape']:.3f} x the mean shape's, spread ratio {rows[-1]['spread_ratio']:.3f}")
    summary = summarise(rows, names)
    table = markdown_table(summary, len(seeds))
    seconds = time.perf_counter() - started
    paths = write_outputs(out, rows, summary, table, histories, mode_name, seconds)
    return {"rows": rows, "summary": summary, "table": table, "paths": paths, "seconds": seconds}


def row_of(name: str, config, result, scores: dict, baseline: dict, spread: float | None) -> dict:
    """One run's row (a dict of plain numbers and strings)."""
    pooled = scores["pooled"]
    return {"run": name, "seed": getattr(config, "seed", ""), "ring_size": getattr(config, "ring_size", ""),
            "consistency": getattr(config, "consistency", ""), "w_consistency": getattr(config, "w_consistency", ""),
            "steps": getattr(result, "steps", 0), "train_s": round(getattr(result, "seconds", 0.0), 1),
            "final_landmark_loss": result.history[-1]["landmarks"] if result is not None and result.history else "",
            "median_mm": pooled["median_mm"], "mean_mm": pooled["mean_mm"],
            "vs_mean_shape": pooled["median_mm"] / baseline["pooled"]["median_mm"],
            "spread_ratio": "" if spread is None else spread}


def summarise(rows: list[dict], names: list[str]) -> list[dict]:
    """Per run: the mean and the standard deviation over seeds of both ratios (the baseline first)."""
    summary = [{"run": BASELINE, "seeds": 1, "vs_mean_shape": 1.0, "vs_mean_shape_std": 0.0, "spread_ratio": None,
                "spread_ratio_std": None, "median_mm": rows[0]["median_mm"]}]
    for name in names:
        runs = [r for r in rows if r["run"] == name]
        entry = {"run": name, "seeds": len(runs), "median_mm": float(np.mean([r["median_mm"] for r in runs]))}
        for key in ("vs_mean_shape", "spread_ratio"):
            values = np.array([r[key] for r in runs], dtype=float)
            entry[key], entry[f"{key}_std"] = float(values.mean()), float(values.std(ddof=1) if len(values) > 1 else 0)
        summary.append(entry)
    return summary


def markdown_table(summary: list[dict], n_seeds: int) -> str:
    """The summary as a markdown table: both ratios, mean ± std over the seeds."""
    lines = [f"| run | NoW median / mean shape ({n_seeds} seed{'s' if n_seeds > 1 else ''}) | "
             "β spread within / between people | median (mm) |", "|---|---:|---:|---:|"]
    for r in summary:
        spread = "" if r["spread_ratio"] is None else f"{r['spread_ratio']:.3f} ± {r['spread_ratio_std']:.3f}"
        lines.append(f"| {r['run']} | {r['vs_mean_shape']:.3f} ± {r['vs_mean_shape_std']:.3f} | {spread} | "
                     f"{r['median_mm']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], summary: list[dict], histories: dict, title: str):
    """Both ratios per run (every seed a dot, the mean ± std a bar) and the landmark loss curves. Returns the Figure."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    runs = [r for r in summary if r["run"] != BASELINE]
    for axis, key, label in ((axes[0], "vs_mean_shape", "NoW median error / mean shape's\n(1 = no better)"),
                             (axes[1], "spread_ratio", "β spread: within a person / between people\n"
                                                       "(what the ring pushes down)")):
        x = np.arange(len(runs))
        axis.bar(x, [r[key] for r in runs], yerr=[r[f"{key}_std"] for r in runs], color="tab:blue", alpha=0.6,
                 capsize=4)
        for i, r in enumerate(runs):
            values = [row[key] for row in rows if row["run"] == r["run"]]
            axis.scatter(np.full(len(values), i), values, color="k", s=12, zorder=3)
        if key == "vs_mean_shape":
            axis.axhline(1.0, color="gray", ls="--", label=BASELINE)
            axis.legend(fontsize=8)
        low = min(v for r in runs for v in [row[key] for row in rows if row["run"] == r["run"]])
        high = max(v for r in runs for v in [row[key] for row in rows if row["run"] == r["run"]])
        axis.set_ylim(max(0.0, low - 0.1 * (high - low + 0.1)), high + 0.15 * (high - low + 0.1))
        axis.set_xticks(x, [r["run"] for r in runs], rotation=20, ha="right")
        axis.set_ylabel(label)
    for name, curves in histories.items():
        mean = np.mean([np.asarray(c) for c in curves], axis=0)
        axes[2].plot(np.arange(1, len(mean) + 1), mean, label=name)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("landmark loss (mean over seeds)")
    axes[2].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def write_outputs(out: Path, rows: list[dict], summary: list[dict], table: str, histories: dict, mode_name: str,
                  seconds: float) -> dict:
    """ablation.md, .csv (one row per run and seed), .json and .png in ``out``; returns their paths."""
    steps = max((r["steps"] for r in rows), default=0)
    best = min(summary[1:], key=lambda r: r["vs_mean_shape"], default=summary[0])
    markdown = (f"# RingNet ablation ({mode_name}, {steps} steps per run, {seconds:.0f} s)\n\n{table}\n\n"
                "Lower is better for both ratios; a NoW ratio of 1.0 is no better than the mean face. "
                f"Best NoW ratio: {best['run']}, {best['vs_mean_shape']:.2f} x the mean shape's.\n")
    data = {"mode": mode_name, "seconds": seconds, "rows": rows, "summary": summary, "landmark_loss": histories}
    figure = plot(rows, summary, histories, f"ablation ({mode_name}), {steps} steps per run")
    return write_report(out, "ablation", markdown, rows, data, figure)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a :class:`ConfigError` naming ``--seeds`` and its form otherwise."""
    form = "give whole numbers >= 0 separated by commas, each once, e.g. --seeds 0,1,2"
    try:
        seeds = tuple(int(seed) for seed in text.split(",") if seed.strip())
    except ValueError:
        raise ConfigError(f"--seeds {text}: not a list of seeds; {form}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {text}: {form}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.ablation", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    for name in MODES:
        size.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--only", default="", help=f"comma-separated runs among {list(ABLATIONS)}")
    parser.add_argument("--steps", type=int, default=None, help="steps per run, >= 1 (default: the mode's)")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda for --paper, else cpu)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; every run is trained once per seed")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    device = args.device or ("cuda" if mode == "paper" else "cpu")
    only = [n.strip() for n in args.only.split(",") if n.strip()] or None
    if only:  # "R=2" is short for "ring R=2"
        only = [n if n in ABLATIONS else f"ring {n}" if f"ring {n}" in ABLATIONS else n for n in only]
    try:
        if args.steps is not None and args.steps < 1:
            raise ConfigError(f"--steps {args.steps}: give 1 or more")
        if args.out.is_file():
            raise ConfigError(f"--out {args.out}: is a file; give a folder")
        unknown = [n for n in only or [] if n not in ABLATIONS]
        if unknown:
            raise ConfigError(f"--only {args.only}: unknown run(s) {unknown}; choose among {list(ABLATIONS)} "
                              "(R=2 is short for 'ring R=2')")
        seeds = parse_seeds(args.seeds)
        result = run_ablation(mode, args.out, only, args.steps, device, seeds)
    except (ValueError, RuntimeError, FileNotFoundError, CheckpointError) as error:  # ValueError: ConfigError too
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"done in {result['seconds']:.0f} s; " + ", ".join(str(p) for p in result["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
