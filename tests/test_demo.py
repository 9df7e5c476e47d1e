"""The demo: a tiny checkpoint trained here (regress), FLAME fitted to dlib's landmarks (fit), the photo -> mesh
pipeline and its bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ringnet_lib import demo
from ringnet_lib.data.photos import Face, dlib_available, loose_square
from ringnet_lib.data.samples import ASTRONAUT_PHOTO
from ringnet_lib.fitting import FitConfig
from ringnet_lib.training import TrainConfig, load_checkpoint, load_encoder, train
from ringnet_lib.training.checkpoint import CheckpointError, save_checkpoint

OUTPUTS = {"crop", "overlay", "params_npz", "params_json", "posed_obj", "posed_ply", "neutral_obj", "neutral_ply"}
OUTPUT_NAMES = {"crop.png", "overlay.png", "params.npz", "params.json", "posed.obj", "posed.ply", "neutral.obj",
                "neutral.ply"}
# A shorter fit than the default (150 + 500 steps, ~40 s on 2 CPU cores): enough to move the landmarks onto dlib's.
QUICK_FIT = FitConfig(rigid_steps=60, all_steps=120)
needs_dlib = pytest.mark.skipif(not dlib_available(), reason="--method fit needs dlib's 68 landmarks: "
                                                             "pip install dlib-bin face-recognition-models")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One optimiser step of a tiny run: enough for a checkpoint with the real layout."""
    out = tmp_path_factory.mktemp("demo_run")
    config = TrainConfig.from_preset("quick", max_steps=1, image_size=32, batch_size=2, ring_size=3,
                                     n_identities=4, images_per_identity=3, eval_rings=0, tensorboard=False,
                                     progress=False, out_dir=str(out))
    path = train(config).checkpoint
    yield path
    path.unlink()  # 140 MB (weights + Adam state)


@pytest.fixture(scope="module")
def astronaut_run(checkpoint, tmp_path_factory):
    return demo.run_demo(ASTRONAUT_PHOTO, checkpoint, tmp_path_factory.mktemp("demo_out"), detector="none",
                         method="regress")


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    if not dlib_available():
        pytest.skip("--method fit needs dlib's 68 landmarks: pip install dlib-bin face-recognition-models")
    return demo.run_demo(ASTRONAUT_PHOTO, out_dir=tmp_path_factory.mktemp("fit_out"), method="fit",
                         fit_config=QUICK_FIT)


def test_demo_writes_every_output(astronaut_run):
    assert set(astronaut_run.paths) == OUTPUTS
    for path in astronaut_run.paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert "centred" in astronaut_run.message
    assert astronaut_run.method == "regress" and astronaut_run.residual_px is None  # no detected landmarks


def test_outputs_are_named_after_the_photo(checkpoint, tmp_path):
    photo = tmp_path / "jane doe.png"
    shutil.copy(ASTRONAUT_PHOTO, photo)
    out = tmp_path / "out"
    result = demo.run_demo(photo, checkpoint, out, detector="none", method="regress")
    assert {p.name for p in result.paths.values()} == {f"jane doe_{name}" for name in OUTPUT_NAMES}
    assert all(p.parent == out for p in result.paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.paths.values())


def test_meshes_are_flame_meshes(astronaut_run):
    import trimesh

    from ringnet_lib.flame import FLAME
    from ringnet_lib.params import split_params

    flame = FLAME()
    prediction = astronaut_run.prediction
    shape = split_params(prediction.params[None]).shape
    neutral = flame(shape=shape).vertices[0]
    for suffix in ("obj", "ply"):
        mesh = trimesh.load(astronaut_run.paths[f"neutral_{suffix}"], process=False)
        assert mesh.vertices.shape == tuple(neutral.shape)
        assert np.array_equal(mesh.faces, flame.faces.numpy())
        assert np.allclose(mesh.vertices, neutral.numpy(), atol=1e-6)
    posed = trimesh.load(astronaut_run.paths["posed_obj"], process=False)
    assert np.allclose(posed.vertices, prediction.posed_vertices.numpy(), atol=1e-6)


