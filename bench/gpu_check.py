"""The prepared GPU check: the numbers that matter at paper scale, in one run of at most 8 minutes.

    bash bench/gpu_check.sh               # on a GPU machine (or: python bench/gpu_check.py)
    python bench/gpu_check.py --tiny      # the same pipeline on a CPU in a minute (what the tests run)

1. **The 6-branch step against a plain ResNet-50 step** (``bench/train_step.py`` on CUDA, bf16 autocast,
   channels_last), at 224 px with the paper's batch (8 rings of 6): target, RingNet >= 80 % of the
   plain step's images/s.
2. **Renders against the step**: in the paper preset's own loop, the time to render a batch of
   textured rings on the device (``training.data.prepare_batch``) against the time of the training
   step on it: target, the render < 20 % of the step.
3. **A 5-minute paper-preset run** (``-p preset paper``: ResNet-50, R = 6, 224 px, textured rings
   rendered on the device, fresh identities) and its **NoW evaluation** on held-out identities
   next to the mean shape.
4. **One summary screen** with every figure and whether each target is met, also written as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py, beside this file

from train_step import compare_steps  # noqa: E402

from ringnet_lib.evaluation.trained import benchmark_checkpoint, median_ratio  # noqa: E402
from ringnet_lib.training import TrainConfig, build_decoder, build_encoder, ring_step, train  # noqa: E402
from ringnet_lib.training.data import make_loader, make_rings, prepare_batch  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_against_step(config: TrainConfig, batches: int) -> dict:
    """Median seconds to render a batch on the device vs to take a training step on it (the paper loop's pieces)."""
    device = torch.device(config.device)
    decoder = build_decoder(config).to(device)
    rings = make_rings(config, decoder)
    encoder = build_encoder(config, decoder, rings.mean_camera(decoder)).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    cuda = device.type == "cuda"
    amp = torch.bfloat16 if cuda and config.amp else None
    render_s, step_s = [], []
    for index, batch in enumerate(make_loader(config, rings, total_steps=batches + 1)):
        sync(device)
        start = time.perf_counter()
        batch = prepare_batch(batch, rings, decoder, device, cuda and config.channels_last)
        sync(device)
        rendered = time.perf_counter()
        prediction = ring_step(encoder, decoder, batch, config.consistency, config.loss_weights(), config.margin, amp)
        optimizer.zero_grad(set_to_none=True)
        prediction.total.backward()
        optimizer.step()
        sync(device)
        if index:  # the first batch warms up kernels and workers
            render_s.append(rendered - start)
            step_s.append(time.perf_counter() - rendered)
    render, step = statistics.median(render_s), statistics.median(step_s)
    return {"render_s": render, "step_s": step, "render_over_step": render / step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a CPU-sized run of the whole pipeline (tests)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the paper-preset run")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run and summary.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --tiny on a CPU", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    size, rings_per_step = (32, 2) if args.tiny else (224, 8)
    tiny = dict(trunk="resnet18", image_size=size, batch_size=rings_per_step, n_rings=16, workers=0,
                eval_rings=0) if args.tiny else {}
    print(f"== 1. the 6-branch step vs a plain ResNet-50 step ({device}, {size} px, {rings_per_step} rings of 6)")
    steps = compare_steps((size,), rings_per_step, 6, repeats=2 if args.tiny else 10, warmup=1 if args.tiny else 3,
                          device=device, trunk="resnet18" if args.tiny else "resnet50")[0]
    print("== 2. rendering a batch on the device vs the training step on it")
    config = TrainConfig.from_preset("paper", device=device, out_dir=out / "paper_run", overwrite=True,
                                     tensorboard=False, **tiny)
    render = render_against_step(config, batches=2 if args.tiny else 10)
    print(f"render {1000 * render['render_s']:.1f} ms, step {1000 * render['step_s']:.1f} ms, "
          f"ratio {render['render_over_step']:.3f}")
    # Steps that fit in the time left for training: what the measured step and render cost.
    per_step = render["render_s"] + render["step_s"]
    max_steps = 3 if args.tiny else max(10, int(60 * args.minutes / per_step))
    print(f"== 3. a {args.minutes:g}-minute paper-preset run: {max_steps} steps, then its NoW evaluation")
    result = train(TrainConfig.from_preset("paper", device=device, out_dir=out / "paper_run", overwrite=True,
                                           tensorboard=False, max_steps=max_steps, progress_interval=30.0, **tiny))
    scores = benchmark_checkpoint(result.checkpoint, n_identities=2 if args.tiny else 12,
                                  images_per_identity=1 if args.tiny else 2, n_points=300 if args.tiny else 1000,
                                  icp_iterations=2 if args.tiny else 10)
    images = result.steps * config.batch_size * config.ring_size
    summary = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (--tiny)",
        "step": steps, "step_ratio_images_per_s": steps["ringnet_images_per_s"] / steps["baseline_images_per_s"],
        "render": render,
        "paper_run": {"steps": result.steps, "seconds": result.seconds, "images": images,
                      "images_per_s": images / result.seconds,
                      "first_total": result.history[0]["total"], "last_total": result.history[-1]["total"],
                      "first_landmarks": result.history[0]["landmarks"],
                      "last_landmarks": result.history[-1]["landmarks"]},
        "now": {name: r["pooled"] for name, r in scores.items()}, "now_ratio": median_ratio(scores),
        "seconds": time.perf_counter() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    ok = lambda flag: "OK " if flag else "NOT"
    run = summary["paper_run"]
    print("\n" + "=" * 78)
    print(f"GPU check on {summary['device']}, {summary['seconds']:.0f} s in all (target <= 480 s)")
    print(f"[{ok(summary['step_ratio_images_per_s'] >= 0.8)}] 6-branch step: {steps['ringnet_images_per_s']:.0f} "
          f"images/s vs plain ResNet-50 {steps['baseline_images_per_s']:.0f} images/s = "
          f"{100 * summary['step_ratio_images_per_s']:.0f} % (target >= 80 %)")
    print(f"[{ok(render['render_over_step'] < 0.2)}] render {1000 * render['render_s']:.1f} ms per batch vs step "
          f"{1000 * render['step_s']:.1f} ms = {100 * render['render_over_step']:.0f} % (target < 20 %)")
    print(f"[   ] paper run: {run['steps']} steps, {run['images']} images in {run['seconds']:.0f} s "
          f"({run['images_per_s']:.0f} images/s); total loss {run['first_total']:.3g} -> {run['last_total']:.3g}, "
          f"landmark loss {run['first_landmarks']:.3g} -> {run['last_landmarks']:.3g}")
    print(f"[   ] NoW median, held-out identities: trained {summary['now']['trained encoder']['median_mm']:.3f} mm, "
          f"mean shape {summary['now']['mean shape (β = 0)']['median_mm']:.3f} mm, ratio {summary['now_ratio']:.3f}")
    print(f"summary: {out / 'summary.json'}")
    print("=" * 78)
    return 0


if __name__ == "__main__":
    sys.exit(main())
