"""Bad checkpoints and weights files, as a careless or hostile user gives them (the second hostile-input pass):
damaged bytes, NaN weights, hostile or foreign ``--trunk-weights``, plain pickles, an evaluation ``--out`` that
cannot be written or sizes that cannot fit, and refused demo runs. Each test asserts the exit status or the
error's type, that the one-line message names the file or the flag, and that nothing was written."""
from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from ringnet_lib import demo
from ringnet_lib.cli import ConfigError
from ringnet_lib.data.samples import ASTRONAUT_PHOTO
from ringnet_lib.encoder import build_trunk
from ringnet_lib.evaluation import trained
from ringnet_lib.train import main as train_main
from ringnet_lib.training import TrainConfig
from ringnet_lib.training import checkpoint as ckpt
from ringnet_lib.training.model import build_decoder, build_encoder

TINY = dict(trunk="small_cnn", image_size=32, max_steps=1, batch_size=2, ring_size=3, n_identities=4,
            images_per_identity=3, eval_rings=0, tensorboard=False, progress=False)
# The last layer of the regressor: its bias is the correction added to every estimate.
LAST_BIAS = "regressor.layers.6.bias"


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def write_checkpoint(path: Path, edit=None, digest: bool = True, **overrides) -> Path:
    """A checkpoint with the real layout (the tiny small_cnn encoder at 32 px, untrained: 13 MB, about 1 s).
    ``edit(state)`` changes the model state before it is written; ``digest=False`` writes it as checkpoints were
    written before digests (plain ``torch.save``)."""
    config = TrainConfig.from_preset("quick", **{**TINY, "out_dir": path.parent, **overrides})
    torch.manual_seed(0)
    encoder = build_encoder(config, build_decoder(config), torch.zeros(3))
    state = {"format_version": ckpt.FORMAT_VERSION, "model": encoder.state_dict(), "step": 1,
             "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}}
    if edit is not None:
        edit(state["model"])
    if digest:
        return ckpt.save_checkpoint(path, state)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("good") / ckpt.CHECKPOINT_NAME)


def damage(source: Path, target: Path, n_bytes: int = 2000) -> Path:
    """A copy of ``source`` with ``n_bytes`` flipped inside its largest tensor (zip entries are stored, not
    compressed, and torch does not check their CRCs)."""
    with zipfile.ZipFile(source) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(source.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[largest.header_offset + 26:largest.header_offset + 30])
    start = largest.header_offset + 30 + name_length + extra_length + 100
    for index in range(start, start + n_bytes):
        data[index] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def demo_args(checkpoint: Path, out: Path, photo: Path = ASTRONAUT_PHOTO) -> list[str]:
    return [str(photo), "--method", "regress", "--checkpoint", str(checkpoint), "--detector", "none", "--out",
            str(out)]


