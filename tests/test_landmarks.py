"""68 iBUG landmarks: static + dynamic contour, agreement with smplx, file handling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib.contour import default_dynamic_embedding, distance_to_segments, silhouette_segments_2d
from ringnet_lib.flame import FLAME
from ringnet_lib.landmarks import (IBUG68_DYNAMIC, IBUG68_STATIC, N_YAW_BINS, SMPLX_TO_IBUG68, Landmarks68,
                                   bin_of_yaw, load_dynamic_embedding, save_dynamic_embedding, yaw_degrees,
                                   yaw_of_bin)
from ringnet_lib.model_io import DYNAMIC_EMBEDDING_NAME, ModelFileError

smplx = pytest.importorskip("smplx")


def random_dynamic_embedding(n_faces: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    bary = rng.random((N_YAW_BINS, 17, 3)) + 0.05
    return {"lmk_face_idx": rng.integers(0, n_faces, (N_YAW_BINS, 17)),
            "lmk_b_coords": bary / bary.sum(-1, keepdims=True)}


def random_pose(batch: int, seed: int) -> torch.Tensor:
    """Poses with yaw spread over +-70 degrees (beyond the table's +-39) plus pitch, roll, neck, jaw."""
    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 0.2, (batch, 15))
    pose[:, 1] = rng.uniform(-1.2, 1.2, batch)
    return torch.tensor(pose, dtype=torch.float32)


def smplx_landmarks(folder, shape, expression, pose):
    model = smplx.FLAME(model_path=str(folder), num_betas=shape.shape[1], num_expression_coeffs=expression.shape[1],
                        use_face_contour=True, batch_size=shape.shape[0])
    out = model(betas=shape, expression=expression, global_orient=pose[:, 0:3], neck_pose=pose[:, 3:6],
                jaw_pose=pose[:, 6:9], leye_pose=pose[:, 9:12], reye_pose=pose[:, 12:15])
    return out.joints[:, 5:]  # 5 joints, then 51 static, then 17 contour


def test_constants():
    assert IBUG68_DYNAMIC == tuple(range(17)) and IBUG68_STATIC == tuple(range(17, 68))
    assert sorted(SMPLX_TO_IBUG68) == list(range(68))
    assert [yaw_of_bin(r) for r in (0, 39, 40, 78)] == [0, 39, -1, -39]
    yaws = torch.tensor([0.4, 38.6, 39.4, 80.0, -0.6, -1.4, -39.0, -75.0])
    assert bin_of_yaw(yaws).tolist() == [0, 39, 39, 39, 40, 40, 78, 78]


