"""FLAME decoder speed: ringnet_lib against smplx 0.1.28, same model, same inputs, one run.

    python bench/flame_forward.py [--model random|default] [--repeats N]

Prints, for batch 1, 64 and 512, forward and forward+backward, the median
time of each and the ratio ours/smplx (target: <= 0.8 at batch 64 and 512 on
CPU). The two are interleaved, so drifts of a shared machine hit both alike.
The default model is a FLAME-sized random model (5,023 vertices, non-zero
pose correctives), so that every term of the decoder is timed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import smplx
import torch

from ringnet_lib import model_io, testing
from ringnet_lib.default_head import default_model
from ringnet_lib.flame import FLAME


def make_folder(kind: str, folder: Path) -> Path:
    model = default_model() if kind == "default" else testing.random_flame_model(n_vertices=5023, seed=0)
    return model_io.write_flame_folder(model, folder)


def time_call(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["random", "default"], default="random")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(args.model, Path(tmp))
        ours = FLAME(folder)
        print(f"model: {args.model} ({ours.v_template.shape[0]} vertices), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print(f"{'batch':>6} {'pass':>9} {'ours ms':>9} {'smplx ms':>9} {'ours/smplx':>11}")
        for batch in args.batches:
            reference = smplx.FLAME(model_path=str(folder), num_betas=100, num_expression_coeffs=50, batch_size=batch)
            shape, expression, pose = (torch.as_tensor(a) for a in testing.random_parameters(batch, seed=batch))

            def run_ours(backward: bool) -> None:
                s = shape.clone().requires_grad_(backward)
                out = ours(shape=s, expression=expression, pose=pose)
                if backward:
                    out.vertices.sum().backward()

            def run_smplx(backward: bool) -> None:
                s = shape.clone().requires_grad_(backward)
                out = reference(betas=s, expression=expression, global_orient=pose[:, :3], neck_pose=pose[:, 3:6],
                                jaw_pose=pose[:, 6:9], leye_pose=pose[:, 9:12], reye_pose=pose[:, 12:])
                if backward:
                    out.vertices.sum().backward()

            repeats = max(3, args.repeats // 3) if batch >= 512 else args.repeats
            for backward in (False, True):
                mine, theirs = [], []
                for _ in range(2):  # warm-up
                    run_ours(backward), run_smplx(backward)
                for _ in range(repeats):  # interleaved
                    mine += time_call(lambda: run_ours(backward), 1)
                    theirs += time_call(lambda: run_smplx(backward), 1)
                a, b = statistics.median(mine) * 1e3, statistics.median(theirs) * 1e3
                label = "fwd+bwd" if backward else "fwd"
                print(f"{batch:>6} {label:>9} {a:>9.2f} {b:>9.2f} {a / b:>11.2f}")


if __name__ == "__main__":
    main()
