"""Dataset format, the Dataset, bad input, and the photo-folder tool with a fake detector (no dlib)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ringnet_lib.data import photos
from ringnet_lib.testing import fake_face_detector
from ringnet_lib.data.augment import IBUG68_FLIP
from ringnet_lib.data.dataset import DatasetFormatError, FaceDataset, read_metadata, write_metadata
from ringnet_lib.data.rings import FolderRingSet
from ringnet_lib.data.sampler import collate_rings, ring_loader

SIZE = 32


def make_dataset(root, n_identities=3, per_identity=4, **overrides):
    """A tiny dataset of random square images whose pixel at each landmark encodes the landmark."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    n = n_identities * per_identity
    names = [f"images/{i}.png" for i in range(n)]
    landmarks = rng.uniform(0, SIZE, size=(n, 68, 2)).astype(np.float32)
    for name in names:
        Image.fromarray(rng.integers(0, 255, size=(SIZE, SIZE, 3), dtype=np.uint8)).save(root / name)
    fields = dict(image=names, identity=np.repeat(np.arange(n_identities), per_identity),
                  identity_name=[f"person{i}" for i in range(n_identities)], landmarks=landmarks,
                  confidence=rng.uniform(0, 1, size=(n, 68)), shape=rng.normal(size=(n, 100)))
    fields.update(overrides)
    write_metadata(root, **fields)
    return fields


