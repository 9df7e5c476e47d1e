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

from ringnet_lib.training import TrainConfig, load_checkpoint, train

from test_train import small_flame_folder

# max |Δparameter| after 3 Adam steps at lr 1e-4: each step moves a weight by up to ~lr,
# so 2e-5 is < 7% of the distance travelled (measured: ~6e-6, in a few conv weights).
TOLERANCE = 2e-5


def config_values(tmp_path, out_dir):
    return dict(data="render", flame_model=small_flame_folder(tmp_path), image_size=32, ring_size=3,
                batch_size=4,
                n_identities=8, images_per_identity=3, max_steps=3, eval_rings=0, dropout=0.0, bn_mode="eval",
                tensorboard=False, progress=False, checkpoint_every=100, out_dir=str(out_dir))


def test_two_processes_match_one(tmp_path):
    values = config_values(tmp_path, tmp_path / "ddp")
    flags = [f for k, v in values.items() for f in ([f"--{k.replace('_', '-')}"] if v is True else
                                                    [f"--no-{k.replace('_', '-')}"] if v is False else
                                                    [f"--{k.replace('_', '-')}", str(v)])]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ringnet_lib.train", "--preset", "quick", *flags]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, env=environment)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    single = train(TrainConfig.from_preset("quick", **config_values(tmp_path, tmp_path / "single")))
    ddp_state = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    single_state = load_checkpoint(single.checkpoint)
    assert ddp_state["step"] == single_state["step"] == 3
    differences = {k: (ddp_state["model"][k].float() - v.float()).abs().max().item()
                   for k, v in single_state["model"].items() if v.is_floating_point()}
    worst = max(differences, key=differences.get)
    print(f"max |param difference| 2 processes vs 1: {differences[worst]:.3g} ({worst})")
    assert differences[worst] < TOLERANCE, (worst, differences[worst])
    # the logged losses are averaged over processes: the same numbers as one process
    for a, b in zip(ddp_state["history"], single_state["history"]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
