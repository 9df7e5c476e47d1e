"""Bad input to the dataset writers and reader (docs/reliability.md, Datasets): `--overwrite` never deletes
what is not a dataset, sizes that cannot fit in memory, non-finite flags, a metadata.npz that is not an npz,
runpy's warning, and a photo folder that cannot make a ring. Each case asserts the exit status or error type,
that the one-line message names the flag or file, and that nothing was written or lost."""
from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ringnet_lib.cli import flag
from ringnet_lib.data import dataset as ds
from ringnet_lib.data import photos, synthesize
from ringnet_lib.testing import fake_face_detector

TINY = ["--identities", "2", "--per-identity", "2", "--size", "16", "--batch", "4"]


def one_line(text: str) -> str:
    """The one line of an error; the progress bar of a run that got as far as reading photos is left out."""
    lines = [line for line in text.strip().splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1, text
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): to show that nothing changed."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def precious_folder(root: Path) -> Path:
    """A folder of a user's files that is not a dataset."""
    (root / "sub").mkdir(parents=True)
    (root / "precious.txt").write_text("irreplaceable")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / "holiday.jpg")
    (root / "sub" / "notes.txt").write_text("more")
    return root


@pytest.fixture
def detect_anything(monkeypatch):
    """photos.main with a detector that finds a face in every readable, non-black photo."""
    monkeypatch.setattr(photos, "get_detector", lambda detector="auto", landmarks=False: (fake_face_detector, "fake"))


def photo_folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for person, count in counts.items():
        (root / person).mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(1, 255, (40, 40, 3), dtype=np.uint8)).save(root / person / f"{k}.png")
    return root


