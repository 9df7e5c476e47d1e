"""Bad input, as a careless or hostile user gives it: each case of docs/reliability.md that is not tested beside
its feature. Every case asserts the error's type, that its one-line message names the file or field, and that
nothing was written or lost."""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

from ringnet_lib import model_io, testing
from ringnet_lib.cli import ConfigError
from ringnet_lib.data import dataset as ds
from ringnet_lib.data import photos, synthesize
from ringnet_lib.data.images import ImageError, read_image
from ringnet_lib.train import main as train_main
from ringnet_lib.training import TrainConfig, validate_config


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------ training configuration (issue 16, 8-10)
@pytest.mark.parametrize("field, value", [
    ("margin", -0.5), ("w_landmarks", -1.0), ("w_consistency", -1.0), ("w_shape_norm", -1e-4),
    ("max_steps", -5), ("flip_probability", 2.0), ("checkpoint_every", 0), ("eval_rings", -1), ("n_rings", -3),
    ("ring_size", 1), ("image_size", 8), ("lr", 0.0), ("workers", -1), ("dropout", 1.0), ("n_identities", 1),
])
def test_out_of_range_values_are_refused_before_any_work(field, value, tmp_path):
    extra = {"data": str(tmp_path)} if field == "flip_probability" else {}
    config = TrainConfig.from_preset("quick", out_dir=tmp_path / "run", **extra, **{field: value})
    with pytest.raises(ConfigError, match=rf"^{field}: ") as info:
        validate_config(config)
    assert "\n" not in str(info.value) and "preset=" not in str(info.value)  # one line, no config dump
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, field", [("--max-steps", "-5", "max_steps"), ("--checkpoint-every", "0",
                                                "checkpoint_every"), ("--eval-rings", "-2", "eval_rings"),
                                                ("--n-rings", "-1", "n_rings"), ("--margin", "-1", "margin")])