class _Payload:
    """Unpickling this would create ``marker`` (through os.system): what a hostile file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------ good and old checkpoints still load
def test_a_good_checkpoint_carries_a_digest_and_runs_the_demo(good, tmp_path, capsys):
    saved = ckpt.load_checkpoint(good)
    assert set(saved[ckpt.DIGEST]["sha256"]) == {"format_version", "model", "step", "config"}
    assert demo.main(demo_args(good, tmp_path / "out")) == 0
    assert "centred" in capsys.readouterr().out
    assert (tmp_path / "out" / "astronaut_overlay.png").is_file()


def test_an_old_checkpoint_without_a_digest_still_loads(tmp_path):
    path = write_checkpoint(tmp_path / "old.pt", digest=False)
    assert ckpt.DIGEST not in torch.load(path, weights_only=True)
    saved = ckpt.load_checkpoint(path)  # unchecked, as before
    assert saved["step"] == 1
    encoder, config, _ = ckpt.load_encoder(path)
    assert config.trunk == "small_cnn" and not encoder.training


def test_a_checkpoint_trained_from_trunk_weights_loads_without_that_file(tmp_path):
    """The checkpoint's weights replace the trunk's initial ones: the demo needs no trunk_weights file."""
    weights = tmp_path / "trunk.pth"
    torch.save(build_trunk("small_cnn")[0].state_dict(), weights)
    path = write_checkpoint(tmp_path / "c.pt", trunk_weights=weights)
    weights.unlink()
    encoder, config, _ = ckpt.load_encoder(path)
    assert config.trunk_weights == weights


# ------------------------------------------------------------------ 1. damaged bytes
def test_a_damaged_checkpoint_is_refused_naming_the_file(good, tmp_path, capsys):
    bad = damage(good, tmp_path / "damaged.pt")
    assert torch.load(bad, weights_only=True)["step"] == 1  # torch itself does not notice
    with pytest.raises(ckpt.CheckpointError, match=f"^{bad}: corrupt: its weights do not match the digest") as info:
        ckpt.load_checkpoint(bad)
    assert "\n" not in str(info.value)
    assert demo.main(demo_args(bad, tmp_path / "out")) == 2
    assert f"{bad}: corrupt" in one_line(capsys.readouterr().err)
    assert trained.main([str(bad), "--out", str(tmp_path / "eval"), "--identities", "2", "--points", "100"]) == 2
    assert f"{bad}: corrupt" in one_line(capsys.readouterr().err)
    run = tmp_path / "run"
    assert train_main(["--out-dir", str(run), "--resume", str(bad), "--trunk", "small_cnn", "--image-size", "32",
                       "--no-tensorboard", "--no-progress"]) == 2
    assert f"{bad}: corrupt" in one_line(capsys.readouterr().err)  # not "lower --lr"
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()
    assert not list(run.glob("checkpoint*"))


def test_the_demo_refuses_absurd_output_instead_of_reporting_success(tmp_path, capsys):
    """Finite weights that put the landmarks a million crops away (a camera scale of 1e7): refused, not drawn."""
    def blow_up(model):
        model[LAST_BIAS][0] = 1e7  # the camera scale's correction

    path = write_checkpoint(tmp_path / "absurd.pt", blow_up)
    assert demo.main(demo_args(path, tmp_path / "out")) == 2
    message = one_line(capsys.readouterr().err)
    assert str(ASTRONAUT_PHOTO) in message and "sides" in message and "checkpoint" in message
    assert not (tmp_path / "out").exists()


def test_an_absurd_landmark_residual_is_refused():
    prediction = demo.Prediction(torch.zeros(159), torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(68, 2))
    demo.check_prediction(prediction, 32, 3.0, "photo.png")
    for residual in (float("nan"), 1.4e16):
        with pytest.raises(demo.DemoError, match="photo.png: the landmark residual"):
            demo.check_prediction(prediction, 32, residual, "photo.png")


# ------------------------------------------------------------------ 2. NaN weights
def test_nan_weights_are_refused_by_the_loader_naming_the_file(tmp_path, capsys):
    def poison(model):
        model[LAST_BIAS][:] = float("nan")

    path = write_checkpoint(tmp_path / "nan.pt", poison)
    with pytest.raises(ckpt.CheckpointError, match=f"^{path}: the saved weights are not finite \\({LAST_BIAS}"):
        ckpt.load_encoder(path)
    assert demo.main(demo_args(path, tmp_path / "out")) == 2
    assert f"{path}: the saved weights are not finite" in one_line(capsys.readouterr().err)
    assert trained.main([str(path), "--out", str(tmp_path / "eval"), "--identities", "2", "--points", "100"]) == 2
    assert f"{path}: the saved weights are not finite" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()  # no face_crop.png, no folder


# ------------------------------------------------------------------ 3. --trunk-weights
def _hostile_torch(path: Path, marker: Path) -> None:
    torch.save({"conv": _Payload(marker)}, path)


def _hostile_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"conv": _Payload(marker)}, protocol=4))


def _nan_trunk() -> dict:
    state = build_trunk("small_cnn")[0].state_dict()
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}


@pytest.mark.parametrize("make, words", [
    (_hostile_torch, "asks for Python code (posix.system)"),
    (_hostile_pickle, "plain Python pickle"),
    (lambda path, _: path.write_bytes(b""), "empty"),
    (lambda path, _: path.write_bytes(b"PK\x03\x04 truncated"), "corrupt, truncated"),
    (lambda path, _: torch.save(torch.ones(3), path), "holds Tensor, not a state dict"),
    (lambda path, _: torch.save({"weights": [1, 2]}, path), "not a state dict"),
    (lambda path, _: torch.save({"something": torch.zeros(1)}, path), "does not hold small_cnn weights"),
    (lambda path, _: torch.save(_nan_trunk(), path), "not finite"),
])
def test_bad_trunk_weights_are_one_line_naming_the_field_and_file(make, words, tmp_path, capsys):
    path, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    make(path, marker)
    with pytest.raises(ConfigError, match="^trunk_weights: ") as info:
        build_trunk("small_cnn", path)
    assert str(path) in str(info.value) and words in str(info.value) and "\n" not in str(info.value)
    run = tmp_path / "run"
    args = ["--trunk", "small_cnn", "--trunk-weights", str(path), "--image-size", "32", "--n-identities", "4",
            "--images-per-identity", "3", "--ring-size", "3", "--batch-size", "2", "--eval-rings", "0",
            "--max-steps", "1", "--out-dir", str(run), "--no-tensorboard", "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Detected pickle protocol 4" warning included
        assert train_main(args) == 2
    message = one_line(capsys.readouterr().err)
    assert message.startswith("error: trunk_weights: ") and str(path) in message and words in message
    assert not marker.exists() and not list(run.glob("checkpoint*"))


# ------------------------------------------------------------------ 4. the evaluation's --out and sizes
@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_the_evaluation_checks_out_is_writable_before_the_work(good, tmp_path, capsys, monkeypatch):
    work = []
    monkeypatch.setattr(trained, "benchmark_encoder", lambda *a, **k: work.append("benchmark"))
    file = tmp_path / "a_file"
    file.write_text("keep me")
    for out in (Path("/proc/ringnet_out"), file / "sub"):
        assert trained.main([str(good), "--out", str(out), "--identities", "2", "--points", "100"]) == 2
        message = one_line(capsys.readouterr().err)
        assert message.startswith("error: --out: cannot write to") and str(out) in message
    assert work == [] and file.read_text() == "keep me"


@pytest.mark.parametrize("args, flag", [
    (["--identities", "1000000000"], "--identities 1000000000"), (["--points", "1000000000000"],
                                                                  "--points 1000000000000"),
    (["--identities", "-3"], "--identities -3"), (["--points", "0"], "--points 0")])
def test_the_evaluation_refuses_sizes_naming_the_flag_before_the_work(args, flag, good, tmp_path, capsys,
                                                                       monkeypatch):
    work = []
    monkeypatch.setattr(trained, "benchmark_encoder", lambda *a, **k: work.append("benchmark"))
    assert trained.main([str(good), "--out", str(tmp_path / "eval")] + args) == 2
    message = one_line(capsys.readouterr().err)
    assert flag in message
    if "GiB" in message:
        assert "this machine has" in message and f"lower {flag.split()[0]}" in message
    assert work == [] and not (tmp_path / "eval").exists()


def test_the_memory_estimate_grows_with_each_flag():
    small = sum(trained.benchmark_memory(12, 2, 1000, 64).values())
    assert small < 100e6  # the default run: tens of MB
    assert sum(trained.benchmark_memory(10**9, 2, 1000, 64).values()) > 1e12
    assert sum(trained.benchmark_memory(12, 2, 10**12, 64).values()) > 1e14


# ------------------------------------------------------------------ 5. a plain pickle given as a checkpoint
def test_a_plain_pickle_is_not_a_torch_checkpoint_and_no_warning_is_printed(tmp_path, capsys):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    path.write_bytes(pickle.dumps({"model": _Payload(marker), "config": {}}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ckpt.CheckpointError, match=f"^{path}: a plain Python pickle .*not a checkpoint") as info:
            ckpt.load_checkpoint(path)
    assert "posix.system" in str(info.value) and "corrupt" not in str(info.value)
    assert demo.main(demo_args(path, tmp_path / "out")) == 2
    assert "plain Python pickle" in one_line(capsys.readouterr().err)  # and no UserWarning lines
    assert not marker.exists() and not (tmp_path / "out").exists()
    # A legacy (non-zip) torch file is still read by torch, not called a plain pickle.
    torch.save({"weights": torch.ones(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ckpt.CheckpointError, match="not a ringnet_lib training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "legacy.pt")


# ------------------------------------------------------------------ 6. refused demo runs leave no folder
def test_refused_demo_runs_leave_no_out_folder(good, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    hostile, marker = tmp_path / "hostile.pt", tmp_path / "pwned"
    torch.save({"model": {}, "config": {}, "payload": _Payload(marker)}, hostile)
    out = tmp_path / "new" / "out"  # neither folder exists
    for args, named in ((demo_args(good, out, broken), broken), (demo_args(hostile, out), hostile),
                        (demo_args(tmp_path / "missing.pt", out), tmp_path / "missing.pt")):
        assert demo.main(args) == 2
        assert str(named) in one_line(capsys.readouterr().err)
        assert not (tmp_path / "new").exists()
    assert not marker.exists()
    with pytest.raises(demo.DemoError):
        demo.run_demo(broken, good, out, detector="none")
    assert not (tmp_path / "new").exists()


def test_a_failure_while_writing_leaves_no_half_set_of_outputs(good, tmp_path, monkeypatch):
    """A crash in the middle of writing (here the overlay) removes what this photo's run wrote, and the folder it
    made; a previous run's files are not touched."""
    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(demo, "overlay_figure", broken)
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError, match="matplotlib failed"):
        demo.run_demo(ASTRONAUT_PHOTO, good, out, detector="none")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    kept = tmp_path / "old" / "astronaut_params.json"
    kept.write_text("a previous run")
    with pytest.raises(RuntimeError, match="matplotlib failed"):
        demo.run_demo(ASTRONAUT_PHOTO, good, tmp_path / "old", detector="none")
    assert [p.name for p in (tmp_path / "old").iterdir()] == [kept.name] and kept.read_text() == "a previous run"
