"""Loading, validating and saving FLAME-format files; bad input gives errors that say what to do."""
from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch

from ringnet_lib import model_io, testing
from ringnet_lib.default_head import default_model
from ringnet_lib.flame import FLAME
from ringnet_lib.model_io import ModelFileError


def assert_same_model(a: model_io.FlameModelData, b: model_io.FlameModelData):
    for field in ("v_template", "faces", "shapedirs", "posedirs", "joint_regressor", "weights"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.parents == b.parents == (-1, 0, 1, 1, 1)


def test_chumpy_style_pickle_loads_without_chumpy(random_model_folders, random_model_dict):
    with pytest.raises(ImportError):
        import chumpy  # noqa: F401  (the point: it is not installed)
    loaded = model_io.load_flame_model(random_model_folders["chumpy"] / "generic_model.pkl")
    expected = model_io.flame_model_from_dict(random_model_dict)
    assert_same_model(loaded, expected)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_python2_style_protocols_load(tmp_path, random_model_dict, protocol):
    """Protocols 0-2 write Python 2 names (copy_reg, __builtin__), as the 2017-2020 FLAME files have."""
    path = testing.write_chumpy_style_pickle(random_model_dict, tmp_path / "m.pkl", protocol=protocol)
    assert b"copy_reg" in path.read_bytes() or protocol == 2
    assert_same_model(model_io.load_flame_model(path), model_io.flame_model_from_dict(random_model_dict))


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_save_then_load_gives_the_same_model(tmp_path, random_model_dict, suffix):
    model = model_io.flame_model_from_dict(random_model_dict)
    path = model_io.save_flame_model(model, tmp_path / f"model{suffix}")
    assert_same_model(model_io.load_flame_model(path), model)


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": Exploit()}, protocol=2))
    with pytest.raises(ModelFileError, match=r"refused to load.*(posix|os)\.system"):
        model_io.load_flame_model(path)
    assert not marker.exists()


def test_pickle_with_other_globals_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.random.default_rng(0)}))
    with pytest.raises(ModelFileError, match="refused to load"):
        model_io.load_flame_model(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ModelFileError, match=r"generic_model\.pkl: file not found"):
        model_io.load_flame_model(tmp_path / "generic_model.pkl")
    with pytest.raises(ModelFileError, match="no such file or folder"):
        FLAME(tmp_path / "nowhere")