def test_the_cli_says_which_flag_in_one_line_and_exits_2(flag, value, field, tmp_path, capsys):
    assert train_main(["--preset", "quick", flag, value, "--out-dir", str(tmp_path / "run")]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: {field}: ")
    assert not (tmp_path / "run").exists()


def test_float_identities_are_refused_not_truncated():
    with pytest.raises(ConfigError, match="n_identities"):
        TrainConfig.from_preset("quick", n_identities=2.5)


def test_a_device_that_does_not_exist_is_named_before_anything_is_built(tmp_path, capsys):
    assert train_main(["--preset", "paper", "--device", "cuda:7", "--out-dir", str(tmp_path / "run")]) == 2
    assert "device" in one_line(capsys.readouterr().err)
    assert train_main(["--preset", "quick", "--device", "tpu", "--out-dir", str(tmp_path / "run")]) == 2
    assert "tpu" in one_line(capsys.readouterr().err)


def test_an_out_dir_that_is_a_file_or_read_only_fails_before_the_first_step(tmp_path, capsys):
    file = tmp_path / "a_file"
    file.write_text("x")
    assert train_main(["--preset", "quick", "--out-dir", str(file), "--no-tensorboard"]) == 2
    assert f"{file} is a file" in one_line(capsys.readouterr().err)
    # A folder that cannot be made (here: under a file; read-only folders fail alike for non-root users).
    assert train_main(["--preset", "quick", "--out-dir", str(file / "run"), "--no-tensorboard"]) == 2
    assert f"cannot write to {file / 'run'}" in one_line(capsys.readouterr().err)
    if os.geteuid() != 0:  # root writes to read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert train_main(["--preset", "quick", "--out-dir", str(locked / "run"), "--no-tensorboard"]) == 2
        assert str(locked) in one_line(capsys.readouterr().err)


def test_the_whole_config_only_with_verbose():
    quiet = TrainConfig.from_preset("quick", lr=3e-4)
    assert quiet.describe() == "preset=quick, lr=0.0003"
    loud = TrainConfig.from_preset("quick", lr=3e-4, verbose=True)
    assert "w_landmarks=60.0" in loud.describe() and "ring_size=4" in loud.describe()


def test_a_resume_on_another_device_or_thread_count_says_it_is_no_longer_exact(tmp_path):
    from ringnet_lib.training.config import check_compatible

    config = TrainConfig.from_preset("quick", out_dir=tmp_path)
    saved = {k: str(v) if hasattr(v, "as_posix") else v for k, v in config.__dict__.items()}
    warnings = check_compatible(saved, TrainConfig.from_preset("quick", out_dir=tmp_path, threads=1))
    assert len(warnings) == 1 and "threads" in warnings[0] and "bit-for-bit" in warnings[0]


def test_relative_paths_are_stored_resolved(tmp_path, monkeypatch):
    folder = testing.write_random_flame_folder(tmp_path / "flame", n_vertices=300, seed=2)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_preset("quick", flame_model="flame", out_dir="run", data=str(tmp_path))
    assert config.flame_model == folder.resolve() and config.out_dir == (tmp_path / "run").resolve()
    assert config.data == str(tmp_path.resolve())


# ------------------------------------------------------------------ datasets (issue 16, 4, 8, 9)
def write_dataset(root, **changes):
    """A valid 2-identity dataset (4 real 8 x 8 images) with some metadata keys replaced."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
        names.append(f"images/{i}.png")
    rng = np.random.default_rng(0)
    meta = {"format_version": np.array(1), "image": np.array(names), "identity": np.array([0, 0, 1, 1]),
            "identity_name": np.array(["a", "b"]), "landmarks": rng.uniform(1, 7, (4, 68, 2)).astype(np.float32),
            "confidence": np.ones((4, 68), np.float32)}
    meta.update(changes)
    np.savez(root / ds.METADATA_NAME, **{k: v for k, v in meta.items() if v is not None})
    return root


@pytest.mark.parametrize("changes, message", [
    ({"format_version": np.array(99)}, "format_version"),
    ({"format_version": None}, "format_version"),
    ({"landmarks": np.full((4, 68, 2), "1", dtype="<U3")}, "'landmarks' must hold real numbers"),
    ({"camera": np.array([[7.5, 0, 0], [7.5, 0, 0], [np.nan, 0, 0], [7.5, 0, 0]])}, "'camera' has NaN"),
    ({"shape": np.full((4, 100), np.inf)}, "'shape' has NaN"),
    ({"landmarks": np.full((4, 68, 2), 1e6, np.float32) + np.arange(68)[None, :, None]}, "far outside"),
    ({"image": np.array(["/etc/passwd", "images/1.png", "images/2.png", "images/3.png"])}, "stay inside"),
    ({"image": np.array(["../x.png", "images/1.png", "images/2.png", "images/3.png"])}, "stay inside"),
    ({"identity": np.array([0.5, 0, 1, 1])}, "'identity' must hold integers"),
])
def test_metadata_is_validated_before_training(tmp_path, changes, message, capsys):
    root = write_dataset(tmp_path / "data", **changes)
    with pytest.raises(ds.DatasetFormatError, match=message) as info:
        ds.read_metadata(root)
    assert str(root / ds.METADATA_NAME) in one_line(str(info.value))
    assert train_main(["--preset", "quick", "--data", str(root), "--out-dir", str(tmp_path / "run"),
                       "--ring-size", "2", "--batch-size", "1", "--no-tensorboard"]) == 2
    assert message.split("'")[0][:8] in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_corrupt_or_pickled_metadata_is_one_line(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / ds.METADATA_NAME).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ds.DatasetFormatError, match="not a readable .npz"):
        ds.read_metadata(root)
    np.savez(root / ds.METADATA_NAME, image=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ds.DatasetFormatError, match="unpickling"):
        ds.read_metadata(root)


def test_landmarks_outside_the_loaded_image_name_the_file(tmp_path):
    landmarks = np.random.default_rng(0).uniform(1, 7, (4, 68, 2)).astype(np.float32)
    landmarks[2] += 30.0  # 8-px images: 30 px away is more than a side outside
    root = write_dataset(tmp_path / "data", landmarks=landmarks)
    with pytest.raises(ds.DatasetFormatError, match="2.png: its landmarks lie more than"):
        ds.FaceDataset(root)[2]


def test_a_sixteen_bit_dataset_image_is_scaled_not_white(tmp_path):
    root = write_dataset(tmp_path / "data")
    grey = np.full((8, 8), 20000, np.uint16)  # a mid-grey in 16 bits
    Image.fromarray(grey).save(root / "images" / "1.png")
    image = ds.FaceDataset(root)[1]["image"]
    assert abs(float(image.mean()) - 20000 / 65535) < 0.01


def test_a_decompression_bomb_is_refused_with_the_file_named(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the same check PIL runs at 89 M pixels
    with pytest.raises(ImageError, match=f"{path}: refused: more than 10,000 pixels"):
        read_image(path)


# ------------------------------------------------------------------ the synthetic generator (issue 16, 3, 8)
def test_synthesize_refuses_an_existing_dataset_and_overwrite_removes_old_images(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["--identities", "2", "--per-identity", "2", "--size", "32", "--out", str(out)]
    assert synthesize.main(args) == 0
    capsys.readouterr()
    orphan = out / "images" / "id00099_000.jpg"
    orphan.write_bytes(b"an image of an older, bigger dataset")
    before = (out / ds.METADATA_NAME).read_bytes()
    assert synthesize.main(args) == 2
    assert "--overwrite" in one_line(capsys.readouterr().err)
    assert (out / ds.METADATA_NAME).read_bytes() == before and orphan.exists()  # nothing lost
    assert synthesize.main(args + ["--overwrite"]) == 0
    assert not orphan.exists() and len(list((out / "images").iterdir())) == 4


@pytest.mark.parametrize("flag, value", [("--size", "0"), ("--identities", "1"), ("--per-identity", "1"),
                                         ("--fill-min", "0")])
def test_synthesize_refuses_unusable_values(tmp_path, flag, value, capsys):
    assert synthesize.main(["--out", str(tmp_path / "s"), flag, value]) == 2
    assert flag[2:].replace("-", "_") in one_line(capsys.readouterr().err)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ model files (issue 16, 6, 9)
def test_a_sparse_matrix_asking_for_terabytes_is_refused_before_allocation(tmp_path):
    from ringnet_lib.model_io import _dense_from_sparse_state

    state = {"_shape": (10**6, 10**6), "data": np.ones(1), "indices": np.zeros(1, int), "indptr": np.array([0, 1])}
    with pytest.raises(model_io.ModelFileError, match=r"J_regressor.*7450.6 GiB"):
        _dense_from_sparse_state(state, "scipy.sparse.csc_matrix", "J_regressor", str(tmp_path / "model.pkl"))


def test_a_negative_sparse_index_does_not_wrap_to_the_last_joint(tmp_path):
    from ringnet_lib.model_io import _dense_from_sparse_state

    state = {"_shape": (5, 10), "data": np.ones(2), "indices": np.array([0, -1]), "indptr": np.array([0, 1, 2])}
    with pytest.raises(model_io.ModelFileError, match="row index outside 0..4"):
        _dense_from_sparse_state(state, "scipy.sparse.csc_matrix", "J_regressor", "model.pkl")


def test_a_memory_error_while_unpickling_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"x": 1}))

    def explode(self):
        raise MemoryError

    monkeypatch.setattr(model_io.RestrictedUnpickler, "load", explode)
    with pytest.raises(model_io.ModelFileError, match=f"{path}: refused: the pickle asks for more memory"):
        model_io.safe_unpickle(path)


@pytest.mark.parametrize("key, bad, message", [
    ("weights", lambda w: w * 2.0, "rows must sum to 1"),
    ("weights", lambda w: w.astype(np.complex128), "real numbers"),
    ("f", lambda f: f[:0], "no faces"),
    ("v_template", lambda v: v.astype(np.complex64), "real numbers"),
])
def test_model_files_are_checked(key, bad, message):
    raw = testing.random_flame_dict(n_vertices=200, seed=4)
    raw[key] = bad(raw[key])
    with pytest.raises(model_io.ModelFileError, match=f"'{key}' .*{message}"):
        model_io.flame_model_from_dict(raw, "bad.npz")


def test_a_checkpoints_flame_model_can_be_given_again_elsewhere(tmp_path, capsys):
    """A checkpoint trained on a FLAME folder that is not there any more: the demo says --flame-model, and
    with it the checkpoint runs."""
    from ringnet_lib import demo
    from ringnet_lib.data.samples import ASTRONAUT_PHOTO
    from ringnet_lib.training import train

    folder = testing.write_random_flame_folder(tmp_path / "flame", n_vertices=300, seed=5)
    result = train(TrainConfig.from_preset("quick", flame_model=folder, max_steps=1, image_size=32, batch_size=2,
                                           ring_size=3, n_identities=4, images_per_identity=3, eval_rings=0,
                                           tensorboard=False, progress=False, out_dir=tmp_path / "run"))
    moved = folder.rename(tmp_path / "flame_moved")
    args = [str(ASTRONAUT_PHOTO), "--method", "regress", "--checkpoint", str(result.checkpoint), "--detector",
            "none", "--out", str(tmp_path / "out")]
    assert demo.main(args) == 2
    assert "--flame-model" in one_line(capsys.readouterr().err)
    assert demo.main(args + ["--flame-model", str(moved)]) == 0
    result.checkpoint.unlink()


# ------------------------------------------------------------------ photos (issue 15)
def test_a_folder_with_no_images_is_one_line(tmp_path, capsys):
    from ringnet_lib import demo

    (tmp_path / "empty").mkdir()
    assert demo.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no photos in this folder" in one_line(capsys.readouterr().err)
    assert photos.main([str(tmp_path / "empty"), str(tmp_path / "dataset")]) == 2
    assert "no photos found" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "dataset").exists()


def test_a_corrupt_photo_is_one_line_naming_it(tmp_path, capsys):
    from ringnet_lib import demo

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    assert demo.main([str(broken), "--method", "regress", "--checkpoint", str(tmp_path / "none.pt"),
                      "--out", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "none.pt") in one_line(capsys.readouterr().err)  # the missing checkpoint comes first
    assert demo.main([str(broken), "--detector", "cascade", "--method", "regress", "--checkpoint",
                      str(broken), "--out", str(tmp_path / "out")]) == 2
    assert str(broken) in one_line(capsys.readouterr().err)
    assert not list((tmp_path / "out").glob("broken_*"))


@pytest.mark.skipif(sys.platform != "linux", reason="paths")
def test_evaluation_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    from ringnet_lib.evaluation.trained import main

    file = tmp_path / "a_file"
    file.write_text("x")
    for args, word in ((["--identities", "0"], "--identities 0"), (["--points", "5"], "--points 5"),
                       (["--out", str(file)], "is a file")):
        full = [str(tmp_path / "none.pt"), "--out", str(tmp_path / "eval")] + args
        assert main(full) == 2
        assert word in one_line(capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()


def test_ablation_refuses_bad_steps(tmp_path, capsys):
    from ringnet_lib.ablation import main

    assert main(["--ci", "--steps", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "--steps -1" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "a").exists()



@pytest.mark.parametrize("overrides, field, words", [
    ({"image_size": 100_000}, "image_size", "GiB"), ({"n_identities": 10**11}, "n_identities", "GiB")])
def test_sizes_that_cannot_fit_in_memory_are_refused_with_the_memory_they_need(overrides, field, words, tmp_path):
    config = TrainConfig.from_preset("quick", out_dir=tmp_path / "run", **overrides)
    with pytest.raises(ConfigError, match=rf"^{field}: .*need.*{words}.*this machine has|^{field}: .*need.*{words}"):
        validate_config(config)
    assert not (tmp_path / "run").exists()