def test_yaw_sign_matches_flame_convention():
    pose = torch.zeros(1, 15)
    pose[0, 1] = np.radians(20)  # +20 degrees about +y: the face turns towards +x (subject's left)
    assert torch.allclose(yaw_degrees(pose), torch.tensor([-20.0]), atol=1e-4)
    pose[0, 4] = np.radians(10)  # neck: ignored by default (smplx), included with chain (0, 1)
    assert torch.allclose(yaw_degrees(pose), torch.tensor([-20.0]), atol=1e-4)
    assert torch.allclose(yaw_degrees(pose, chain=(0, 1)), torch.tensor([-30.0]), atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_smplx_random_model(random_model_folders, tmp_path, seed):
    folder = random_model_folders["plain"]
    flame = FLAME(folder)
    table = random_dynamic_embedding(flame.faces.shape[0], seed)
    save_dynamic_embedding(table, folder / DYNAMIC_EMBEDDING_NAME)
    shape = torch.randn(8, 100, generator=torch.Generator().manual_seed(seed)) * 0.5
    expression = torch.randn(8, 50, generator=torch.Generator().manual_seed(seed + 7)) * 0.5
    pose = random_pose(8, seed)
    ours = Landmarks68.from_folder(flame, folder)(flame(shape, expression, pose).vertices, pose)
    theirs = smplx_landmarks(folder, shape, expression, pose)[:, list(SMPLX_TO_IBUG68)]
    assert (yaw_degrees(pose).abs() > 39).any()
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_equals_smplx_default_head(default_model_folder):
    flame = FLAME()
    save_dynamic_embedding(default_dynamic_embedding(), default_model_folder / DYNAMIC_EMBEDDING_NAME)
    shape = torch.randn(6, 100, generator=torch.Generator().manual_seed(3))
    expression = torch.randn(6, 50, generator=torch.Generator().manual_seed(4))
    pose = random_pose(6, 5)
    ours = Landmarks68(flame)(flame(shape, expression, pose).vertices, pose)
    theirs = smplx_landmarks(default_model_folder, shape, expression, pose)[:, list(SMPLX_TO_IBUG68)]
    assert (ours - theirs).abs().max() < 1e-5


def test_side_turning_away_stays_on_silhouette():
    """Turn the default head by +-30 deg: the contour on the side turning away is on the outline.

    Positive FLAME yaw turns the face towards -x, so the subject's right half (iBUG 1..8, at
    -x) turns away. With the wrong sign the points would be read from the mirrored bin and
    lie well inside the face (tens of mm away).
    """
    flame = FLAME()
    landmarks = Landmarks68(flame)
    for yaw, away in ((30, slice(0, 8)), (-30, slice(9, 17))):
        pose = torch.zeros(1, 15, dtype=torch.float64)
        pose[0, 1] = np.radians(-yaw)  # FLAME yaw = minus the angle about +y
        flame64 = flame.double()
        vertices = flame64(pose=pose).vertices
        points = landmarks.double()(vertices, pose)[0, :17].numpy()
        rotated = vertices[0].numpy()
        segments = silhouette_segments_2d(rotated, flame.faces.numpy())
        distance = distance_to_segments(points[away, :2], segments)
        assert distance.max() < 0.002, distance
        wrong = Landmarks68(flame64)(vertices, -pose)[0, away].numpy()  # the mirrored bin
        assert distance_to_segments(wrong[:, :2], segments).max() > 0.005


def test_load_rejects_bad_files(tmp_path):
    good = random_dynamic_embedding(100)
    path = save_dynamic_embedding(good, tmp_path / "ok.npy")
    loaded = load_dynamic_embedding(path, n_faces=100)
    assert np.array_equal(loaded["lmk_face_idx"], good["lmk_face_idx"])
    assert np.allclose(np.load(path, allow_pickle=True)[()]["lmk_b_coords"], good["lmk_b_coords"])
    bad_shape = dict(good, lmk_face_idx=good["lmk_face_idx"][:, :16])
    with pytest.raises(ModelFileError, match=r"bad_shape\.npy.*lmk_face_idx"):
        load_dynamic_embedding(save_dynamic_embedding(bad_shape, tmp_path / "bad_shape.npy"))
    bad_bary = dict(good, lmk_b_coords=good["lmk_b_coords"][..., :2])
    with pytest.raises(ModelFileError, match=r"bad_bary\.npy.*lmk_b_coords"):
        load_dynamic_embedding(save_dynamic_embedding(bad_bary, tmp_path / "bad_bary.npy"))
    with pytest.raises(ModelFileError, match=r"ok\.npy.*lmk_face_idx.*outside"):
        load_dynamic_embedding(path, n_faces=10)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((79, 17)))
    with pytest.raises(ModelFileError, match="plain.npy"):
        load_dynamic_embedding(plain)


def test_load_refuses_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(Evil(), file)
    with pytest.raises(ModelFileError, match="evil.npy"):
        load_dynamic_embedding(path)


def test_folder_without_table_is_an_error(random_model_folders):
    flame = FLAME(random_model_folders["chumpy"])
    with pytest.raises(ModelFileError):
        Landmarks68(flame)
    with pytest.raises(ModelFileError, match=DYNAMIC_EMBEDDING_NAME):
        Landmarks68.from_folder(flame, random_model_folders["chumpy"])
