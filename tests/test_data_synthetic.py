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
    synthesize_dataset(config, tmp_path, flame=synth.flame, progress=False)
    meta = read_metadata(tmp_path)
    shape, expression, pose, camera = (torch.as_tensor(meta[k]) for k in ("shape", "expression", "pose", "camera"))
    with torch.no_grad():
        vertices = synth.flame(shape=shape, expression=expression, pose=pose).vertices
        points = synth.landmarks68(vertices, pose)
    pixels = normalized_to_pixels(project_weak_perspective(points, camera), 64)
    np.testing.assert_allclose(meta["landmarks"], pixels.numpy(), atol=1e-4)
    # β is shared within an identity and differs between identities; neutral meshes match β.
    assert (meta["shape"][:3] == meta["shape"][0]).all() and not np.allclose(meta["shape"][0], meta["shape"][3])
    with torch.no_grad():
        neutral = synth.flame(shape=shape[[0, 3]]).vertices.numpy()
    np.testing.assert_allclose(meta["neutral_vertices"], neutral, atol=1e-6)
    dataset = FaceDataset(tmp_path)
    assert dataset[0]["image"].shape == (3, 64, 64) and len(dataset) == 6


def test_generator_is_deterministic_whatever_the_batch(synth):
    alone = synth.render_batch([(3, 2)])
    together = synth.render_batch([(0, 0), (3, 2)])
    torch.testing.assert_close(alone.images[0], together.images[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.landmarks[0], together.landmarks[1])
    again = synth.render_batch([(3, 2)])
    assert torch.equal(alone.images, again.images)


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
        vertices = synth.flame(pose=pose).vertices
        points = synth.landmarks68(vertices, pose)
    camera = torch.tensor([[6.0, 0.0, 0.02], [6.0, 0.0, 0.02]])
    projected = project_weak_perspective(points, camera)
    mirrored = flip_landmarks(projected[0])
    error_px = (normalized_to_pixels(mirrored, 224) - normalized_to_pixels(projected[1], 224)).norm(dim=-1)
    assert error_px.max() < 1.5, error_px