def test_round_trip_and_normalised_landmarks(tmp_path):
    fields = make_dataset(tmp_path)
    dataset = FaceDataset(tmp_path)
    item = dataset[5]
    assert item["image"].shape == (3, SIZE, SIZE) and 0 <= item["image"].min() and item["image"].max() <= 1
    u, v = fields["landmarks"][5].T  # pixels, +v down -> normalised, +y up
    expected = np.stack([2 * u / SIZE - 1, 1 - 2 * v / SIZE], axis=1)
    np.testing.assert_allclose(item["landmarks"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(item["true_shape"].numpy(), fields["shape"][5], rtol=1e-6)
    assert "shape" not in item  # ground truth only under true_* names, never mistaken for a prediction
    # Resizing changes pixels, not normalised landmarks.
    resized = FaceDataset(tmp_path, image_size=16)[5]
    assert resized["image"].shape == (3, 16, 16)
    torch.testing.assert_close(resized["landmarks"], item["landmarks"])


def test_ring_batches_have_the_documented_layout(tmp_path):
    make_dataset(tmp_path)
    rings = FolderRingSet(FaceDataset(tmp_path), ring_size=4, seed=0)
    batch = next(iter(ring_loader(rings, batch_size=2, seed=0)))
    assert batch["images"].shape == (2, 4, 3, SIZE, SIZE)
    assert batch["landmarks"].shape == (2, 4, 68, 2) and batch["confidence"].shape == (2, 4, 68)
    assert batch["identity"].shape == (2, 4) and batch["true_shape"].shape == (2, 4, 100)
    assert (batch["identity"][:, :3] == batch["identity"][:, :1]).all()
    assert (batch["identity"][:, 3] != batch["identity"][:, 0]).all()


def test_one_collate_for_loader_and_training_rings(tmp_path):
    from ringnet_lib.training import data as training_data
    from ringnet_lib.training.config import TrainConfig
    make_dataset(tmp_path)
    faces = FaceDataset(tmp_path)
    config = TrainConfig(data=str(tmp_path), ring_size=4, batch_size=2, image_size=SIZE)
    rings = training_data.make_rings(config)
    assert isinstance(rings, FolderRingSet)
    # The training loop's loader collates with the same function.
    assert training_data.make_loader(config, rings).collate_fn is collate_rings
    item = rings[(0, 0)]
    assert item["images"].shape == (4, 3, SIZE, SIZE) and "image" not in item
    from_items = collate_rings([dict(rings[(0, 0)], name="dropped"), rings[(0, 1)]])  # non-tensor entries are dropped
    epoch_rings = rings.builder.epoch_rings(0)
    from_faces = collate_rings([faces.ring(epoch_rings[0]), faces.ring(epoch_rings[1])])  # FaceDataset rings
    assert set(from_items) == set(from_faces) and {"images", "landmarks", "identity"} <= set(from_faces)
    assert from_faces["images"].shape == (2, 4, 3, SIZE, SIZE)
    for key, value in from_faces.items():
        torch.testing.assert_close(from_items[key], value, rtol=0, atol=0)


def test_flips_are_deterministic_per_key_and_vary_between_keys(tmp_path):
    make_dataset(tmp_path)
    faces = FaceDataset(tmp_path)
    rings = FolderRingSet(faces, ring_size=4, seed=3, flip_probability=0.5)
    again = FolderRingSet(FaceDataset(tmp_path), ring_size=4, seed=3, flip_probability=0.5)
    keys = [(epoch, ring) for epoch in range(3) for ring in range(rings.rings_per_epoch)]
    flips = {key: rings[key]["flipped"] for key in keys}
    for key in reversed(keys):  # another instance, another order: the same flips and images
        item = again[key]
        assert torch.equal(item["flipped"], flips[key]), key
        torch.testing.assert_close(item["images"], rings[key]["images"], rtol=0, atol=0)
    every = torch.cat(list(flips.values()))
    assert 0 < int(every.sum()) < len(every)  # p = 0.5: both flipped and unflipped images occur
    other_seed = FolderRingSet(faces, ring_size=4, seed=4, flip_probability=0.5)
    assert any(not torch.equal(other_seed[key]["flipped"], flips[key]) for key in keys)
    never = FolderRingSet(faces, ring_size=4, seed=3, flip_probability=0.0)
    assert not any(never[key]["flipped"].any() for key in keys)


def test_flips_do_not_depend_on_the_number_of_workers(tmp_path):
    make_dataset(tmp_path)
    rings = FolderRingSet(FaceDataset(tmp_path), ring_size=4, seed=5, flip_probability=0.5)
    batches = {workers: list(ring_loader(rings, batch_size=2, seed=1, workers=workers, total_steps=6))
               for workers in (0, 2)}
    assert len(batches[0]) == len(batches[2]) == 6
    assert 0 < sum(int(b["flipped"].sum()) for b in batches[0]) < sum(b["flipped"].numel() for b in batches[0])
    for serial, parallel in zip(batches[0], batches[2]):
        assert serial.keys() == parallel.keys()
        for key in serial:
            torch.testing.assert_close(parallel[key], serial[key], rtol=0, atol=0)


def test_flipped_items_mirror_pixels_and_landmarks(tmp_path):
    fields = make_dataset(tmp_path, camera=np.random.default_rng(3).normal(size=(12, 3)),
                          pose=np.random.default_rng(4).normal(size=(12, 15)))
    faces = FaceDataset(tmp_path)
    rings = FolderRingSet(faces, ring_size=4, seed=0, flip_probability=0.5)
    checked = 0
    for ring in range(rings.rings_per_epoch):
        item = rings[(0, ring)]
        for r in range(4):
            index = int(item["index"][r])
            plain = faces.item(index)
            if not item["flipped"][r]:
                torch.testing.assert_close(item["images"][r], plain["image"], rtol=0, atol=0)
                torch.testing.assert_close(item["landmarks"][r], plain["landmarks"], rtol=0, atol=0)
                continue
            checked += 1
            image, landmarks, confidence = item["images"][r], item["landmarks"][r], item["confidence"][r]
            torch.testing.assert_close(image, plain["image"].flip(-1), rtol=0, atol=0)
            # Point k of the flipped face is point IBUG68_FLIP[k] of the original, x mirrored.
            for k in range(68):
                source = IBUG68_FLIP[k]
                expected = plain["landmarks"][source] * torch.tensor([-1.0, 1.0])
                torch.testing.assert_close(landmarks[k], expected, rtol=0, atol=0)
                assert confidence[k] == plain["confidence"][source]
                # ...and it sits on the same picture content: the pixel under it is the one under the original.
                u, v = (landmarks[k, 0] + 1) * SIZE / 2, (1 - landmarks[k, 1]) * SIZE / 2
                u0, v0 = fields["landmarks"][index, source]
                torch.testing.assert_close(image[:, int(v), int(u)], plain["image"][:, int(v0), int(u0)])
            # Ground truth is that of the unflipped image.
            for key in ("true_shape", "true_pose", "true_camera"):
                torch.testing.assert_close(item[key][r], plain[key], rtol=0, atol=0)
    assert checked > 0


def test_mean_camera_is_the_ground_truth_average(tmp_path):
    camera = np.random.default_rng(5).normal(size=(12, 3))
    make_dataset(tmp_path / "with", camera=camera)
    np.testing.assert_allclose(FaceDataset(tmp_path / "with").mean_camera.numpy(), camera.mean(0), rtol=1e-6)
    make_dataset(tmp_path / "without")
    assert FaceDataset(tmp_path / "without").mean_camera is None


def test_wrong_landmark_shape_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"'landmarks' must have shape \(12, 68, 2\)"):
        make_dataset(tmp_path, landmarks=np.zeros((12, 51, 2)))


def test_nan_confidence_names_the_file(tmp_path):
    confidence = np.ones((12, 68))
    confidence[7, 3] = np.nan
    with pytest.raises(DatasetFormatError, match=r"'confidence' has NaN.*images/7.png"):
        make_dataset(tmp_path, confidence=confidence)


def test_missing_image_is_counted_and_named(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "images/4.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 item.*images/4.png"):
        dataset = FaceDataset(tmp_path)
    assert len(dataset) == 11 and dataset.skipped[0][0].endswith("images/4.png")
    with pytest.raises(DatasetFormatError, match="1 image file"):
        FaceDataset(tmp_path, missing="raise")


def test_corrupt_image_names_the_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "images/2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError, match=r"images/2.png: not an image that can be read"):
        FaceDataset(tmp_path)[2]


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="metadata.npz: no such file"):
        read_metadata(tmp_path)