def test_parameters_saved_by_block(astronaut_run):
    saved = np.load(astronaut_run.paths["params_npz"])
    assert {k: saved[k].shape for k in ("camera", "pose", "shape", "expression")} == {
        "camera": (3,), "pose": (6,), "shape": (100,), "expression": (50,)}
    assert np.allclose(np.concatenate([saved[k] for k in ("camera", "pose", "shape", "expression")]),
                       astronaut_run.prediction.params.numpy())
    assert str(saved["method"]) == "regress"
    assert np.allclose(saved["crop_box"], astronaut_run.crop.box)
    as_json = json.loads(astronaut_run.paths["params_json"].read_text())
    assert np.allclose(as_json["shape"], saved["shape"])


def test_overlay_png_is_an_image(astronaut_run):
    with Image.open(astronaut_run.paths["overlay"]) as image:
        width, height = image.size
    assert width > 2 * height  # three panels side by side
    with Image.open(astronaut_run.paths["crop"]) as image:
        assert image.size == (32, 32)  # the checkpoint's image size


def test_mesh_pixels_follow_the_camera_convention():
    # s = 1, t = 0: a vertex at x = 0.5, y = 0.5 (normalised, +y up) is right of centre and ABOVE it.
    params = torch.zeros(159)
    params[0] = 1.0
    pixels = demo.mesh_pixels(torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]), params, 100)
    assert torch.allclose(pixels, torch.tensor([[75.0, 25.0], [50.0, 50.0]]))


def test_detector_crop_is_the_photo_tools_loose_square():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    landmarks = np.random.default_rng(0).uniform([80, 40], [120, 90], size=(68, 2))
    low, high = landmarks.min(0), landmarks.max(0)
    face = Face((low[0], low[1], high[0] - low[0], high[1] - low[1]), landmarks)
    crop = demo.face_crop(image, 48, detector=lambda _: [face])
    assert crop.image.shape == (48, 48, 3)
    assert np.allclose(crop.box, loose_square(landmarks))
    # the landmarks come along, in crop pixels (what --method fit fits to)
    left, top, side = crop.box
    assert np.allclose(crop.landmarks, (landmarks - [left, top]) * 48 / side)
    fit_crop = demo.face_crop(image, 48, detector=lambda _: [face], landmarks=True)
    assert np.allclose(fit_crop.landmarks, crop.landmarks)


def test_a_face_box_without_landmarks_cannot_be_fitted():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    face = Face((80.0, 30.0, 40.0, 40.0))  # a cascade-like box
    crop = demo.face_crop(image, 48, detector=lambda _: [face])
    assert crop.landmarks is None and crop.image.shape == (48, 48, 3)
    with pytest.raises(demo.DemoError, match="no 68 landmarks"):
        demo.face_crop(image, 48, detector=lambda _: [face], landmarks=True)


def test_centred_crop_without_detector():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    crop = demo.face_crop(image, 40, detector="none")
    assert crop.box == (40.0, 0.0, 120.0) and crop.image.shape == (40, 40, 3)
    with pytest.raises(demo.DemoError, match="needs the 68 landmarks"):
        demo.face_crop(image, 40, detector="none", landmarks=True)  # fit: no landmarks in a centred square


def test_no_face_is_a_clear_error():
    with pytest.raises(demo.DemoError, match="no face"):
        demo.face_crop(np.zeros((50, 50, 3), dtype=np.uint8), 32, detector=lambda _: [])