def run_module(module: str, *args: str, memory_gib: float | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` in a child process; with ``memory_gib``, its address space is capped so that a
    regression is a MemoryError there, not the OOM killer here."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    env["OMP_NUM_THREADS"] = "1"

    def cap():
        limit = int(memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=120, preexec_fn=cap if memory_gib else None)


# ------------------------------------------------------------------ 1. --overwrite replaces only a dataset
def test_synthesize_overwrite_never_deletes_what_is_not_a_dataset(tmp_path, capsys):
    out = precious_folder(tmp_path / "mine")
    before = tree(out)
    assert synthesize.main(TINY + ["--out", str(out), "--overwrite"]) == 2
    message = one_line(capsys.readouterr().err)
    assert str(out) in message and "precious.txt" in message and "--overwrite" not in message
    assert tree(out) == before
    # A plain file is never replaced by a folder.
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert synthesize.main(TINY + ["--out", str(file), "--overwrite"]) == 2
    message = one_line(capsys.readouterr().err)
    assert str(file) in message and "a file" in message and "--overwrite" not in message
    assert file.read_text() == "keep me"
    # A dataset with a user's file beside it is not only a dataset: refused, naming that file.
    dataset = tmp_path / "dataset"
    assert synthesize.main(TINY + ["--out", str(dataset)]) == 0
    (dataset / "precious.txt").write_text("irreplaceable")
    (dataset / "images" / "readme.txt").write_text("mine too")
    capsys.readouterr()
    before = tree(dataset)
    assert synthesize.main(TINY + ["--out", str(dataset), "--overwrite"]) == 2
    message = one_line(capsys.readouterr().err)
    assert "precious.txt" in message and "--overwrite" not in message
    assert tree(dataset) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_photos_overwrite_never_deletes_what_is_not_a_dataset(tmp_path, capsys, detect_anything):
    source = photo_folder(tmp_path / "photos", {"ann": 2, "bob": 1})
    out = precious_folder(tmp_path / "mine")
    before = tree(out)
    assert photos.main([str(source), str(out), "--overwrite"]) == 2
    message = one_line(capsys.readouterr().err)
    assert str(out) in message and "precious.txt" in message and "--overwrite" not in message
    assert tree(out) == before
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert photos.main([str(source), str(file), "--overwrite"]) == 2
    assert str(file) in one_line(capsys.readouterr().err) and file.read_text() == "keep me"


def test_photos_never_writes_over_or_into_its_own_photos(tmp_path, capsys, detect_anything):
    source = photo_folder(tmp_path / "photos", {"ann": 2, "bob": 1})
    before = tree(tmp_path)
    for out in (source, source / "dataset", tmp_path):  # the photos, inside them, around them
        assert photos.main([str(source), str(out), "--overwrite"]) == 2
        message = one_line(capsys.readouterr().err)
        assert str(out) in message and "photo" in message, message
        assert tree(tmp_path) == before  # the source photos intact, nothing written
    # The photos' folder given another way (a trailing "/.") is the same folder.
    assert photos.main([str(source), str(source) + "/.", "--overwrite"]) == 2
    assert tree(tmp_path) == before


def test_overwrite_still_replaces_a_dataset_this_library_wrote(tmp_path, capsys, detect_anything):
    out = tmp_path / "synth"
    assert synthesize.main(TINY + ["--out", str(out)]) == 0
    capsys.readouterr()
    orphan = out / "images" / "id00099_000.jpg"
    orphan.write_bytes(b"an image of an older, bigger dataset")
    assert synthesize.main(TINY + ["--out", str(out)]) == 2  # without --overwrite: refused, and it says how
    assert "--overwrite" in one_line(capsys.readouterr().err) and orphan.exists()
    assert synthesize.main(TINY + ["--out", str(out), "--overwrite", "--seed", "3"]) == 0
    assert not orphan.exists() and len(list((out / "images").iterdir())) == 4
    assert '"seed": 3' in str(ds.read_metadata(out)["description"])
    # A photo dataset (images in sub-folders) is replaced by a synthetic one, and the other way round.
    source = photo_folder(tmp_path / "photos", {"ann": 2, "bob": 1})
    assert photos.main([str(source), str(out), "--overwrite"]) == 0
    assert sorted(ds.read_metadata(out)["identity_name"]) == ["ann", "bob"]
    assert sorted(p.name for p in out.iterdir()) == ["images", ds.METADATA_NAME]
    assert synthesize.main(TINY + ["--out", str(out), "--overwrite"]) == 0
    assert len(ds.FaceDataset(out)) == 4 and not (out / "images" / "ann").exists()
    # An empty folder needs no --overwrite.
    (tmp_path / "empty").mkdir()
    assert synthesize.main(TINY + ["--out", str(tmp_path / "empty")]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left


# ------------------------------------------------------------------ 2. sizes that cannot fit in memory
@pytest.mark.parametrize("args, named", [(["--identities", str(10**9)], "--identities"),
                                         (["--size", str(10**6)], "--size"),
                                         (["--size", "4096", "--batch", str(10**6), "--identities", str(10**4)],
                                          "--batch")])  # one image of 4,096 px fits in 4.3 GiB; 60,000 do not
def test_synthesize_refuses_what_cannot_fit_in_memory_before_allocating(tmp_path, args, named):
    out = tmp_path / "synth"
    result = run_module("ringnet_lib.data.synthesize", *args, "--out", str(out), memory_gib=4)
    assert result.returncode == 2, result.stderr[-2000:]
    message = one_line(result.stderr)
    assert named in message and "GiB" in message and "this machine has" in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_photos_refuses_a_crop_size_that_cannot_fit_in_memory(tmp_path):
    (tmp_path / "photos" / "ann").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(tmp_path / "photos" / "ann" / "a.png")
    result = run_module("ringnet_lib.data.photos", str(tmp_path / "photos"), str(tmp_path / "out"),
                        "--size", str(10**6), memory_gib=4)
    assert result.returncode == 2, result.stderr[-2000:]
    message = one_line(result.stderr)
    assert "--size" in message and "GiB" in message
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 3. every flag is checked and named
FLOAT_FIELDS = [f.name for f in dataclasses.fields(synthesize.SynthConfig) if f.type in ("float", float)]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_synthesize_refuses_non_finite_values_naming_the_flag(tmp_path, capsys, field, value):
    assert synthesize.main(TINY + ["--out", str(tmp_path / "s"), f"{flag(field)}={value}"]) == 2  # = for -inf
    message = one_line(capsys.readouterr().err)
    assert flag(field) in message and "finite" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value", [("shape_std", "-1"), ("expression_std", "-0.1"), ("yaw_deg", "-5"),
                                          ("pitch_deg", "-1"), ("roll_deg", "-1"), ("jaw_open_max", "-0.1"),
                                          ("centre_jitter", "-0.1"), ("fill_min", "0"), ("fill_max", "2"),
                                          ("fill_max", "0.3"), ("identities", "1"), ("per_identity", "0"),
                                          ("seed", "-1"), ("size", "8"), ("batch", "0"), ("image_format", "gif")])
def test_synthesize_names_the_flag_of_each_unusable_value(tmp_path, capsys, field, value):
    assert synthesize.main(TINY + ["--out", str(tmp_path / "s"), flag(field), value]) == 2
    assert flag(field) in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_every_synth_config_field_is_checked():
    """A new field without a check in validate() fails here: each field gets a bad value and must be named."""
    bad = {"identities": 1, "per_identity": 1, "seed": -1, "size": 8, "batch": 0, "image_format": "gif",
           "fill_min": 0.0}
    for item in dataclasses.fields(synthesize.SynthConfig):
        value = float("nan") if item.name in FLOAT_FIELDS else bad[item.name]
        with pytest.raises(synthesize.ConfigError, match=flag(item.name)):
            synthesize.SynthConfig(**{item.name: value}).validate()


# ------------------------------------------------------------------ 4. a metadata.npz that is not an npz
@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"\x93NUMPY not an npz"])
def test_a_metadata_file_that_is_not_an_npz_is_named_as_such(tmp_path, content):
    (tmp_path / ds.METADATA_NAME).write_bytes(content)
    with pytest.raises(ds.DatasetFormatError) as info:
        ds.read_metadata(tmp_path)
    message = one_line(str(info.value))
    assert str(tmp_path / ds.METADATA_NAME) in message and "not a readable .npz" in message
    assert "unpickling" not in message


# ------------------------------------------------------------------ 5. no runpy warning
@pytest.mark.parametrize("module, args", [("ringnet_lib.data.synthesize", ["--identities", "1", "--out", "x"]),
                                          ("ringnet_lib.data.photos", ["no_such_folder", "x"])])
def test_the_command_lines_print_no_runpy_warning(tmp_path, module, args):
    result = subprocess.run([sys.executable, "-W", "default", "-m", module, *args], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("error: "), result.stderr  # the error alone: no RuntimeWarning
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 6. photos that cannot make a ring
@pytest.mark.parametrize("counts, usable", [({"ann": 1, "bob": 0}, "1 usable photo of 1 person"),
                                            ({"ann": 3, "bob": 0}, "3 usable photos of 1 person"),
                                            ({"ann": 1, "bob": 1}, "2 usable photos of 2 people")])
def test_photos_that_cannot_make_a_ring_write_nothing(tmp_path, capsys, detect_anything, counts, usable):
    source = photo_folder(tmp_path / "photos", counts)
    (source / "bob").mkdir(exist_ok=True)
    for person in ("ann", "bob"):
        (source / person / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    before = tree(source)
    assert photos.main([str(source), str(tmp_path / "out")]) == 2
    message = one_line(capsys.readouterr().err)
    assert usable in message and "a ring needs" in message and "broken.jpg" in message, message
    assert not (tmp_path / "out").exists() and tree(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no staging folder left