def test_photo_folder_tool_crops_counts_and_names(tmp_path):
    source = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for person, n in (("ann", 3), ("ben", 2), ("cy", 1)):
        (source / person).mkdir(parents=True)
        for k in range(n):
            photo = rng.integers(1, 255, size=(60, 80, 3), dtype=np.uint8)
            Image.fromarray(photo).save(source / person / f"{k}.png")
    (source / "ann" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(source / "ben" / "black.png")
    out = tmp_path / "dataset"
    report = photos.build_from_photos(source, out, size=48, detector=fake_face_detector, progress=False)
    assert report.written == 6
    skipped = dict(report.skipped)
    assert set(skipped) == {str(source / "ann" / "broken.jpg"), str(source / "ben" / "black.png")}
    assert "not an image that can be read" in skipped[str(source / "ann" / "broken.jpg")]
    assert report.single_image_identities == ["cy"]
    assert "broken.jpg" in report.summary()
    dataset = FaceDataset(out)
    assert list(dataset.identity_names) == ["ann", "ben", "cy"] and len(dataset) == 6
    # Loose, centred crop: the ring of points spans CROP_FILL of the crop, centred.
    points = read_metadata(out)["landmarks"][0]
    np.testing.assert_allclose(np.ptp(points, axis=0).max() / 48, photos.CROP_FILL, rtol=1e-6)
    np.testing.assert_allclose((points.min(0) + points.max(0)) / 2, [24, 24], atol=1e-6)


def test_crop_moves_pixels_and_landmarks_together():
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 255, size=(120, 100, 3), dtype=np.uint8)
    landmarks = rng.uniform(30, 70, size=(68, 2))
    marker = np.array([20.5, 40.5])  # a pixel centre inside the crop
    landmarks[0] = marker
    photo[40, 20] = [255, 0, 255]
    crop, moved, _ = photos.crop_face(photo, photos.Face((30.0, 30.0, 40.0, 40.0), landmarks), size=128)
    # The marker is magnified ~1.75x, so the crop's pixel at its new position is mostly magenta
    # (bilinear weight > 0.7); half a pixel of misalignment would bring green above 100.
    col, row = np.floor(moved[0]).astype(int)
    red, green, blue = crop[row, col].astype(int)
    assert red > 200 and blue > 200 and green < 80, crop[row, col]


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "someone").mkdir()
    with pytest.raises(DatasetFormatError, match="no photos found"):
        photos.build_from_photos(tmp_path, tmp_path / "out", detector=fake_face_detector, progress=False)
