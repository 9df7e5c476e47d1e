"""68 iBUG landmarks: static + dynamic contour, agreement with smplx, the yaw sign, file handling."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ringnet_lib.camera import normalized_to_pixels
from ringnet_lib.contour import silhouette_segments_2d, yaw_rotation
from ringnet_lib.decoder import Decoder
from ringnet_lib.flame import FLAME
from ringnet_lib.landmarks import (N_YAW_BINS, SMPLX_TO_IBUG68, barycentric_landmarks, bin_of_yaw, head_rotation,
                                   head_yaw_degrees, yaw_degrees, yaw_of_bin)
from ringnet_lib.lbs import batch_rodrigues
from ringnet_lib.mesh import distance_to_segments
from ringnet_lib.model_io import (DYNAMIC_EMBEDDING_NAME, ModelFileError, load_dynamic_embedding,
                                  save_dynamic_embedding)
from ringnet_lib.params import CONTOUR_IN_68, GLOBAL, JAW, N_PARAMS, POSE, STATIC_IN_68, joint_pose

smplx = pytest.importorskip("smplx")

NOSE_TIP = 30  # iBUG 31, zero-based: a static landmark (the tip of the nose)


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
    assert list(range(68))[CONTOUR_IN_68] == list(range(17))
    assert list(range(68))[STATIC_IN_68] == list(range(17, 68))
    assert sorted(SMPLX_TO_IBUG68) == list(range(68))
    assert [yaw_of_bin(r) for r in (0, 39, 40, 78)] == [0, 39, -1, -39]
    yaws = torch.tensor([0.4, 38.6, 39.4, 80.0, -0.6, -1.4, -39.0, -75.0])
    assert bin_of_yaw(yaws).tolist() == [0, 39, 39, 39, 40, 40, 78, 78]
    # A diverged (NaN) yaw reads row 0, not the garbage index .long() makes of NaN.
    assert bin_of_yaw(torch.tensor([float("nan"), 12.2])).tolist() == [0, 12]
    # Every row maps back to itself through its yaw.
    rows = bin_of_yaw(torch.tensor([float(yaw_of_bin(r)) for r in range(N_YAW_BINS)]))
    assert rows.tolist() == list(range(N_YAW_BINS))


def test_yaw_sign_matches_flame_convention():
    pose = torch.zeros(1, 15)
    pose[0, 1] = np.radians(20)  # +20 degrees about +y: the face turns towards +x (subject's left)
    assert torch.allclose(yaw_degrees(pose), torch.tensor([-20.0]), atol=1e-4)
    pose[0, 4] = np.radians(10)  # neck: ignored by default (smplx), included with chain (0, 1)
    assert torch.allclose(yaw_degrees(pose), torch.tensor([-20.0]), atol=1e-4)
    assert torch.allclose(yaw_degrees(pose, chain=(0, 1)), torch.tensor([-30.0]), atol=1e-3)


def test_head_rotation_has_the_landmarks_sign():
    """head_rotation(yaw) is a rotation of -yaw about +y, read back as yaw; pitch and roll as documented."""
    yaws = np.array([-70.0, -30.0, 0.0, 12.5, 30.0, 70.0])
    axis_angle = head_rotation(yaws)
    assert axis_angle.shape == (6, 3) and axis_angle.dtype == np.float64
    np.testing.assert_allclose(axis_angle[:, [0, 2]], 0.0, atol=1e-12)
    np.testing.assert_allclose(axis_angle[:, 1], -np.radians(yaws), atol=1e-12)
    rotation = batch_rodrigues(torch.tensor(axis_angle))
    np.testing.assert_allclose(head_yaw_degrees(rotation).numpy(), yaws, atol=1e-9)
    # R = R_y(-yaw) R_x(pitch) R_z(roll); yaw is read back close to the given one with pitch and roll.
    turned = head_rotation([25.0], pitch_deg=[10.0], roll_deg=[-5.0])
    expected = (Rotation.from_euler("Y", -25.0, degrees=True) * Rotation.from_euler("X", 10.0, degrees=True)
                * Rotation.from_euler("Z", -5.0, degrees=True)).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(turned[0]).as_matrix(), expected, atol=1e-12)
    pitched = batch_rodrigues(torch.tensor(head_rotation([0.0], pitch_deg=[20.0])))[0].numpy()
    assert (pitched @ [0.0, 0.0, 1.0])[1] < -0.3  # positive pitch tips the face (+z) down


def test_head_rotation_roll_tilts_towards_the_right_shoulder_as_documented():
    """head_rotation's docstring: positive roll tilts the head towards the subject's right shoulder (-x):
    the crown moves towards -x and the left ear (+x) goes up."""
    rolled = batch_rodrigues(torch.tensor(head_rotation([0.0], roll_deg=[20.0])))[0].numpy()
    crown, left_ear = rolled @ [0.0, 0.1, 0.0], rolled @ [0.08, 0.0, 0.0]
    assert crown[0] < -0.02 and left_ear[1] > 0.02, (crown, left_ear)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_smplx_random_model(random_model_folders, tmp_path, seed):
    # A copy of the shared random model, with a random contour table beside it.
    folder = shutil.copytree(random_model_folders["plain"], tmp_path / "flame")
    n_faces = FLAME(folder).faces.shape[0]
    table = random_dynamic_embedding(n_faces, seed)
    save_dynamic_embedding(table, folder / DYNAMIC_EMBEDDING_NAME)
    decoder = Decoder(folder)  # FLAME(folder) reads the folder's contour table
    flame = decoder.flame
    np.testing.assert_array_equal(flame.contour_face_idx.numpy(), table["lmk_face_idx"])
    shape = torch.randn(8, 100, generator=torch.Generator().manual_seed(seed)) * 0.5
    expression = torch.randn(8, 50, generator=torch.Generator().manual_seed(seed + 7)) * 0.5
    pose = random_pose(8, seed)
    ours = decoder.landmarks(flame(shape, expression, pose))
    theirs = smplx_landmarks(folder, shape, expression, pose)[:, list(SMPLX_TO_IBUG68)]
    assert (yaw_degrees(pose).abs() > 39).any()
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_equals_smplx_default_head(default_model_folder):
    decoder = Decoder()
    flame = decoder.flame
    assert flame.is_embedded_default
    shape = torch.randn(6, 100, generator=torch.Generator().manual_seed(3))
    expression = torch.randn(6, 50, generator=torch.Generator().manual_seed(4))
    pose = random_pose(6, 5)
    ours = decoder.landmarks(flame(shape, expression, pose))
    theirs = smplx_landmarks(default_model_folder, shape, expression, pose)[:, list(SMPLX_TO_IBUG68)]
    assert (ours - theirs).abs().max() < 1e-5


def test_side_turning_away_stays_on_silhouette():
    """Turn the default head by +-30 deg: the contour on the side turning away is on the outline.

    Positive FLAME yaw turns the face towards -x, so the subject's right half (iBUG 1..8, at
    -x) turns away. With the wrong sign the points would be read from the mirrored bin and
    lie well inside the face (tens of mm away).
    """
    decoder = Decoder(FLAME(dtype=torch.float64))
    flame64 = decoder.flame
    for yaw, away in ((30, slice(0, 8)), (-30, slice(9, 17))):
        pose = torch.zeros(1, 15, dtype=torch.float64)
        pose[0, 1] = np.radians(-yaw)  # FLAME yaw = minus the angle about +y
        output = flame64(pose=pose)
        vertices = output.vertices
        points = decoder.landmarks(output)[0, :17].numpy()
        rotated = vertices[0].numpy()
        segments = silhouette_segments_2d(rotated, flame64.faces.numpy())
        distance = distance_to_segments(points[away, :2], segments)
        assert distance.max() < 0.002, distance
        # The same vertices with the contour row of the opposite yaw (the mirrored bin).
        mirrored = output._replace(rotations=flame64(pose=-pose).rotations)
        wrong = decoder.landmarks(mirrored)[0, away].numpy()
        assert distance_to_segments(wrong[:, :2], segments).max() > 0.005


def _foreground_centre_column(covered: torch.Tensor) -> float:
    """Mean column (pixel centre, u) of the pixels a head covers, ``S x S`` bool."""
    columns = torch.nonzero(covered)[:, 1].double() + 0.5
    return float(columns.mean())


def test_plus_30_degrees_turns_the_face_to_image_left_everywhere():
    """One sign everywhere: the default head turned to +30 deg with head_rotation(30).

    Read back as +30 by yaw_degrees, picks contour row 30, is contour.yaw_rotation(30), is what
    the synthetic generator builds from a drawn yaw, and in a render the nose tip (iBUG 31)
    lands LEFT of the head's centre (positive yaw turns the face towards -x, image left; camera.py
    maps +x to image right). -30 deg is the mirror image: row 69, nose right of centre.
    """
    from ringnet_lib.data.synthetic import render_grey_heads

    decoder = Decoder()
    flame = decoder.flame
    size = 128
    for yaw, row, side in ((30.0, 30, -1.0), (-30.0, 69, +1.0)):
        params = torch.zeros(1, N_PARAMS)
        params[0, 0] = 5.0  # s: the whole head (crown to neck stump, ~0.3 m) fits in the crop
        params[0, POSE.start:POSE.start + 3] = torch.tensor(head_rotation(yaw)[0], dtype=torch.float32)
        out = decoder(params)
        pose = out.pose
        assert torch.allclose(pose[:, joint_pose(GLOBAL)], params[:, POSE][:, :3])
        assert (pose[:, joint_pose(JAW).stop:] == 0).all() and (pose[:, 3:6] == 0).all()
        # yaw_degrees reads +30 back, and the table row is row 30 (bin_of_yaw).
        assert yaw_degrees(pose).item() == pytest.approx(yaw, abs=1e-4)
        assert bin_of_yaw(yaw_degrees(pose)).item() == row and yaw_of_bin(row) == yaw
        # The decoder's contour IS row 30 of the model's table, on the posed vertices.
        contour = barycentric_landmarks(out.vertices, flame.faces, flame.contour_face_idx[row],
                                        flame.contour_bary_coords[row])
        assert torch.allclose(out.landmarks3d[:, CONTOUR_IN_68], contour, atol=1e-7)
        other = barycentric_landmarks(out.vertices, flame.faces, flame.contour_face_idx[bin_of_yaw(
            torch.tensor([-yaw]))], flame.contour_bary_coords[bin_of_yaw(torch.tensor([-yaw]))])
        assert (out.landmarks3d[:, CONTOUR_IN_68] - other).abs().max() > 0.005  # the rows differ
        # contour.yaw_rotation(30) is the rotation of that pose (and the one FLAME computed).
        matrix = batch_rodrigues(pose[:, joint_pose(GLOBAL)].double())[0].numpy()
        np.testing.assert_allclose(yaw_rotation(yaw), matrix, atol=1e-7)
        flame_rotation = flame(pose=pose).rotations[0, GLOBAL].double().numpy()
        np.testing.assert_allclose(yaw_rotation(yaw), flame_rotation, atol=1e-6)
        assert np.sign(yaw_rotation(yaw) @ [0.0, 0.0, 1.0])[0] == side  # the face direction's x
        # A render: the nose tip lands on the head, on the image side the yaw says.
        camera = params[:, :3]
        image = render_grey_heads(out.vertices, flame.faces, camera, size)[0]
        covered = image.sum(dim=0) > 0  # black background, grey head (ambient light > 0)
        nose = normalized_to_pixels(out.landmarks2d, size)[0, NOSE_TIP]
        assert torch.allclose(out.landmarks3d[:, NOSE_TIP], flame(pose=pose).static_landmarks[:, NOSE_TIP - 17])
        assert covered[int(nose[1]), int(nose[0])]
        head_centre = _foreground_centre_column(covered)
        root = normalized_to_pixels(decoder.project(flame(pose=pose).joints[:, :1], camera), size)[0, 0]
        assert side * (nose[0].item() - head_centre) > 0.05 * size, (yaw, nose, head_centre)
        assert side * (nose[0].item() - root[0].item()) > 0.05 * size, (yaw, nose, root)


def test_synthetic_generator_uses_the_same_sign():
    """Synthesizer.image_parameters turns the head with head_rotation: a drawn yaw y reads back as y,
    and the nose tip in its render sits left of the head's centre for y > 0, right for y < 0."""
    from ringnet_lib.data.synthesize import SynthConfig, Synthesizer

    config = SynthConfig(identities=2, per_identity=8, size=96, yaw_deg=40.0, pitch_deg=0.0, roll_deg=0.0,
                         centre_jitter=0.0, batch=8)
    synthesizer = Synthesizer(config, Decoder())
    pairs = [(0, k) for k in range(config.per_identity)]
    drawn = []
    for i, k in pairs:
        parameters = synthesizer.image_parameters(i, k)
        # Image k of identity i draws from default_rng([seed, i, k + 1]); its first draw is the yaw.
        yaw = np.random.default_rng([config.seed, i, k + 1]).uniform(-config.yaw_deg, config.yaw_deg, 1)[0]
        pose = torch.tensor(parameters["pose"])[None]
        assert yaw_degrees(pose).item() == pytest.approx(yaw, abs=1e-6)
        np.testing.assert_allclose(parameters["pose"][joint_pose(GLOBAL)], head_rotation(yaw)[0], atol=1e-12)
        drawn.append(yaw)
    drawn = np.array(drawn)
    assert (drawn > 20).any() and (drawn < -20).any()  # both directions are exercised
    batch = synthesizer.render_batch(pairs)
    np.testing.assert_allclose(yaw_degrees(batch.pose).numpy(), drawn, atol=1e-3)
    for b, yaw in enumerate(drawn):
        if abs(yaw) < 10:
            continue
        covered = batch.fragments.face_index[b] >= 0
        nose_u = batch.landmarks[b, NOSE_TIP, 0].item()
        centre = _foreground_centre_column(covered)
        assert -np.sign(yaw) * (nose_u - centre) > 0, (yaw, nose_u, centre)


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
    assert flame.contour_face_idx is None and flame.landmark_face_idx is not None
    with pytest.raises(ModelFileError):
        Decoder(flame)
    with pytest.raises(ModelFileError, match=DYNAMIC_EMBEDDING_NAME):
        Decoder(random_model_folders["chumpy"])
