"""RingNet's ablations at equal steps: ring size R, λ_sc, and three consistency terms.

    python -m ringnet_lib.ablation --ci    --out runs/ablation_ci      # seconds: tiny, checks the pipeline
    python -m ringnet_lib.ablation --quick --out runs/ablation         # CPU minutes (make ablation)
    python -m ringnet_lib.ablation --paper --out runs/ablation_paper   # a GPU: the paper preset (R=6, 224 px)
    python -m ringnet_lib.ablation --quick --only "R=2,R=6" --steps 300 --out runs/ablation_r

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
training run uses) with :func:`ringnet_lib.evaluation.evaluate_shapes`, the NoW
metric: the predicted β per image, neutralised (ψ = 0, pose = 0), against the
ground-truth neutral mesh; a "mean shape" row (β = 0) is the baseline. Outputs in
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
from .training import TrainConfig, changed_fields, load_encoder, train
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
                             images_per_identity=5, eval_rings=0), 2, 1, 300, 2),
    # The quick preset (rendered rings, 64 px, ResNet-18) for 400 steps per run, about a third of
    # the quick preset's length, so the six runs take about 15 minutes on 2 CPU cores.
    "quick": Mode("quick", dict(max_steps=400, eval_rings=0), 12, 2, 1000, 10),
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


def run_config(name: str, mode_name: str, out: Path, steps: int | None = None, device: str = "cpu") -> TrainConfig:
    """The TrainConfig of one ablation run."""
    mode = MODES[mode_name]
    overrides = {**mode.train, **ABLATIONS[name], "out_dir": out / "runs" / slug(name), "device": device,
                 "tensorboard": False, "progress": False, "overwrite": True}
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


def run_ablation(mode_name: str, out: str | Path, only: list[str] | None = None, steps: int | None = None,
                 device: str = "cpu", log=print) -> dict:
    """Train every ablation run, score it, write the table, CSV, JSON and plot.

    Returns:
        ``{"rows": [dict per run, the baseline first], "table": markdown, "paths": {...}, "seconds": float}``.
    """
    if mode_name not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode_name!r}")
    names = list(ABLATIONS) if not only else only
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation runs {unknown}; choose from {list(ABLATIONS)}")
    started, mode, out = time.perf_counter(), MODES[mode_name], Path(out)
    decoder = Decoder()
    configs = {name: run_config(name, mode_name, out, steps, device) for name in names}
    images, truth = heldout_set(decoder, mode, configs[names[0]])
    baseline = score(torch.zeros_like(truth), truth, decoder, mode)
    rows = [row_of(BASELINE, None, None, baseline, baseline)]
    histories = {}
    for name, config in configs.items():
        log(f"[{name}] {papermill_command(config)}")
        result = train(config, decoder=decoder)
        encoder = load_encoder(result.checkpoint, decoder=decoder)[0]  # the checkpoint, as the demo loads it
        predicted = predict_params(encoder, images)[:, SHAPE]
        rows.append(row_of(name, config, result, score(predicted, truth, decoder, mode), baseline))
        histories[name] = [r["landmarks"] for r in result.history]
        log(f"[{name}] {result.steps} steps in {result.seconds:.0f} s: median {rows[-1]['median_mm']:.3f} mm "
            f"({rows[-1]['vs_mean_shape']:.2f} x mean shape)")
    table = markdown_table(rows)
    seconds = time.perf_counter() - started
    paths = write_outputs(out, rows, table, histories, mode_name, seconds)
    return {"rows": rows, "table": table, "paths": paths, "seconds": seconds}


def row_of(name: str, config, result, scores: dict, baseline: dict) -> dict:
    """One table row (a dict of plain numbers and strings)."""
    pooled = scores["pooled"]
    return {"run": name, "ring_size": getattr(config, "ring_size", ""),
            "consistency": getattr(config, "consistency", ""), "w_consistency": getattr(config, "w_consistency", ""),
            "steps": getattr(result, "steps", 0), "train_s": round(getattr(result, "seconds", 0.0), 1),
            "final_landmark_loss": result.history[-1]["landmarks"] if result is not None and result.history else "",
            "median_mm": pooled["median_mm"], "mean_mm": pooled["mean_mm"],
            "vs_mean_shape": pooled["median_mm"] / baseline["pooled"]["median_mm"]}


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table (median/mean NoW error in mm, ratio to the mean shape)."""
    lines = ["| run | R | consistency | λ_sc | steps | train (s) | median (mm) | mean (mm) | median / mean shape |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['ring_size']} | {r['consistency']} | {r['w_consistency']} | {r['steps']} | "
                     f"{r['train_s']} | {r['median_mm']:.3f} | {r['mean_mm']:.3f} | {r['vs_mean_shape']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], histories: dict, title: str):
    """Median error per run (bars, the baseline dashed) and the landmark loss curves. Returns the Figure."""
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4))
    runs = [r for r in rows if r["run"] != BASELINE]
    ratios = [r["vs_mean_shape"] for r in runs]
    bars.bar(range(len(runs)), ratios, color="tab:blue")
    bars.axhline(1.0, color="gray", ls="--", label=BASELINE)
    bars.set_xticks(range(len(runs)), [r["run"] for r in runs], rotation=20, ha="right")
    # Zoom on the differences: every bar is near 1 until a run learns a lot.
    bars.set_ylim(min(ratios + [1.0]) - 0.1, max(ratios + [1.0]) + 0.05)
    bars.set_ylabel("NoW median error / mean shape's\n(held-out identities)")
    bars.legend()
    for name, values in histories.items():
        curves.plot(np.arange(1, len(values) + 1), values, label=name)
    curves.set_yscale("log")
    curves.set_xlabel("step")
    curves.set_ylabel("landmark loss")
    curves.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def write_outputs(out: Path, rows: list[dict], table: str, histories: dict, mode_name: str, seconds: float) -> dict:
    """ablation.md, .csv, .json and .png in ``out``; returns their paths."""
    steps = max((r["steps"] for r in rows), default=0)
    best = min(rows[1:], key=lambda r: r["median_mm"], default=rows[0])
    markdown = (f"# RingNet ablation ({mode_name}, {steps} steps per run, {seconds:.0f} s)\n\n{table}\n\n"
                f"Lower is better; 1.0 = no better than the mean face. Best run: {best['run']}, median error "
                f"{best['vs_mean_shape']:.2f} x the mean shape's.\n")
    data = {"mode": mode_name, "seconds": seconds, "rows": rows, "landmark_loss": histories}
    return write_report(out, "ablation", markdown, rows, data, plot(rows, histories,
                                                                     f"ablation ({mode_name}), {steps} steps per run"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.ablation", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    for name in MODES:
        size.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--only", default="", help=f"comma-separated runs among {list(ABLATIONS)}")
    parser.add_argument("--steps", type=int, default=None, help="steps per run, >= 1 (default: the mode's)")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda for --paper, else cpu)")
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
        result = run_ablation(mode, args.out, only, args.steps, device)
    except (ValueError, RuntimeError, FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"done in {result['seconds']:.0f} s; " + ", ".join(str(p) for p in result["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
