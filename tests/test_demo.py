"""The demo: a tiny checkpoint trained here, then the photo -> mesh pipeline and its bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ringnet_lib import demo
from ringnet_lib.data.photos import loose_square
from ringnet_lib.train import TrainConfig, train
from ringnet_lib.training.checkpoint import load_checkpoint, save_checkpoint

ASTRONAUT = Path(__file__).resolve().parents[1] / "data_samples" / "astronaut" / "images" / "astronaut" / "astronaut.png"


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
    return demo.run_demo(ASTRONAUT, checkpoint, tmp_path_factory.mktemp("demo_out"), detector="none")


def test_demo_writes_every_output(astronaut_run):
    expected = {"crop", "overlay", "params_npz", "params_json", "posed_obj", "posed_ply", "neutral_obj", "neutral_ply"}
    assert set(astronaut_run.paths) == expected
    for path in astronaut_run.paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert "centred" in astronaut_run.message


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
    as_json = json.loads(astronaut_run.paths["params_json"].read_text())
    assert np.allclose(as_json["shape"], saved["shape"])


def test_overlay_png_is_an_image(astronaut_run):
    from PIL import Image

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
    crop = demo.face_crop(image, 48, detector=lambda _: [landmarks])
    assert crop.image.shape == (48, 48, 3)
    assert np.allclose(crop.box, loose_square(landmarks))


def test_centred_crop_without_detector():
    image = np.zeros((120, 200, 3), dtype=np.uint8)
    crop = demo.face_crop(image, 40, detector="none")
    assert crop.box == (40.0, 0.0, 120.0) and crop.image.shape == (40, 40, 3)


def test_no_face_is_a_clear_error():
    with pytest.raises(demo.DemoError, match="no face"):
        demo.face_crop(np.zeros((50, 50, 3), dtype=np.uint8), 32, detector=lambda _: [])


def test_auto_detector_falls_back_with_a_message():
    pytest.importorskip("PIL")
    try:
        import dlib  # noqa: F401
        pytest.skip("dlib is installed: auto uses it")
    except ImportError:
        pass
    crop = demo.face_crop(np.zeros((64, 64, 3), dtype=np.uint8), 32, detector="auto")
    assert "no face detector installed" in crop.message and "centred" in crop.message


def test_non_image_file_is_a_clear_error(tmp_path, checkpoint, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(demo.DemoError, match="not an image"):
        demo.load_image(text)
    assert demo.main([str(text), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 2
    assert "not an image" in capsys.readouterr().err


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path, checkpoint):
    saved = load_checkpoint(checkpoint)
    saved["config"]["trunk"] = "resnet34"  # same feature size, other layers: the weights cannot fit
    save_checkpoint(tmp_path / "other.pt", saved)
    with pytest.raises(demo.DemoError, match="another config"):
        demo.load_model(tmp_path / "other.pt")
    (tmp_path / "other.pt").unlink()  # 140 MB copies: keep pytest's tmp small
    with pytest.raises(demo.DemoError, match="another config"):
        demo.load_model(checkpoint, expected={"image_size": 224})
    del saved["config"]["trunk"]
    saved["config"]["no_such_field"] = 1
    save_checkpoint(tmp_path / "future.pt", saved)
    with pytest.raises(demo.DemoError, match="another config"):
        demo.load_model(tmp_path / "future.pt")
    (tmp_path / "future.pt").unlink()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(demo.DemoError, match="not a checkpoint"):
        demo.load_model(tmp_path / "garbage.pt")
    with pytest.raises(demo.DemoError, match="no checkpoint there"):
        demo.load_model(tmp_path / "missing.pt")


def test_command_line(tmp_path, checkpoint, capsys):
    assert demo.main([str(ASTRONAUT), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--detector",
                      "none"]) == 0
    assert "centred" in capsys.readouterr().out
    assert (tmp_path / "astronaut_neutral.obj").is_file()
