"""The training loop: config/CLI, clear errors before training, exact resume, the NaN guard."""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ringnet_lib import testing
from ringnet_lib.cli import ConfigError
from ringnet_lib.data.dataset import read_metadata, write_metadata
from ringnet_lib.data.rings import RingError
from ringnet_lib.data.samples import SYNTHETIC_SAMPLE
from ringnet_lib.train import config_from_args, config_to_args
from ringnet_lib.train import main as train_main
from ringnet_lib.training import (PRESETS, CheckpointError, NonFiniteLossError, TrainConfig, changed_fields, train,
                                  validate_config)
from ringnet_lib.training import checkpoint as ckpt
from ringnet_lib.training import loop
from ringnet_lib.training.config import check_compatible
from ringnet_lib.training.data import make_rings

RENDER_ONLY = ("n_identities", "images_per_identity", "n_rings")


def small_flame_folder(root) -> str:
    """A small random FLAME-format folder (300 vertices, contour table included): no default head to build."""
    folder = root / "small_flame"
    if not folder.exists():
        testing.write_random_flame_folder(folder, n_vertices=300, seed=7)
    return str(folder)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """ResNet-18 at 32 px, rings of 3, 2 rings per step: a few steps take seconds on a CPU."""
    values = dict(data="render", flame_model=small_flame_folder(tmp_path), image_size=32, ring_size=3, batch_size=2,
                  n_identities=6, images_per_identity=3,
                  max_steps=4, eval_rings=0, tensorboard=False, progress=False, out_dir=str(tmp_path / "run"),
                  checkpoint_every=2, dropout=0.5)
    values.update(overrides)
    if values["data"] != "render":  # the render-only fields would be refused for other data
        values = {k: v for k, v in values.items() if k not in RENDER_ONLY or k in overrides}
    return TrainConfig.from_preset("quick", **values)


