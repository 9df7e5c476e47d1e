"""Checkpoints never run code: a hostile ``checkpoint.pt`` is refused, with one line naming the file, by every
entry point that reads checkpoints (train --resume, the demo, the evaluation, the ablation)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ringnet_lib.data.samples import ASTRONAUT_PHOTO
from ringnet_lib.training import checkpoint as ckpt


class _Payload:
    """Unpickling this would create ``marker`` (through os.system): what a hostile file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(folder: Path) -> tuple[Path, Path]:
    marker = folder / "pwned"
    path = folder / ckpt.CHECKPOINT_NAME
    torch.save({"model": {}, "config": {}, "payload": _Payload(marker)}, path)
    return path, marker


def test_our_checkpoints_hold_no_pickled_code_and_round_trip(tmp_path):
    state = {"format_version": ckpt.FORMAT_VERSION, "model": {"w": torch.ones(2)}, "config": {"lr": 1e-4},
             "rng": [ckpt.rng_state()], "step": 3}
    path = ckpt.save_checkpoint(tmp_path / "c.pt", state)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    np.random.seed(5)
    expected = np.random.rand(3)
    np.random.seed(5)
    saved = ckpt.rng_state()
    np.random.rand(7)
    ckpt.set_rng_state(saved)
    assert np.array_equal(np.random.rand(3), expected)
    assert not (tmp_path / "c.pt.tmp").exists()


def test_a_checkpoint_with_a_numpy_rng_array_still_loads(tmp_path):
    """Files written before the RNG state became plain values hold it as a numpy array: the few numpy globals that
    needs are allowed, nothing else."""
    state = {"format_version": ckpt.FORMAT_VERSION, "model": {}, "config": {},
             "rng": [{"numpy": np.random.get_state()}]}
    torch.save(state, tmp_path / "old.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "old.pt")
    assert np.array_equal(loaded["rng"][0]["numpy"][1], np.random.get_state()[1])


def test_a_checkpoint_of_the_previous_format_is_a_one_line_error(tmp_path):
    """Format 1 (no format_version; data "memory", old loss names) is read safely, then refused clearly."""
    state = {"model": {}, "config": {"data": "memory"}, "rng": [{"numpy": np.random.get_state()}]}
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ckpt.CheckpointError, match=f"{tmp_path / 'old.pt'}: written by another version.*format 1")\
            as info:
        ckpt.load_checkpoint(tmp_path / "old.pt")
    assert "\n" not in str(info.value) and "retrain" in str(info.value)


def test_a_hostile_checkpoint_is_refused_before_it_runs(tmp_path):
    path, marker = hostile_checkpoint(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=f"{path}: refused to load.*system"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04 truncated"])
def test_corrupt_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError, match=str(path)) as info:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a ringnet_lib training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")


def test_train_resume_refuses_it(tmp_path, capsys):
    from ringnet_lib.train import main

    path, marker = hostile_checkpoint(tmp_path)
    code = main(["--preset", "quick", "--out-dir", str(tmp_path), "--resume", str(path), "--no-tensorboard",
                 "--no-progress", "--max-steps", "1"])
    assert code == 2 and not marker.exists()
    assert f"{path}: refused to load" in capsys.readouterr().err


def test_the_demo_refuses_it(tmp_path, capsys):
    from ringnet_lib.demo import main

    path, marker = hostile_checkpoint(tmp_path)
    code = main([str(ASTRONAUT_PHOTO), "--method", "regress", "--checkpoint", str(path), "--out",
                 str(tmp_path / "out")])
    assert code == 2 and not marker.exists()
    assert f"{path}: refused to load" in capsys.readouterr().err


def test_the_evaluation_refuses_it(tmp_path, capsys):
    from ringnet_lib.evaluation.trained import main

    path, marker = hostile_checkpoint(tmp_path)
    code = main([str(path), "--out", str(tmp_path / "eval")])
    assert code == 2 and not marker.exists()
    assert f"{path}: refused to load" in capsys.readouterr().err


def test_the_ablation_refuses_it(tmp_path, capsys, monkeypatch):
    """The ablation reads back the checkpoint each run wrote; swap the run for one that leaves a hostile file."""
    from ringnet_lib import ablation
    from ringnet_lib.training import TrainResult

    path, marker = hostile_checkpoint(tmp_path)
    monkeypatch.setattr(ablation, "train", lambda config, **_: TrainResult(checkpoint=path), raising=False)
    code = ablation.main(["--ci", "--only", "R=2", "--out", str(tmp_path / "ablation")])
    assert code == 2 and not marker.exists()
    assert f"{path}: refused to load" in capsys.readouterr().err
