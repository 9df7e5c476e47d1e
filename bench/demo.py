"""The photo demo's speed: per photo in a warm process, and from the command line, beside a bare process.

    python bench/demo.py [--repeats 3]

Targets: <= 3 s per photo in a warm process and <= 8 s from the command line (with the photos extra, on
the shipped photo). In-run baseline: a fresh process that only imports torch (what any CLI call pays
first); the CLI figure is also printed as a ratio to it. Both methods are timed: ``fit`` (dlib's 68
landmarks, FLAME fitted to them; the default) and ``regress`` (a tiny checkpoint's encoder).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ringnet_lib.data.photos import dlib_available
from ringnet_lib.data.samples import ASTRONAUT_PHOTO
from ringnet_lib.demo import load_method, run_photo
from ringnet_lib.training import TrainConfig, train


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not dlib_available():
        sys.exit("the photos extra is not installed (pip install dlib-bin face-recognition-models)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        checkpoint = train(TrainConfig.from_preset("quick", max_steps=1, eval_rings=0, tensorboard=False,
                                                   progress=False, out_dir=scratch / "run")).checkpoint
        methods = {"fit": load_method("fit"), "regress": load_method("regress", checkpoint)}
        for name, model in methods.items():
            run_photo(model, ASTRONAUT_PHOTO, scratch / "warmup")  # dlib's model file, first kernels
            warm = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run_photo(model, ASTRONAUT_PHOTO, scratch / name)
                warm.append(time.perf_counter() - start)
            print(f"{name:>8}, warm process: {statistics.median(warm):.2f} s per photo (target <= 3)")
        bare, cli = [], {"fit": [], "regress": []}
        for _ in range(args.repeats):
            bare.append(seconds([sys.executable, "-c", "import torch"]))
            for name in cli:
                extra = ["--checkpoint", str(checkpoint)] if name == "regress" else []
                cli[name].append(seconds([sys.executable, "-m", "ringnet_lib.demo", str(ASTRONAUT_PHOTO),
                                          "--method", name, "--out", str(scratch / "cli"), *extra]))
        base = statistics.median(bare)
        print(f"baseline: a fresh `import torch` {base:.2f} s")
        for name, times in cli.items():
            median = statistics.median(times)
            print(f"{name:>8}, command line: {median:.2f} s for one photo (target <= 8), {median / base:.1f} x the "
                  "bare torch process")


if __name__ == "__main__":
    main()