def finite_weights(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def one_identity_dataset(folder: Path) -> Path:
    """A dataset folder (docs/dataset_format.md) with 2 images of one person and nobody else."""
    meta = read_metadata(SYNTHETIC_SAMPLE)
    (folder / "images").mkdir(parents=True)
    names = []
    for row in (0, 1):
        name = f"images/solo_{row}.jpg"
        shutil.copy(SYNTHETIC_SAMPLE / meta["image"][row], folder / name)
        names.append(name)
    write_metadata(folder, names, np.zeros(2, dtype=np.int64), ["solo"], meta["landmarks"][:2],
                   meta["confidence"][:2])
    return folder


def assert_round_trip(config: TrainConfig) -> list[str]:
    flags = config_to_args(config)
    assert config_from_args(flags) == config
    assert len(flags) == 2 + sum(1 if isinstance(v, bool) else 2 for v in changed_fields(config).values())
    return flags


def test_config_to_args_round_trips_through_the_cli(tmp_path):
    configs = [TrainConfig.from_preset("quick"),
               TrainConfig.from_preset("quick", tensorboard=False, landmarks68=False, lr=3e-4, ring_size=3,
                                       consistency="swap", trunk_weights="/tmp/w.pth"),
               TrainConfig.from_preset("paper", epochs=2, device="cpu", amp=False, margin=0.25),
               # None values: fresh identities per ring, no step limit, torch's thread count
               TrainConfig.from_preset("quick", n_identities=None, n_rings=40, max_steps=None, threads=None,
                                       resume=None),
               TrainConfig.from_preset("paper", n_identities=None, n_rings=7, workers=0, device="cpu", threads=3,
                                       max_steps=5),
               # Path values (with spaces), a resume path
               TrainConfig.from_preset("quick", out_dir=tmp_path / "out dir", flame_model=tmp_path / "flame",
                                       trunk_weights=Path("/tmp/weights file.pth"), resume=str(tmp_path / "c.pt"),
                                       overwrite=True, verbose=True, w_true_shape_mse=0.5, w_shape_norm=0.0,
                                       bn_mode="eval")]
    assert configs[5].flame_model == tmp_path / "flame" and isinstance(configs[5].out_dir, Path)
    assert isinstance(configs[1].trunk_weights, Path)
    assert configs[3].n_identities is None and configs[3].max_steps is None
    for config in configs:
        assert_round_trip(config)
    assert config_to_args(configs[0]) == ["--preset", "quick"]
    assert "--no-tensorboard" in config_to_args(configs[1]) and "--no-amp" in config_to_args(configs[2])
    flags = config_to_args(configs[3])
    assert flags[flags.index("--n-identities") + 1] == "none"
    flags = config_to_args(configs[5])
    assert flags[flags.index("--out-dir") + 1] == str(tmp_path / "out dir")
    assert flags[flags.index("--trunk-weights") + 1] == "/tmp/weights file.pth"


@pytest.mark.parametrize("data", ["synthetic", "folder"])
def test_config_to_args_round_trips_other_data_sources(tmp_path, data):
    """A data source other than the preset's is a changed field like any other: --data must be in the flags."""
    source = str(tmp_path / "my data") if data == "folder" else data
    for config in (TrainConfig.from_preset("quick", data=source),
                   TrainConfig.from_preset("quick", data=source, flip_probability=0.5, ring_size=5)):
        flags = assert_round_trip(config)
        assert flags[flags.index("--data") + 1] == source


def test_cli_flags_are_the_config_fields():
    config = config_from_args(["--preset", "quick", "--epochs", "1", "--ring-size", "5", "--no-tensorboard",
                               "--lr", "3e-4", "--trunk", "resnet50"])
    assert (config.epochs, config.ring_size, config.tensorboard, config.lr, config.trunk) == (1, 5, False, 3e-4,
                                                                                            "resnet50")
    assert config.image_size == PRESETS["quick"]["image_size"]  # untouched fields keep the preset
    paper = config_from_args(["--preset", "paper"])
    assert (paper.ring_size, paper.image_size, paper.trunk, paper.epochs, paper.lr) == (6, 224, "resnet50", 10, 1e-4)
    with pytest.raises(SystemExit):
        config_from_args(["--no-such-flag", "1"])
    with pytest.raises(SystemExit):  # no prefix matching: "--epoch" is not "--epochs"
        config_from_args(["--epoch", "3"])
    with pytest.raises(SystemExit):
        config_from_args(["--epochs", "one"])
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_preset("quick", epoch=3)
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.from_preset("huge")


def test_a_field_that_does_not_apply_to_the_data_is_refused(tmp_path):
    """n_identities means something for rendered rings only: with data="synthetic" it is an error naming it,
    while the preset's own render-only values are dropped silently."""
    config = TrainConfig.from_preset("quick", data="synthetic", n_identities=5)
    with pytest.raises(ConfigError, match="n_identities") as info:
        validate_config(config)
    assert "\n" not in str(info.value) and "'render'" in str(info.value)
    with pytest.raises(ConfigError, match="n_identities"):
        train(dataclasses.replace(config, out_dir=tmp_path / "refused", tensorboard=False, progress=False))
    assert not (tmp_path / "refused" / ckpt.CHECKPOINT_NAME).exists()
    plain = TrainConfig.from_preset("quick", data="synthetic")
    validate_config(plain)  # the quick preset's n_identities/images_per_identity do not count against it
    assert plain.n_identities == TrainConfig().n_identities
    with pytest.raises(ConfigError, match="flip_probability"):  # the other way: folders only
        validate_config(TrainConfig.from_preset("quick", flip_probability=0.5))
    validate_config(TrainConfig.from_preset("quick", data="synthetic", flip_probability=0.5))


def test_bad_inputs_fail_before_training(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(loop, "ring_step", lambda *a, **k: started.append(1))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        train(tiny_config(tmp_path, data=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="ring_size 5"):
        train(tiny_config(tmp_path, ring_size=5))  # 3 images per identity: at most 4 per ring
    with pytest.raises(ValueError, match="consistency"):
        train(tiny_config(tmp_path, consistency="triplet"))
    with pytest.raises(ConfigError, match="w_true_shape_mse: must be >= 0"):
        train(tiny_config(tmp_path, w_true_shape_mse=-1.0))
    with pytest.raises(RingError, match="a ring needs 2 images of one person and 1 of another"):
        train(tiny_config(tmp_path, data=str(one_identity_dataset(tmp_path / "solo"))))
    # The shipped sample has 6 images per identity: rings of 8 repeat images, which is said before training.
    with pytest.warns(UserWarning, match="fewer than R-1 = 7 images repeat images"):
        make_rings(tiny_config(tmp_path, data="synthetic", ring_size=8))
    assert not started
    assert not (tmp_path / "run" / ckpt.CHECKPOINT_NAME).exists()


class Killed(Exception):
    pass


def kill_at_3(step, record):
    if step == 3:
        raise Killed


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume_after_a_kill(tmp_path, workers):
    """Kill after step 3 (last checkpoint: step 2), resume (replays step 3): the same losses as an uninterrupted run.

    Dropout is on (p = 0.5), so this also checks that the RNG states are restored; with workers=2 the rings
    come from loader processes, which must not change a thing."""
    full = train(tiny_config(tmp_path, out_dir=str(tmp_path / "full"), workers=workers))

    with pytest.raises(Killed):
        # max_steps=4: step 3 is not the last, so no checkpoint is written at 3 before the kill
        train(tiny_config(tmp_path, out_dir=str(tmp_path / "killed"), workers=workers), on_step=kill_at_3)
    assert ckpt.load_checkpoint(tmp_path / "killed" / ckpt.CHECKPOINT_NAME)["step"] == 2
    resumed = train(tiny_config(tmp_path, out_dir=str(tmp_path / "killed"), workers=workers, resume="auto"))
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == full.history  # exact: every loss term, every step
    final_full = ckpt.load_checkpoint(full.checkpoint)["model"]
    final_resumed = ckpt.load_checkpoint(resumed.checkpoint)["model"]
    assert final_full.keys() == final_resumed.keys()
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)


def test_workers_do_not_change_the_run(tmp_path):
    """The batches depend on the step alone: 0 or 2 loader processes give the same losses and weights."""
    main_process = train(tiny_config(tmp_path, out_dir=tmp_path / "w0", max_steps=3))
    two_workers = train(tiny_config(tmp_path, out_dir=tmp_path / "w2", max_steps=3, workers=2))
    assert main_process.history == two_workers.history
    a, b = (ckpt.load_checkpoint(r.checkpoint)["model"] for r in (main_process, two_workers))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    train(tiny_config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="another config.*ring_size"):
        train(tiny_config(tmp_path, ring_size=2, max_steps=3, resume="auto"))
    with pytest.raises(ckpt.CheckpointError, match="nothing.pt: no checkpoint there"):
        train(tiny_config(tmp_path, resume=str(tmp_path / "nothing.pt")))


def test_a_new_run_does_not_overwrite_a_checkpoint_silently(tmp_path, capsys):
    first = train(tiny_config(tmp_path, max_steps=2))
    path = tmp_path / "run" / ckpt.CHECKPOINT_NAME
    before = ckpt.load_checkpoint(path)
    with pytest.raises(ConfigError, match=re.escape(str(path))) as info:
        train(tiny_config(tmp_path, max_steps=1, seed=1))
    message = str(info.value)
    assert "--resume" in message and "--overwrite" in message and "\n" not in message
    after = ckpt.load_checkpoint(path)  # untouched
    assert after["step"] == 2 and all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    # the command line says the same, in one line, with exit status 2
    flags = config_to_args(tiny_config(tmp_path, max_steps=1, seed=1))
    assert train_main(flags) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "--overwrite" in error and error.count("\n") == 1
    # overwrite=True: a new run from scratch replaces it
    replaced = train(tiny_config(tmp_path, max_steps=1, seed=1, overwrite=True))
    assert replaced.checkpoint == path == first.checkpoint
    saved = ckpt.load_checkpoint(path)
    assert saved["step"] == 1 and saved["config"]["seed"] == 1 and len(saved["history"]) == 1
    assert any(not torch.equal(before["model"][k], saved["model"][k]) for k in before["model"])


def test_a_checkpoint_older_than_a_config_field_resumes_with_its_default(tmp_path):
    config = tiny_config(tmp_path)
    saved = dataclasses.asdict(config)
    del saved["w_true_shape_mse"]  # written before the field existed
    check_compatible(saved, config)
    with pytest.raises(ValueError, match="w_true_shape_mse"):
        check_compatible(saved, dataclasses.replace(config, w_true_shape_mse=1.0))


def test_true_shape_diagnostic_reaches_the_loss_from_the_data(tmp_path):
    """w_true_shape_mse > 0: the rendered set's true β are in the batch; the term is logged every step."""
    result = train(tiny_config(tmp_path, max_steps=2, w_true_shape_mse=1.0, w_landmarks=0.0, w_consistency=0.0))
    assert [sorted(r) for r in result.history] == [sorted(["consistency", "landmarks", "shape_norm",
                                                           "expression_norm", "true_shape_mse", "total",
                                                           "step"])] * 2
    for record in result.history:  # the total is the true-β error alone, plus the tiny regularisers
        expected = record["true_shape_mse"] + 1e-4 * (record["shape_norm"] + record["expression_norm"])
        assert record["total"] == pytest.approx(expected, rel=1e-5)


def poison_call(monkeypatch, name: str, call: int, poison):
    """Replace ``loop.<name>`` by a wrapper that applies ``poison`` to the result of its ``call``-th call."""
    real = getattr(loop, name)
    calls = []

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        return poison(result) if len(calls) == call else result

    monkeypatch.setattr(loop, name, wrapper)
    return calls


def nan_total(prediction):
    return prediction._replace(total=prediction.total * float("nan"))


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """A run killed after step 3 leaves step 2's checkpoint (step 3 vouched for it); the resumed run's step 3 has a
    NaN total: the run stops naming step 3, before its optimiser step, and keeps the step-2 checkpoint, finite."""
    with pytest.raises(Killed):
        train(tiny_config(tmp_path), on_step=kill_at_3)
    before = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT_NAME)
    assert before["step"] == 2
    poison_call(monkeypatch, "ring_step", 1, nan_total)
    with pytest.raises(NonFiniteLossError, match=r"at step 3;.*last sane checkpoint \(step 2\) is kept"):
        train(tiny_config(tmp_path, resume="auto"))
    saved = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT_NAME)
    assert saved["step"] == 2
    assert finite_weights(saved["model"])
    assert all(torch.equal(saved["model"][k], before["model"][k]) for k in saved["model"])
    assert not (tmp_path / "run" / (ckpt.CHECKPOINT_NAME + ".pending")).exists()


