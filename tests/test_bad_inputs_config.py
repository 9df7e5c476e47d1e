"""Bad input, second hostile pass: a FLAME pickle whose lists share references (a "billion laughs" of
numbers), training flags out of range (ring size, seeds, NaN/inf floats), the course's student command and
the ablation's flags. Each case asserts the error's type or exit status, that its one-line message names the
file or the field, and that nothing was written or left behind."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringnet_lib import course, model_io, testing
from ringnet_lib.cli import ConfigError
from ringnet_lib.train import main as train_main
from ringnet_lib.training import TrainConfig, validate_config

REPO = Path(__file__).resolve().parents[1]
# A run of seconds, so that a check that is missing fails the test quickly instead of training for minutes.
TINY = ["--max-steps", "1", "--eval-rings", "0", "--image-size", "16", "--batch-size", "2", "--trunk", "small_cnn",
        "--no-tensorboard", "--no-progress", "--n-identities", "4"]


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------ 1. a nested-list bomb in a FLAME pickle
def bomb_folder(root: Path) -> Path:
    """A valid FLAME folder whose model's ``posedirs`` is 10^12 numbers in about 150 kB: three levels of
    one list referenced 10^4 times (the pickle's memo stores each list once)."""
    folder = testing.write_random_flame_folder(root, n_vertices=200, seed=3)
    raw = testing.random_flame_dict(n_vertices=200, seed=3)
    raw["posedirs"] = [[[0.5] * 10**4] * 10**4] * 10**4
    (folder / "FLAME_NEUTRAL.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    return folder


def test_a_nested_list_bomb_in_a_flame_pickle_is_refused_in_seconds(tmp_path):
    folder = bomb_folder(tmp_path / "flame")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ringnet_lib.train", "--flame-model", str(folder), "--out-dir",
                             str(run), "--no-tensorboard", "--no-progress"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=30)  # before the fix: numpy walked 10^12 numbers for minutes
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stderr
    message = one_line(result.stderr)
    assert str(folder / "FLAME_NEUTRAL.pkl") in message and "'posedirs'" in message and "GiB" in message
    assert seconds < 30
    assert not run.exists()  # the folder this refused run made is not left behind


def test_lists_that_contain_themselves_or_nest_too_deep_and_memory_errors_name_the_key(tmp_path):
    path = str(tmp_path / "model.pkl")
    raw = testing.random_flame_dict(n_vertices=200, seed=3)
    loop: list = []
    loop.append(loop)
    deep: list = [1.0]
    for _ in range(100):
        deep = [deep]

    class Exhausting:  # what np.asarray meets when the machine runs out of memory
        def __array__(self, dtype=None, copy=None):
            raise MemoryError

    for key, value, words in (("posedirs", loop, "contains itself"), ("weights", deep, "nested more than"),
                              ("shapedirs", Exhausting(), "more memory")):
        with pytest.raises(model_io.ModelFileError, match=f"^{path}: key '{key}' .*{words}") as info:
            model_io.flame_model_from_dict({**raw, key: value}, path)
        one_line(str(info.value))
    # Plain (not shared) lists of a sane size still load.
    model = model_io.flame_model_from_dict({**raw, "posedirs": raw["posedirs"].tolist()}, path)
    assert model.posedirs.shape == raw["posedirs"].shape


# ------------------------------------------------------------------ 2. a ring larger than an identity's images
def test_a_ring_larger_than_the_images_of_an_identity_is_refused_before_any_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--preset", "quick", *TINY, "--ring-size", "100", "--out-dir", str(run)]) == 2
    message = one_line(capsys.readouterr().err)
    assert message.startswith("error: ring_size: 100") and "images_per_identity" in message and "lower" in message
    assert not run.exists()


def test_a_refused_run_leaves_no_empty_out_dir_behind_but_keeps_one_that_was_there(tmp_path, capsys):
    missing = tmp_path / "no such data"
    new = tmp_path / "new" / "run"
    assert train_main(["--preset", "quick", "--data", str(missing), "--out-dir", str(new), "--no-tensorboard"]) == 2
    assert str(missing) in one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()  # made by the run (with its parent), still empty: removed
    kept = tmp_path / "kept"
    kept.mkdir()
    assert train_main(["--preset", "quick", "--data", str(missing), "--out-dir", str(kept), "--no-tensorboard"]) == 2
    capsys.readouterr()
    assert kept.is_dir()  # there before the run: never removed


# ------------------------------------------------------------------ 3. negative seeds
@pytest.mark.parametrize("flag, field", [("--seed", "seed"), ("--data-seed", "data_seed")])
def test_negative_seeds_are_refused_naming_the_field(flag, field, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--preset", "quick", *TINY, flag, "-1", "--out-dir", str(run)]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {field}: must be >= 0")
    assert not run.exists()


# ------------------------------------------------------------------ 4. NaN and inf in float flags
@pytest.mark.parametrize("flag, value, start", [
    ("--lr", "nan", "lr: must be > 0; got nan"), ("--lr", "inf", "lr: must be a finite number"),
    ("--margin", "inf", "margin: must be a finite number"), ("--margin", "nan", "margin: "),
    ("--w-landmarks", "inf", "w_landmarks: must be a finite number"), ("--w-consistency", "nan", "w_consistency: "),
    ("--w-true-shape-mse", "inf", "w_true_shape_mse: "), ("--dropout", "nan", "dropout: "),
    ("--progress-interval", "inf", "progress_interval: must be a finite number"),
    ("--flip-probability", "nan", "flip_probability: must lie in"),
])
def test_non_finite_floats_are_refused_naming_the_field(flag, value, start, tmp_path, capsys):
    run = tmp_path / "run"
    data = ["--data", "synthetic"] if flag == "--flip-probability" else ["--n-identities", "4"]
    assert train_main(["--preset", "quick", *TINY[:-2], *data, flag, value, "--out-dir", str(run)]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {start}")
    assert not run.exists()
    config = TrainConfig.from_preset("quick", out_dir=run, w_expression_norm=float("inf"))  # papermill's way in
    with pytest.raises(ConfigError, match="^w_expression_norm: must be a finite number"):
        validate_config(config)


# ------------------------------------------------------------------ 5. the course's student command
def test_a_notebook_that_is_not_json_is_named_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    (source / "01_good.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (source / "02_broken.ipynb").write_text('{"cells": [')
    out = tmp_path / "student"
    assert course.main(["student", str(source), str(out)]) == 2
    message = one_line(capsys.readouterr().err)
    assert str(source / "02_broken.ipynb") in message and "not a readable notebook" in message
    assert not out.exists()
    (source / "02_broken.ipynb").write_text("[1, 2]")  # JSON, but no notebook
    assert course.main(["student", str(source), str(out)]) == 2
    assert "not a Jupyter notebook" in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_student_out_that_is_a_file_is_named_and_left_as_it_was(tmp_path, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    (source / "01_good.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    out = tmp_path / "student"
    out.write_text("my notes")
    assert course.main(["student", str(source), str(out)]) == 2
    message = one_line(capsys.readouterr().err)
    assert message.startswith(f"error: {out}: is a file") and "give a folder" in message
    assert out.read_text() == "my notes"
    assert course.main(["student", str(source), str(out / "below")]) == 2  # a folder under a file
    assert str(out / "below") in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ 6. the ablation's flags
@pytest.mark.parametrize("args, words", [
    (["--seeds", "x,y"], ["--seeds x,y", "--seeds 0,1,2"]), (["--seeds", "-1"], ["--seeds -1", ">= 0"]),
    (["--seeds", "0,0"], ["--seeds 0,0", "each once"]), (["--seeds", ","], ["--seeds ,", "--seeds 0,1,2"]),
    (["--only", "R=7"], ["--only R=7", "ring R=4"]), (["--steps", "-1"], ["--steps -1"]),
    (["--steps", "0"], ["--steps 0"]), (["--device", "tpu"], ["device", "tpu"]),
])
def test_ablation_flags_are_named_with_their_form(args, words, tmp_path, capsys):
    from ringnet_lib.ablation import main

    assert main(["--ci", *args, "--out", str(tmp_path / "a")]) == 2
    message = one_line(capsys.readouterr().err)
    assert all(word in message for word in words), message
    assert not (tmp_path / "a").exists()
