"""Start-up: a fresh process's ``FLAME()`` beside a fresh process that only imports torch, one run.

    python bench/startup.py [--repeats 7]

Every CLI call, notebook and test process builds the default head, so it must be cheap:
target <= 0.5 s on top of ``import torch`` (it was 1.5-1.8 s on a quiet 2-core machine before
the built arrays were cached, :mod:`ringnet_lib.default_head.cache`). The two commands are
interleaved so that a busy machine slows both alike; the first, cache-filling run is not timed.
Also timed, as a third figure: a cold build (an empty cache folder), what a new machine pays once.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TORCH_ONLY = "import torch"
WITH_FLAME = "import torch\nfrom ringnet_lib.flame import FLAME\nFLAME()"


def run(code: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    run(WITH_FLAME)  # fills the cache if it is empty
    torch_only, with_flame = [], []
    for _ in range(args.repeats):
        torch_only.append(run(TORCH_ONLY))
        with_flame.append(run(WITH_FLAME))
    with tempfile.TemporaryDirectory() as empty:
        cold = run(WITH_FLAME, {**os.environ, "RINGNET_CACHE": empty})
    a, b = statistics.median(torch_only), statistics.median(with_flame)
    print(f"fresh process, median of {args.repeats}: import torch {a:.2f} s | import torch + FLAME() {b:.2f} s | "
          f"FLAME() adds {b - a:.2f} s (target <= 0.5), ratio {b / a:.2f}")
    print(f"cold cache (first process on a new machine): import torch + FLAME() {cold:.2f} s")


if __name__ == "__main__":
    main()