def test_nan_guard_in_one_run_keeps_the_checkpoint_a_later_step_vouched_for(tmp_path, monkeypatch):
    """One run, checkpoints every 2 steps, step 4's total NaN: step 2's checkpoint (vouched for by step 3) is kept,
    with the weights of an uninterrupted run of 2 steps; step 3 poisoned instead: step 2's weights gave the NaN,
    so its pending checkpoint is dropped, and nothing is left."""
    reference = train(tiny_config(tmp_path, out_dir=tmp_path / "two_steps", max_steps=2))
    poison_call(monkeypatch, "ring_step", 4, nan_total)
    with pytest.raises(NonFiniteLossError, match=r"at step 4;.*\(step 2\) is kept"):
        train(tiny_config(tmp_path, out_dir=tmp_path / "at4", max_steps=6))
    saved = ckpt.load_checkpoint(tmp_path / "at4" / ckpt.CHECKPOINT_NAME)
    expected = ckpt.load_checkpoint(reference.checkpoint)["model"]
    assert saved["step"] == 2 and finite_weights(saved["model"])
    assert all(torch.equal(saved["model"][k], expected[k]) for k in expected)
    assert not (tmp_path / "at4" / (ckpt.CHECKPOINT_NAME + ".pending")).exists()

    poison_call(monkeypatch, "ring_step", 3, nan_total)
    with pytest.raises(NonFiniteLossError, match=r"at step 3;.*no checkpoint was written yet"):
        train(tiny_config(tmp_path, out_dir=tmp_path / "at3", max_steps=6))
    assert not (tmp_path / "at3" / ckpt.CHECKPOINT_NAME).exists()
    assert not (tmp_path / "at3" / (ckpt.CHECKPOINT_NAME + ".pending")).exists()