@pytest.mark.parametrize("detector", ["auto", "cascade"])
def test_a_photo_without_a_face_is_refused_not_guessed(detector, checkpoint, tmp_path, capsys):
    """A photo without a face is refused, never cropped at a guess (only --detector none crops the centre)."""
    blank = np.full((96, 128, 3), 127, dtype=np.uint8)
    with pytest.raises(demo.DemoError, match="no face found"):
        demo.face_crop(blank, 32, detector=detector)
    photo = tmp_path / "wall.png"
    Image.fromarray(blank).save(photo)
    with pytest.raises(demo.DemoError, match="wall.png: no face found"):
        demo.run_demo(photo, checkpoint, tmp_path / "out", detector=detector, method="regress")
    assert demo.main([str(photo), "--method", "regress", "--checkpoint", str(checkpoint), "--out",
                      str(tmp_path / "cli"), "--detector", detector]) == 2
    captured = capsys.readouterr()
    assert "no face found" in captured.err and "centred square" not in captured.out + captured.err
    assert not list((tmp_path / "out").glob("wall_*")) and not list((tmp_path / "cli").glob("wall_*"))


def test_regress_crops_around_a_detected_face(checkpoint, tmp_path):
    """The regress path with a detector (the cascade: no extra needed): a loose crop around the face box."""
    result = demo.run_demo(ASTRONAUT_PHOTO, checkpoint, tmp_path, detector="cascade", method="regress")
    assert "face box of the LBP cascade" in result.message and "centred" not in result.message
    assert result.crop.image.shape == (32, 32, 3)
    assert torch.isfinite(result.prediction.params).all()


def test_non_image_file_is_a_clear_error(tmp_path, checkpoint, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(demo.DemoError, match="not an image"):
        demo.load_image(text)
    assert demo.main([str(text), "--method", "regress", "--checkpoint", str(checkpoint), "--out",
                      str(tmp_path / "o")]) == 2
    assert "not an image" in capsys.readouterr().err


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path, checkpoint):
    saved = load_checkpoint(checkpoint)
    saved["config"]["trunk"] = "resnet34"  # same feature size, other layers: the weights cannot fit
    save_checkpoint(tmp_path / "other.pt", saved)
    with pytest.raises(demo.DemoError, match="other.pt: the weights do not fit the encoder its config describes"):
        demo.load_method("regress", tmp_path / "other.pt")
    (tmp_path / "other.pt").unlink()  # 140 MB copies: keep pytest's tmp small
    with pytest.raises(CheckpointError, match="another config"):  # the loader the demo uses
        load_encoder(checkpoint, expected={"image_size": 224})
    del saved["config"]["trunk"]
    saved["config"]["no_such_field"] = 1
    save_checkpoint(tmp_path / "future.pt", saved)
    with pytest.raises(demo.DemoError, match="future.pt: its config does not fit this version"):
        demo.load_method("regress", tmp_path / "future.pt")
    (tmp_path / "future.pt").unlink()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(demo.DemoError, match="not a checkpoint"):
        demo.load_method("regress", tmp_path / "garbage.pt")
    with pytest.raises(demo.DemoError, match="no checkpoint there"):
        demo.load_method("regress", tmp_path / "missing.pt")
    with pytest.raises(demo.DemoError, match="--method regress needs --checkpoint"):
        demo.load_method("regress", None)


def test_command_line(tmp_path, checkpoint, capsys):
    assert demo.main([str(ASTRONAUT_PHOTO), "--method", "regress", "--checkpoint", str(checkpoint), "--out",
                      str(tmp_path), "--detector", "none"]) == 0
    assert "centred" in capsys.readouterr().out
    assert (tmp_path / "astronaut_neutral.obj").is_file()


