"""The training loop: config/CLI, clear errors before training, exact resume, the NaN guard."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ringnet_lib import testing
from ringnet_lib import train as train_module
from ringnet_lib.train import (NonFiniteLossError, TrainConfig, changed_fields, config_from_args, config_to_args,
                               train)
from ringnet_lib.training import checkpoint as ckpt
from ringnet_lib.training.data import DEFAULT_SYNTHETIC


def small_flame_folder(root) -> str:
    """A small random FLAME-format folder (300 vertices, contour table included): no default head to build."""
    folder = root / "small_flame"
    if not folder.exists():
        testing.write_random_flame_folder(folder, n_vertices=300, seed=7)
    return str(folder)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """ResNet-18 at 32 px, rings of 3, 2 rings per step: a few steps take seconds on a CPU."""
    values = dict(data="memory", flame_model=small_flame_folder(tmp_path), image_size=32, ring_size=3, batch_size=2,
                  n_identities=6, images_per_identity=3,
                  max_steps=4, eval_rings=0, tensorboard=False, progress=False, out_dir=str(tmp_path / "run"),
                  checkpoint_every=2, dropout=0.5)
    values.update(overrides)
    return TrainConfig.from_preset("quick", **values)


def test_config_to_args_round_trips_through_the_cli():
    configs = [TrainConfig.from_preset("quick"),
               TrainConfig.from_preset("quick", tensorboard=False, landmarks68=False, lr=3e-4, ring_size=3,
                                       consistency="swap", trunk_weights="/tmp/w.pth"),
               TrainConfig.from_preset("paper", epochs=2, device="cpu", amp=False, margin=0.25)]
    for config in configs:
        flags = config_to_args(config)
        assert config_from_args(flags) == config
        assert len(flags) == 2 + sum(1 if isinstance(v, bool) else 2 for v in changed_fields(config).values())
    assert config_to_args(configs[0]) == ["--preset", "quick"]
    assert "--no-tensorboard" in config_to_args(configs[1]) and "--no-amp" in config_to_args(configs[2])


def test_cli_flags_are_the_config_fields():
    config = config_from_args(["--preset", "quick", "--epochs", "1", "--ring-size", "5", "--no-tensorboard",
                               "--lr", "3e-4", "--trunk", "resnet50"])
    assert (config.epochs, config.ring_size, config.tensorboard, config.lr, config.trunk) == (1, 5, False, 3e-4,
                                                                                            "resnet50")
    assert config.image_size == train_module.PRESETS["quick"]["image_size"]  # untouched fields keep the preset
    paper = config_from_args(["--preset", "paper"])
    assert (paper.ring_size, paper.image_size, paper.trunk, paper.epochs, paper.lr) == (6, 224, "resnet50", 10, 1e-4)
    with pytest.raises(SystemExit):
        config_from_args(["--no-such-flag", "1"])
    with pytest.raises(SystemExit):  # no prefix matching: "--epoch" is not "--epochs"
        config_from_args(["--epoch", "3"])
    with pytest.raises(SystemExit):
        config_from_args(["--epochs", "one"])
    with pytest.raises(TypeError, match="unknown config fields"):
        TrainConfig.from_preset("quick", epoch=3)
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.from_preset("huge")


def test_bad_inputs_fail_before_training(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(train_module, "ring_step", lambda *a, **k: started.append(1))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        train(tiny_config(tmp_path, data=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="ring_size 5"):
        train(tiny_config(tmp_path, ring_size=5))  # 3 images per identity: at most 4 per ring
    with pytest.raises(ValueError, match="consistency"):
        train(tiny_config(tmp_path, consistency="triplet"))
    with pytest.raises(ValueError, match="w_true_shape must be >= 0"):
        train(tiny_config(tmp_path, w_true_shape=-1.0))
    if DEFAULT_SYNTHETIC.is_dir():  # the data package's sample: 6 images per identity, so R <= 7
        with pytest.raises(ValueError, match="ring_size 8 is larger than the images available"):
            train(tiny_config(tmp_path, data="synthetic", ring_size=8))
    assert not started


def test_exact_resume_after_a_kill(tmp_path):
    """Kill after step 3 (last checkpoint: step 2), resume (replays step 3): the same losses as an uninterrupted run.

    Dropout is on (p = 0.5), so this also checks that the RNG states are restored."""
    full = train(tiny_config(tmp_path, out_dir=str(tmp_path / "full"), max_steps=3))

    class Killed(Exception):
        pass

    def kill_at_3(step, record):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        # max_steps=4: step 3 is not the last, so no checkpoint is written at 3 before the kill
        train(tiny_config(tmp_path, out_dir=str(tmp_path / "killed"), max_steps=4), on_step=kill_at_3)
    assert ckpt.load_checkpoint(tmp_path / "killed" / ckpt.CHECKPOINT_NAME)["step"] == 2
    resumed = train(tiny_config(tmp_path, out_dir=str(tmp_path / "killed"), max_steps=3, resume="auto"))
    assert [r["step"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history == full.history  # exact: every loss term, every step
    final_full = ckpt.load_checkpoint(full.checkpoint)["model"]
    final_resumed = ckpt.load_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    train(tiny_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="another config.*ring_size"):
        train(tiny_config(tmp_path, ring_size=2, max_steps=3, resume="auto"))
    with pytest.raises(ckpt.CheckpointError, match="nothing.pt: no checkpoint there"):
        train(tiny_config(tmp_path, resume=str(tmp_path / "nothing.pt")))


def test_a_checkpoint_older_than_a_config_field_resumes_with_its_default(tmp_path):
    config = tiny_config(tmp_path)
    saved = dataclasses.asdict(config)
    del saved["w_true_shape"]  # written before the field existed
    train_module.check_compatible(saved, config)
    with pytest.raises(ValueError, match="w_true_shape"):
        train_module.check_compatible(saved, dataclasses.replace(config, w_true_shape=1.0))


def test_true_shape_diagnostic_reaches_the_loss_from_the_data(tmp_path):
    """w_true_shape > 0: the in-memory set's true β are in the batch; the term is logged every step."""
    result = train(tiny_config(tmp_path, max_steps=2, w_true_shape=1.0, w_landmarks=0.0, w_consistency=0.0))
    assert [sorted(r) for r in result.history] == [sorted(["consistency", "landmarks", "shape", "expression",
                                                           "true_shape", "total", "step"])] * 2
    for record in result.history:  # the total is the true-β error alone, plus the tiny regularisers
        expected = record["true_shape"] + 1e-4 * (record["shape"] + record["expression"])
        assert record["total"] == pytest.approx(expected, rel=1e-5)


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step = train_module.ring_step
    calls = []

    def poisoned(*args, **kwargs):
        prediction = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            return prediction._replace(total=prediction.total * float("nan"))
        return prediction

    monkeypatch.setattr(train_module, "ring_step", poisoned)
    config = tiny_config(tmp_path)
    with pytest.raises(NonFiniteLossError, match="step 3.*last good checkpoint"):
        train(config)
    saved = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT_NAME)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_logs_and_result(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, tensorboard=True, log_every=1, image_every=2, eval_rings=2)
    result = train(config)
    assert len(result.history) == 2 and set(result.history[0]) >= {"consistency", "landmarks", "shape",
                                                                    "expression", "total", "step"}
    assert result.checkpoint.is_file() and result.initial_metrics and result.final_metrics
    assert "shape_error_mm" in result.final_metrics
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    saved = ckpt.load_checkpoint(result.checkpoint)
    assert saved["config"] == dataclasses.asdict(config)


def test_a_model_without_contour_table_trains_on_51_landmarks_only_when_asked(tmp_path):
    from ringnet_lib.model_io import DYNAMIC_EMBEDDING_NAME, ModelFileError

    folder = tmp_path / "no_contour"
    testing.write_random_flame_folder(folder, n_vertices=300, seed=3)
    (folder / DYNAMIC_EMBEDDING_NAME).unlink()
    with pytest.raises(ModelFileError, match="landmarks68"):
        train(tiny_config(tmp_path, flame_model=str(folder), max_steps=1))
    assert not (tmp_path / "run" / ckpt.CHECKPOINT_NAME).exists()  # refused before any training
    result = train(tiny_config(tmp_path, flame_model=str(folder), landmarks68=False, max_steps=2))
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(r["total"])) for r in result.history)