def test_nan_guard_catches_a_nan_pixel(tmp_path, monkeypatch):
    """A NaN in step 3's images (not in the loss code): the guard names step 3 and keeps a finite checkpoint."""

    def nan_pixel(batch):
        images = batch["images"].clone()
        images[0, 1, 0, 5, 7] = float("nan")
        return {**batch, "images": images}

    calls = poison_call(monkeypatch, "prepare_batch", 3, nan_pixel)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss or gradient .* at step 3;.*\(step 1\) is kept"):
        train(tiny_config(tmp_path, checkpoint_every=1, max_steps=6))
    assert len(calls) == 3  # the loop stopped at the poisoned batch
    saved = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT_NAME)
    # step 2's weights gave the NaN loss, so its checkpoint was never promoted: step 1's is the last sane one
    assert saved["step"] == 1 and finite_weights(saved["model"])
    assert not (tmp_path / "run" / (ckpt.CHECKPOINT_NAME + ".pending")).exists()
    encoder, config, decoder = ckpt.load_encoder(tmp_path / "run" / ckpt.CHECKPOINT_NAME)
    metrics = loop.evaluate(encoder, decoder, make_rings(config), 2, torch.device("cpu"))
    assert np.isfinite(metrics["landmarks"]) and np.isfinite(metrics["shape_error_mm"])


