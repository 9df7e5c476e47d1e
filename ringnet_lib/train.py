"""``python -m ringnet_lib.train``: RingNet training from the command line (the loop is :mod:`ringnet_lib.training`).

    python -m ringnet_lib.train --preset quick                       # CPU minutes, rings rendered on the fly
    python -m ringnet_lib.train --preset quick --epochs 1 --ring-size 3 --out-dir runs/try
    python -m ringnet_lib.train --preset quick --data synthetic      # the shipped textured sample
    python -m ringnet_lib.train --preset paper --device cuda         # R=6, 224 px, ResNet-50, 10 epochs
    python -m ringnet_lib.train --preset quick --resume auto         # continue runs/quick/checkpoint.pt exactly
    torchrun --standalone --nproc_per_node 2 -m ringnet_lib.train --preset quick   # DDP (gloo on CPU, NCCL on GPU)

One flag per :class:`~ringnet_lib.training.config.TrainConfig` field (``--ring-size`` for
``ring_size``; booleans as ``--flag/--no-flag``; ``none`` for "not set"); an unknown flag is an
error. A preset sets many fields at once; explicit values override it. Errors in the input are
one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys

from .cli import ConfigError, add_arguments, to_args
from .data.dataset import DatasetFormatError
from .data.rings import RingError
from .model_io import ModelFileError
from .training.checkpoint import CheckpointError
from .training.config import PRESETS, TrainConfig, changed_fields
from .training.loop import NonFiniteLossError, train


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field, grouped; unset flags keep the preset's value."""
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.train", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                                     epilog="\n".join(__doc__.split("\n")[2:8]))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="the preset the flags override")
    add_arguments(parser, TrainConfig, skip=("preset",))
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    values = vars(build_parser().parse_args(argv))  # unknown flags: argparse exits with an error
    return TrainConfig.from_preset(values.pop("preset"), **values)


def config_to_args(config: TrainConfig) -> list[str]:
    """The shortest CLI flags that rebuild ``config``: ``config_from_args(config_to_args(c)) == c``."""
    return ["--preset", config.preset] + to_args(changed_fields(config))


# What a user can get wrong; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, CheckpointError, DatasetFormatError, RingError, ModelFileError, FileNotFoundError,
               NonFiniteLossError)


def main(argv: list[str] | None = None) -> int:
    try:
        config = config_from_args(argv)
        result = train(config)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = result.history[-1] if result.history else {}
    if result.history and not math.isnan(last.get("total", 0.0)):
        print(f"done: {result.steps} steps in {result.seconds:.0f} s; last step: "
              + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step"))
    if result.initial_metrics or result.final_metrics:
        print(f"metrics at start: {result.initial_metrics}\nmetrics at end:   {result.final_metrics}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
