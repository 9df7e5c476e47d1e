"""DDP on the CPU (gloo): 2 processes under torchrun take the same steps as 1 process on the same global batch.

BatchNorm: with ``bn_mode="train"`` each process normalises with its own half
batch, which is *meant* to differ from one process on the whole batch; for the
equivalence the trunk runs with ``bn_mode="eval"`` (running statistics, so
every image's output depends on that image only) and dropout 0 (the masks are
drawn per process). What remains is float rounding: DDP averages the two
halves' gradients, one process averages over the whole batch in another order;
Adam then divides by sqrt(v), which can magnify that rounding for parameters
with tiny gradients, hence the tolerance below.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ringnet_lib.training import TrainConfig, load_checkpoint, train

from test_train import small_flame_folder

LR = 1e-4  # the quick preset's Adam learning rate (checked below)
RMS_TOLERANCE = 1e-2  # measured: rounding ~1e-3; other rings (n_identities 9 for 8) give 0.41
MOVED_TOLERANCE = 1e-4  # measured: rounding a few weights in 12 million; other rings 0.27


def config_values(tmp_path, out_dir, workers=0):
    return dict(data="render", workers=workers, flame_model=small_flame_folder(tmp_path), image_size=32, ring_size=3,
                batch_size=4,
                n_identities=8, images_per_identity=3, max_steps=3, eval_rings=0, dropout=0.0, bn_mode="eval",
                tensorboard=False, progress=False, checkpoint_every=100, out_dir=str(out_dir))


# workers=2: each process's loader workers render their share of the rings; the images must not depend on
# which process or worker drew them (rings are keyed by (epoch, ring), not by a worker's random state).
@pytest.mark.parametrize("workers", [0, 2])
def test_two_processes_match_one(tmp_path, workers):
    values = config_values(tmp_path, tmp_path / "ddp", workers)
    flags = [f for k, v in values.items() for f in ([f"--{k.replace('_', '-')}"] if v is True else
                                                    [f"--no-{k.replace('_', '-')}"] if v is False else
                                                    [f"--{k.replace('_', '-')}", str(v)])]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ringnet_lib.train", "--preset", "quick", *flags]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    single = train(TrainConfig.from_preset("quick", **config_values(tmp_path, tmp_path / "single", workers)))
    ddp_state = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    single_state = load_checkpoint(single.checkpoint)
    assert ddp_state["step"] == single_state["step"] == 3
    assert single_state["config"]["lr"] == LR
    floats = [k for k, v in single_state["model"].items() if v.is_floating_point()]
    difference = torch.cat([(ddp_state["model"][k].double() - single_state["model"][k].double()).flatten()
                            for k in floats]).abs()
    # Each Adam step moves a weight by up to ~lr, in the direction of its gradient's sign. A weight whose
    # gradient is ~0 can take its steps either way on a rounding difference (up to 2 lr apart), so the
    # largest difference alone cannot tell rounding from a bug. Wrong data on a process (or unaveraged
    # gradients) changes the direction of most weights' steps; rounding changes a handful.
    rms = difference.pow(2).mean().sqrt().item() / (LR * 3)
    moved = (difference > LR / 10).double().mean().item()
    print(f"2 processes vs 1: rms difference {rms:.3g} of 3 steps, {moved:.2e} of weights off by > lr/10, "
          f"max {difference.max().item():.3g}")
    assert rms < RMS_TOLERANCE and moved < MOVED_TOLERANCE, (rms, moved)
    # the logged losses are averaged over processes: the same numbers as one process
    for a, b in zip(ddp_state["history"], single_state["history"]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