def test_folder_without_model_says_which_names(tmp_path):
    with pytest.raises(ModelFileError, match="no FLAME model file found.*generic_model.pkl"):
        model_io.load_flame_model(tmp_path)


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_truncated_file(tmp_path, random_model_dict, suffix):
    path = model_io.save_flame_model(model_io.flame_model_from_dict(random_model_dict), tmp_path / f"m{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=r"truncated"):
        model_io.load_flame_model(path)


def test_missing_key(tmp_path, random_model_dict):
    raw = dict(random_model_dict)
    del raw["weights"]
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(ModelFileError, match=r"m\.pkl: missing key\(s\) \['weights'\]"):
        model_io.load_flame_model(path)


def test_landmark_file_passed_as_model(tmp_path):
    path = model_io.save_static_embedding(testing.random_static_embedding(100), tmp_path / "lmk.pkl")
    with pytest.raises(ModelFileError, match="Is this a FLAME model"):
        model_io.load_flame_model(path)


@pytest.mark.parametrize("key,bad,message", [
    ("shapedirs", lambda a: a[:, :2], r"'shapedirs' must have shape \(400, 3, K\)"),
    ("weights", lambda a: a[:, :4], r"'weights' must have shape \(400, 5\)"),
    ("f", lambda a: a + 10_000, "indexes vertices outside"),
    ("v_template", lambda a: np.where(a > 0.1, np.nan, a), "NaN or Inf"),
    ("kintree_table", lambda a: a[:, :3], "has 3 joints; FLAME has 5"),
])
def test_wrong_shapes_and_values(random_model_dict, key, bad, message):
    raw = dict(random_model_dict)
    raw[key] = bad(np.asarray(raw[key]))
    with pytest.raises(ModelFileError, match=message):
        model_io.flame_model_from_dict(raw, source="bad.pkl")


def test_fewer_components_than_asked(random_model_dict):
    raw = dict(random_model_dict)
    raw["shapedirs"] = raw["shapedirs"][:, :, :320]
    model = model_io.flame_model_from_dict(raw, source="short.pkl")
    with pytest.raises(ModelFileError, match=r"short\.pkl: asked for 50 expression components.*at most 20"):
        FLAME(model, n_expression=50)
    assert FLAME(model, n_expression=20).n_expression == 20
    with pytest.raises(ModelFileError, match="asked for 301 shape components"):
        FLAME(model, n_shape=301, n_expression=0)


def test_embedding_out_of_range(tmp_path):
    path = model_io.save_static_embedding(testing.random_static_embedding(1000), tmp_path / "lmk.pkl")
    with pytest.raises(ModelFileError, match=r"lmk\.pkl: 'lmk_face_idx' has indices outside 0\.\.9"):
        model_io.load_static_embedding(path, n_faces=10)


def test_folder_loads_embedding_and_model(random_model_folders):
    flame = FLAME(random_model_folders["plain"])
    np.testing.assert_array_equal(flame.landmark_face_idx.numpy(), random_model_folders["embedding"]["lmk_face_idx"])
    out = flame(shape=torch.zeros(2, 100))
    assert out.static_landmarks.shape == (2, 51, 3)


def test_folder_round_trip_carries_both_landmark_tables(tmp_path):
    model = testing.random_flame_model(300, seed=4)
    folder = model_io.write_flame_folder(model, tmp_path / "flame")
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        ["FLAME_NEUTRAL.pkl", model_io.STATIC_EMBEDDING_NAME, model_io.DYNAMIC_EMBEDDING_NAME])
    for source in (folder, folder / "FLAME_NEUTRAL.pkl"):  # the folder, or its model file
        loaded = model_io.load_flame_folder(source)
        assert_same_model(loaded, model)
        assert not loaded.is_embedded_default
        for name in ("static_embedding", "dynamic_embedding"):
            for key in ("lmk_face_idx", "lmk_b_coords"):
                np.testing.assert_array_equal(getattr(loaded, name)[key], getattr(model, name)[key],
                                              err_msg=f"{name} {key}")
    flame = FLAME(folder)
    np.testing.assert_array_equal(flame.contour_face_idx.numpy(), model.dynamic_embedding["lmk_face_idx"])
    np.testing.assert_allclose(flame.contour_bary_coords.numpy(), model.dynamic_embedding["lmk_b_coords"],
                               rtol=1e-6)
    assert flame.contour_face_idx.shape == (79, 17) and flame.contour_bary_coords.shape == (79, 17, 3)
    assert not flame.is_embedded_default


def test_folder_without_landmark_files(tmp_path):
    model = dataclasses.replace(testing.random_flame_model(300, seed=5), static_embedding=None,
                                dynamic_embedding=None)
    folder = model_io.write_flame_folder(model, tmp_path / "bare", model_name="generic_model.pkl")
    assert [path.name for path in folder.iterdir()] == ["generic_model.pkl"]
    loaded = model_io.load_flame_folder(folder)
    assert loaded.static_embedding is None and loaded.dynamic_embedding is None
    flame = FLAME(folder)
    assert flame.landmark_face_idx is None and flame.contour_face_idx is None
    assert flame(shape=torch.zeros(1, 100)).static_landmarks is None


def test_folder_with_a_foreign_contour_table(tmp_path):
    model = testing.random_flame_model(300, seed=6)
    table = testing.random_dynamic_embedding(10 * len(model.faces), seed=6)  # indices beyond this mesh
    table["lmk_face_idx"][0, 0] = 10 * len(model.faces) - 1
    folder = model_io.write_flame_folder(dataclasses.replace(model, dynamic_embedding=table), tmp_path / "f")
    with pytest.raises(ModelFileError, match=r"flame_dynamic_embedding\.npy: 'lmk_face_idx' has indices outside"):
        model_io.load_flame_folder(folder)


def test_default_head_written_and_read_back(default_model_folder):
    written = model_io.load_flame_folder(default_model_folder)
    default = default_model()
    assert default.is_embedded_default and not written.is_embedded_default
    for field in ("v_template", "shapedirs", "joint_regressor", "weights"):
        np.testing.assert_allclose(getattr(written, field), getattr(default, field), rtol=0, atol=1e-12,
                                   err_msg=field)
    np.testing.assert_array_equal(written.faces, default.faces)
    for name in ("static_embedding", "dynamic_embedding"):
        for key in ("lmk_face_idx", "lmk_b_coords"):
            np.testing.assert_array_equal(getattr(written, name)[key], getattr(default, name)[key])