def test_a_folder_of_photos_in_one_call(tmp_path, checkpoint, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASTRONAUT_PHOTO, photos / "first.png")
    Image.open(ASTRONAUT_PHOTO).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "second.png")
    (photos / "notes.txt").write_text("not a photo, not listed")
    out = tmp_path / "out"
    assert demo.main([str(photos), "--method", "regress", "--checkpoint", str(checkpoint), "--out", str(out),
                      "--detector", "none"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 photo(s) done" in printed and "first.png" in printed and "second.png" in printed
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{stem}_{name}" for stem in ("first", "second") for name in OUTPUT_NAMES)
    first, second = (np.load(out / f"{stem}_params.npz")["params"] for stem in ("first", "second"))
    assert not np.array_equal(first, second)  # each photo's own prediction


@pytest.mark.parametrize("method", ["fit", "regress"])
def test_out_that_is_a_file_fails_before_any_work(tmp_path, checkpoint, capsys, monkeypatch, method):
    work = []
    monkeypatch.setattr(demo, "load_method", lambda *a, **k: work.append("load"))
    monkeypatch.setattr(demo, "run_photo", lambda *a, **k: work.append("run"))
    taken = tmp_path / "results.txt"
    taken.write_text("keep me")
    assert demo.main([str(ASTRONAUT_PHOTO), "--method", method, "--checkpoint", str(checkpoint), "--out",
                      str(taken)]) == 2
    error = capsys.readouterr().err
    assert str(taken) in error and error.count("\n") == 1 and error.startswith("error: ")
    assert work == [] and taken.read_text() == "keep me"


def test_help_has_an_example_for_each_method(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    examples = [line for line in text.splitlines() if line.strip().startswith("python -m ringnet_lib.demo")]
    for method in demo.METHODS:
        assert any(f"--method {method}" in line for line in examples), method
    assert any("--checkpoint" in line for line in examples if "--method regress" in line)


# --------------------------------------------------------------------------- fit (needs dlib)


@needs_dlib
def test_fit_writes_every_output_from_dlibs_landmarks(fitted_run):
    assert fitted_run.method == "fit" and set(fitted_run.paths) == OUTPUTS
    assert {p.name for p in fitted_run.paths.values()} == {f"astronaut_{name}" for name in OUTPUT_NAMES}
    for path in fitted_run.paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert "68 landmarks of dlib" in fitted_run.message
    assert fitted_run.crop.image.shape == (demo.FIT_SIZE, demo.FIT_SIZE, 3)
    assert fitted_run.crop.landmarks.shape == (68, 2)
    saved = np.load(fitted_run.paths["params_npz"])
    assert str(saved["method"]) == "fit"
    assert np.allclose(saved["params"], fitted_run.prediction.params.numpy())


@needs_dlib
def test_fit_moves_the_landmarks_onto_the_detected_ones(fitted_run, tmp_path):
    """The fitted model's 68 landmarks lie within a few pixels of dlib's, much closer than the unfitted start."""
    start = demo.run_photo(demo.load_method("fit"), ASTRONAUT_PHOTO, tmp_path,
                           fit_config=FitConfig(rigid_steps=0, all_steps=0))
    assert np.isfinite(fitted_run.residual_px) and np.isfinite(start.residual_px)
    assert fitted_run.residual_px < 0.5 * start.residual_px
    assert fitted_run.residual_px < 4.0  # pixels of the 224 px crop
    assert fitted_run.residual_px == pytest.approx(demo.landmark_residual_px(fitted_run.prediction, fitted_run.crop))


@needs_dlib
def test_fit_is_the_command_lines_default(tmp_path, capsys, monkeypatch):
    real = demo.fit_to_landmarks
    configs = []

    def quick_fit(decoder, target, confidence=None, config=None, shared_shape=False):
        configs.append(config)
        return real(decoder, target, confidence, QUICK_FIT, shared_shape)

    monkeypatch.setattr(demo, "fit_to_landmarks", quick_fit)
    assert demo.main([str(ASTRONAUT_PHOTO), "--out", str(tmp_path)]) == 0  # no --method, no checkpoint
    printed = capsys.readouterr().out
    assert configs == [None] and "68 landmarks of dlib" in printed and "landmark residual" in printed
    assert str(np.load(tmp_path / "astronaut_params.npz")["method"]) == "fit"


@needs_dlib
def test_fit_refuses_a_centred_square(tmp_path, capsys):
    assert demo.main([str(ASTRONAUT_PHOTO), "--method", "fit", "--detector", "none", "--out", str(tmp_path)]) == 2
    assert "needs the 68 landmarks" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