def test_nan_guard_catches_a_learning_rate_blow_up(tmp_path):
    """lr=1e6: the first update blows the weights up. The run stops naming a step, and no checkpoint of blown-up
    weights is left: every checkpoint it wrote held weights that gave a NaN loss after them."""
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+)") as info:
        train(tiny_config(tmp_path, lr=1e6, checkpoint_every=1, max_steps=6))
    step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert 2 <= step <= 6 and "Lower --lr" in str(info.value)
    leftovers = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(ckpt.CHECKPOINT_NAME))
    assert leftovers == [] and "no checkpoint was written yet" in str(info.value)
    # A sane lr with the same everything else: the end-of-run check passes, the checkpoint is finite.
    sane = train(tiny_config(tmp_path, out_dir=tmp_path / "sane", checkpoint_every=1, max_steps=1))
    encoder, config, decoder = ckpt.load_encoder(sane.checkpoint)
    assert finite_weights(encoder.state_dict())
    metrics = loop.evaluate(encoder, decoder, make_rings(config), 2, torch.device("cpu"))
    assert np.isfinite(metrics["landmarks"])


def test_the_end_of_run_check_refuses_blown_up_final_weights(tmp_path):
    """lr=1e6 stopped after 1 step, before a next step shows the blow-up: the end-of-run check refuses the
    blown-up weights with the guard's error, and leaves no checkpoint of them."""
    with pytest.raises(NonFiniteLossError, match="final weights give a landmark loss of nan"):
        train(tiny_config(tmp_path, lr=1e6, checkpoint_every=1, max_steps=1))
    assert not any(p.name.startswith(ckpt.CHECKPOINT_NAME) for p in (tmp_path / "run").iterdir())


def test_resuming_non_finite_weights_is_refused(tmp_path):
    train(tiny_config(tmp_path, max_steps=2))
    path = tmp_path / "run" / ckpt.CHECKPOINT_NAME
    saved = ckpt.load_checkpoint(path)
    name = next(k for k, v in saved["model"].items() if v.is_floating_point() and v.numel() > 1)
    saved["model"][name] = saved["model"][name].clone()
    saved["model"][name].view(-1)[0] = float("nan")
    ckpt.save_checkpoint(path, saved)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": the saved weights are not finite") as info:
        train(tiny_config(tmp_path, max_steps=2, resume="auto"))
    assert "\n" not in str(info.value) and name in str(info.value)
    assert ckpt.load_checkpoint(path)["step"] == 2  # left as it was


def test_logs_and_result(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, tensorboard=True, log_every=1, image_every=2, eval_rings=2)
    result = train(config)
    assert len(result.history) == 2 and set(result.history[0]) >= {"consistency", "landmarks", "shape_norm",
                                                                    "expression_norm", "total", "step"}
    assert result.checkpoint.is_file() and result.initial_metrics and result.final_metrics
    assert "shape_error_mm" in result.final_metrics
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    saved = ckpt.load_checkpoint(result.checkpoint)
    assert saved["config"] == {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    assert TrainConfig(**saved["config"]) == config


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


def test_rendered_rings_are_rendered_in_the_loader_workers_on_the_cpu(tmp_path):
    """With workers on the CPU the workers render (the main process only trains), and the batches equal those
    rendered in the main process: rendering draws no random numbers."""
    from ringnet_lib.decoder import Decoder
    from ringnet_lib.training.data import RenderInWorkers, make_loader, prepare_batch

    decoder = Decoder(small_flame_folder(tmp_path))
    config = tiny_config(tmp_path, workers=2)
    rings = make_rings(config, decoder)
    in_workers = make_loader(config, rings, total_steps=3, decoder=decoder)
    assert isinstance(in_workers.collate_fn, RenderInWorkers)
    in_main = make_loader(dataclasses.replace(config, workers=0), rings, total_steps=3, decoder=decoder)
    for rendered, plain in zip(in_workers, in_main):
        assert "images" in rendered and "images" not in plain
        expected = prepare_batch(plain, rings, decoder, torch.device("cpu"))
        assert prepare_batch(rendered, rings, decoder, torch.device("cpu")).keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(rendered[key], value, rtol=0, atol=1e-5, msg=key)
        assert rendered["images"].std() > 0.05  # heads, not an empty frame
