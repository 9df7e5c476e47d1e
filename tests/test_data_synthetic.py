"""Synthetic ground truth agrees with the pictures; the generator is deterministic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ringnet_lib.camera import normalized_to_pixels, project_weak_perspective
from ringnet_lib.data import render
from ringnet_lib.data.augment import flip_landmarks
from ringnet_lib.data.dataset import FaceDataset, read_metadata
from ringnet_lib.data.synthesize import SynthConfig, Synthesizer, synthesize_dataset


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    torch.manual_seed(0)
    return Synthesizer(SynthConfig(size=224, seed=0))


def test_projected_vertices_land_on_the_rendered_pixels(synth):
    """Where the renderer draws a mesh vertex agrees with camera.py's projection to within 1 px at 224.

    The vertex is drawn as a small marker triangle centred on it (in 3D, in front of the
    face); the centroid of the pixels the renderer covers is compared with
    ``normalized_to_pixels(project_weak_perspective(vertex, camera))``.
    """
    size = 224
    batch = synth.render_batch([(0, 0), (1, 3)])
    errors = []
    for b in range(2):
        vertices, camera = batch.vertices[b], batch.camera[b:b + 1]
        projected = normalized_to_pixels(project_weak_perspective(vertices[None], camera), size)[0]
        inside = ((projected > 10) & (projected < size - 10)).all(dim=1)
        chosen = torch.nonzero(inside).squeeze(1)[torch.randperm(int(inside.sum()))[:12]]
        radius = 4.0 / (camera[0, 0] * size / 2)  # 4 px, in metres
        angles = torch.tensor([0.0, 2.0944, 4.1888])
        offsets = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles), torch.full((3,), 0.01)], 1)
        markers = vertices[chosen][:, None] + offsets  # 12 x 3 x 3: one triangle per vertex, 1 cm in front
        screen = render.project_to_pixels(markers, camera.expand(len(chosen), -1), size)
        fragments = render.rasterize(screen, torch.tensor([[0, 1, 2]]), size)
        for k in range(len(chosen)):
            rows, cols = torch.nonzero(fragments.face_index[k] == 0, as_tuple=True)
            drawn = torch.stack([cols, rows], 1).double().mean(0) + 0.5  # centroid of covered pixel centres
            errors.append((drawn - projected[chosen[k]].double()).norm())
    errors = torch.stack(errors)
    assert errors.max() <= 1.0, errors


def test_stored_landmarks_are_the_projection_of_the_ground_truth(synth, tmp_path):
    config = SynthConfig(identities=2, per_identity=3, size=64, seed=4, image_format="png")
    synthesize_dataset(config, tmp_path, decoder=synth.decoder, progress=False)
    meta = read_metadata(tmp_path)
    shape, expression, pose, camera = (torch.as_tensor(meta[k]) for k in ("shape", "expression", "pose", "camera"))
    flame = synth.decoder.flame
    with torch.no_grad():
        points = synth.decoder.landmarks(flame(shape=shape, expression=expression, pose=pose))
    pixels = normalized_to_pixels(project_weak_perspective(points, camera), 64)
    np.testing.assert_allclose(meta["landmarks"], pixels.numpy(), atol=1e-4)
    # β is shared within an identity and differs between identities; neutral meshes match β.
    assert (meta["shape"][:3] == meta["shape"][0]).all() and not np.allclose(meta["shape"][0], meta["shape"][3])
    with torch.no_grad():
        neutral = flame(shape=shape[[0, 3]]).vertices.numpy()
    np.testing.assert_allclose(meta["neutral_vertices"], neutral, atol=1e-6)
    dataset = FaceDataset(tmp_path)
    assert dataset[0]["image"].shape == (3, 64, 64) and len(dataset) == 6


def test_generator_is_deterministic_whatever_the_batch(synth):
    alone = synth.render_batch([(3, 2)])
    together = synth.render_batch([(0, 0), (3, 2)])
    # Why alone and together are not bitwise equal: FLAME's offsets are ONE float32 product
    # (B x 186 coefficients) @ (186 x 3V blend shapes) (lbs.blend_shapes). For B = 1 the BLAS (MKL here)
    # computes it as a matrix-vector product, for B >= 2 as a matrix-matrix product whose kernel sums
    # each coordinate's 186 terms in another order: the vertices differ by 1-2 float32 ulps (<= 3e-8 m).
    # The renderer amplifies that rounding (edge vectors of mm-sized triangles are differences of
    # 0.1 m coordinates; barycentrics divide by small screen areas; normals normalise short cross
    # products): up to ~1e-5 in a few pixels. Measured: forcing the B = 1 product through the
    # matrix-matrix kernel makes alone and together bitwise equal; so every batch of 2 or more
    # images, whatever the others and the position, must give the SAME bits (checked below).
    torch.testing.assert_close(alone.images[0], together.images[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.landmarks[0], together.landmarks[1])
    again = synth.render_batch([(3, 2)])
    assert torch.equal(alone.images, again.images)
    for pairs, row in (([(3, 2), (3, 2)], 0), ([(5, 1), (0, 4), (3, 2)], 2)):
        other = synth.render_batch(pairs)
        for key in ("images", "landmarks", "confidence", "vertices", "camera"):
            assert torch.equal(getattr(other, key)[row], getattr(together, key)[1]), (pairs, key)


def test_pose_draws_cover_the_documented_ranges(synth):
    yaw = []
    for k in range(300):
        rotvec = synth.image_parameters(0, k)["pose"][:3]
        yaw.append(Rotation.from_rotvec(rotvec).as_euler("YXZ", degrees=True)[0])
    assert min(yaw) < -40 and max(yaw) > 40


def test_flipped_landmarks_match_the_mirrored_head(synth):
    """The default head is left-right symmetric: flip(landmarks at yaw +a) = landmarks at yaw -a."""
    pose = torch.zeros(2, 15)
    pose[0, :3] = torch.tensor(Rotation.from_euler("Y", 25, degrees=True).as_rotvec())
    pose[1, :3] = torch.tensor(Rotation.from_euler("Y", -25, degrees=True).as_rotvec())
    with torch.no_grad():
        points = synth.decoder.landmarks(synth.decoder.flame(pose=pose))
    camera = torch.tensor([[6.0, 0.0, 0.02], [6.0, 0.0, 0.02]])
    projected = project_weak_perspective(points, camera)
    mirrored = flip_landmarks(projected[0])
    error_px = (normalized_to_pixels(mirrored, 224) - normalized_to_pixels(projected[1], 224)).norm(dim=-1)
    assert error_px.max() < 1.5, error_px


def test_synthetic_rings_carry_parameters_and_render_on_demand(synth):
    from ringnet_lib.data.sampler import collate_rings
    from ringnet_lib.data.synthetic import SyntheticRingSet
    rings = SyntheticRingSet(n_identities=5, images_per_identity=4, ring_size=4, image_size=32, seed=2)
    assert rings.n_images == 20 and len(rings) == rings.rings_per_epoch == 5
    item = rings[(3, 1)]
    assert "images" not in item  # the loader carries parameters only
    assert set(item) == {"identity", "image_index", "true_shape", "true_expression", "true_pose", "camera_jitter"}
    assert item["true_pose"].shape == (4, 6) and item["true_shape"].shape == (4, 100)
    assert (item["identity"][:3] == item["identity"][0]).all() and item["identity"][3] != item["identity"][0]
    torch.testing.assert_close(item["identity"], item["image_index"] // 4, rtol=0, atol=0)  # pool order
    # A ring depends on its index only: not on the epoch, the order of reading, or another instance.
    again = SyntheticRingSet(n_identities=5, images_per_identity=4, ring_size=4, image_size=32, seed=2)
    for key in [(0, 1), 1, (7, 1)]:
        for name, value in again[key].items():
            torch.testing.assert_close(value, item[name], rtol=0, atol=0)
    # render adds what training reads, with the batch's leading shape; the targets are the decoder's projection.
    batch = rings.render(collate_rings([rings[(0, i)] for i in range(3)]), synth.decoder)
    assert batch["images"].shape == (3, 4, 3, 32, 32) and batch["landmarks"].shape == (3, 4, 68, 2)
    assert batch["confidence"].shape == (3, 4, 68) and batch["true_camera"].shape == (3, 4, 3)
    assert batch["images"].std() > 0.05  # heads, not black frames
    flat = rings.render_images(batch["image_index"].flatten(), synth.decoder)
    with torch.no_grad():
        projected = synth.decoder(flat["true_params"]).landmarks2d
    torch.testing.assert_close(projected, flat["landmarks"][:, synth.decoder.target_index], rtol=0, atol=1e-5)
    # The same images rendered in another batch (see the float32 note of the test above).
    torch.testing.assert_close(flat["images"].view(3, 4, 3, 32, 32), batch["images"], rtol=0, atol=1e-5)
    torch.testing.assert_close(flat["landmarks"].view(3, 4, 68, 2), batch["landmarks"])
    with pytest.raises(ValueError, match="images_per_identity"):
        SyntheticRingSet(n_identities=5, images_per_identity=2, ring_size=4)
    with pytest.raises(ValueError, match="n_rings"):
        SyntheticRingSet(n_identities=None, images_per_identity=4, ring_size=4)
    fresh = SyntheticRingSet(n_identities=None, images_per_identity=4, ring_size=4, image_size=32, n_rings=3, seed=2)
    assert fresh.n_images == 0 and len(fresh) == 3
    ring = fresh[2]
    assert ring["identity"].tolist() == [0, 0, 0, 1]
    assert torch.equal(ring["true_shape"][0], ring["true_shape"][2])
    assert not torch.equal(ring["true_shape"][0], ring["true_shape"][3])
