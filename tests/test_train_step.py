"""The 6-branch step: one encoder call on B·R images equals R separate branches with shared weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib import losses, testing
from ringnet_lib.camera import project_weak_perspective
from ringnet_lib.decoder import Decoder
from ringnet_lib.encoder import RingNetEncoder
from ringnet_lib.flame import FLAME
from ringnet_lib.model_io import DYNAMIC_EMBEDDING_NAME, ModelFileError
from ringnet_lib.params import SHAPE, full_pose_from_ringnet_pose, split_params
from ringnet_lib.training.step import ring_step


@pytest.fixture(scope="module")
def small_flame():
    """A random model with its static landmarks and no contour table."""
    model = testing.random_flame_model(n_vertices=300, seed=5, landmarks=False)
    return FLAME(model, static_embedding=testing.random_static_embedding(len(model.faces), seed=5))


@pytest.fixture(scope="module")
def decoder51(small_flame):
    """FLAME's 51 static landmarks of the random model."""
    return Decoder(small_flame, landmarks68=False)


@pytest.fixture(scope="module")
def decoder68(small_flame):
    """The 68 landmarks of the random model, through its random contour table."""
    flame = FLAME(testing.random_flame_model(n_vertices=300, seed=5))  # static (seed 5) and contour table
    assert torch.equal(flame.landmark_face_idx, small_flame.landmark_face_idx)  # the same model as small_flame
    return Decoder(flame)


def make_batch(flame, n_rings, ring, size=32, seed=0):
    """Random images; landmarks = FLAME landmarks of random parameters through a camera (no rendering)."""
    generator = torch.Generator().manual_seed(seed)
    count = n_rings * ring
    shape = torch.randn(count, 100, generator=generator)
    pose = 0.2 * torch.randn(count, 6, generator=generator)
    output = flame(shape=shape, pose=full_pose_from_ringnet_pose(pose))
    camera = torch.tensor([[5.0, 0.0, 0.0]]).expand(count, -1)
    target = torch.zeros(count, 68, 2)
    target[:, 17:] = project_weak_perspective(output.static_landmarks, camera)
    confidence = torch.zeros(count, 68)
    confidence[:, 17:] = torch.rand(count, 51, generator=generator)
    return {"images": torch.rand(n_rings, ring, 3, size, size, generator=generator),
            "landmarks": target.view(n_rings, ring, 68, 2), "confidence": confidence.view(n_rings, ring, 68),
            "identity": losses.default_ring_identity(n_rings, ring)}


def make_encoder(decoder, seed=0):
    torch.manual_seed(seed)
    return RingNetEncoder(trunk="resnet18", initial_params=decoder.initial_params())


@pytest.mark.parametrize("ring", [2, 3, 6])
def test_one_call_equals_separate_branches(small_flame, decoder51, ring):
    decoder = decoder51
    encoder = make_encoder(decoder).eval()  # eval: BatchNorm uses running statistics, per image
    batch = make_batch(small_flame, n_rings=2, ring=ring)
    prediction = ring_step(encoder, decoder, batch)
    # R branches: each position of the ring through the encoder on its own, then the paper's formulas.
    branches = torch.stack([encoder(batch["images"][:, r]).params for r in range(ring)], dim=1)  # B x R x 159
    max_diff = (prediction.params - branches).abs().max().item()
    assert max_diff < 1e-4, max_diff
    camera, pose, shape, expression = split_params(branches)
    projected = torch.stack([project_weak_perspective(small_flame(
        shape=shape[:, r], expression=expression[:, r], pose=full_pose_from_ringnet_pose(pose[:, r])).static_landmarks,
        camera[:, r]) for r in range(ring)], dim=1)
    expected = (losses.ring_loss(shape)
                + 60 * losses.landmark_loss(projected, batch["landmarks"][:, :, 17:], batch["confidence"][:, :, 17:])
                + 1e-4 * losses.squared_norm(shape) + 1e-4 * losses.squared_norm(expression))
    torch.testing.assert_close(prediction.total, expected, rtol=1e-4, atol=1e-4)


def test_only_the_encoder_gets_gradients(small_flame, decoder68):
    decoder = decoder68
    encoder = make_encoder(decoder).train()
    prediction = ring_step(encoder, decoder, make_batch(small_flame, 2, 3))
    prediction.total.backward()
    assert list(decoder.flame.parameters()) == [] and list(decoder.parameters()) == []
    assert all(not b.requires_grad and b.grad is None for b in decoder.buffers())
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_one_encoder_call_per_step(small_flame, decoder68):
    decoder = decoder68
    encoder = make_encoder(decoder).eval()
    calls = []
    encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    ring_step(encoder, decoder, make_batch(small_flame, 3, 4))
    assert calls == [12]  # B·R images in one call


@pytest.mark.parametrize("mode", ["swap", "mean", "none"])
def test_consistency_ablations(small_flame, decoder68, mode):
    decoder = decoder68
    encoder = make_encoder(decoder).eval()
    batch = make_batch(small_flame, 2, 4)
    prediction = ring_step(encoder, decoder, batch, consistency=mode)
    assert torch.isfinite(prediction.total)
    if mode == "none":
        assert prediction.terms["consistency"].item() == 0.0
    if mode == "swap":  # the landmark loss of the swapped decoding (random net: > 0)
        assert prediction.terms["consistency"].item() > 0
    with pytest.raises(ValueError, match="consistency"):
        ring_step(encoder, decoder, batch, consistency="triplet")


def test_mean_mode_decodes_one_shape_per_identity(small_flame, decoder51):
    decoder = decoder51
    encoder = make_encoder(decoder).eval()
    batch = make_batch(small_flame, 1, 3)
    mean = ring_step(encoder, decoder, batch, consistency="mean")
    own = ring_step(encoder, decoder, batch, consistency="none")
    # same parameters, different decoded shapes for the two same-identity images only
    torch.testing.assert_close(mean.params, own.params)
    torch.testing.assert_close(mean.landmarks2d[:, -1], own.landmarks2d[:, -1])
    assert (mean.landmarks2d[:, :2] - own.landmarks2d[:, :2]).abs().max() > 0
    shape = mean.params[0, :2, SHAPE].mean(0, keepdim=True)
    camera, pose, _, expression = split_params(mean.params[0, :1])
    expected = project_weak_perspective(small_flame(shape=shape, expression=expression,
                                                    pose=full_pose_from_ringnet_pose(pose)).static_landmarks, camera)
    torch.testing.assert_close(mean.landmarks2d[0, :1], expected, rtol=1e-5, atol=1e-5)


def test_decoder_without_contour_table_says_what_to_do(small_flame, tmp_path):
    with pytest.raises(ModelFileError, match=f"contour table \\({DYNAMIC_EMBEDDING_NAME}\\)") as error:
        Decoder(small_flame)  # an in-memory model without a table
    assert "landmarks68=False" in str(error.value) and "ringnet_lib.contour" in str(error.value)
    folder = testing.write_random_flame_folder(tmp_path / "flame", n_vertices=200, seed=2)
    (folder / DYNAMIC_EMBEDDING_NAME).unlink()
    with pytest.raises(ModelFileError, match="landmarks68=False") as error:
        Decoder(FLAME(folder))
    assert str(folder) in str(error.value) and DYNAMIC_EMBEDDING_NAME in str(error.value)


def test_decoder_static_51_are_flames(small_flame, decoder51):
    decoder = decoder51
    pose15 = full_pose_from_ringnet_pose(0.2 * torch.randn(4, 6, generator=torch.Generator().manual_seed(1)))
    output = small_flame(shape=torch.randn(4, 100), pose=pose15)
    points = decoder.landmarks(output)
    assert points.shape == (4, 51, 3)
    torch.testing.assert_close(points, output.static_landmarks, rtol=0, atol=0)
    assert decoder.target_index.tolist() == list(range(17, 68))  # iBUG 18..68


def test_decoder_reads_the_table_beside_the_model(tmp_path):
    folder = testing.write_random_flame_folder(tmp_path / "flame", n_vertices=200, seed=2)
    flame = FLAME(folder)
    decoder = Decoder(folder)
    pose15 = full_pose_from_ringnet_pose(0.3 * torch.randn(3, 6, generator=torch.Generator().manual_seed(2)))
    output = flame(shape=torch.randn(3, 100), pose=pose15)
    points = decoder.landmarks(output)
    assert points.shape == (3, 68, 3) and decoder.target_index.tolist() == list(range(68))
    torch.testing.assert_close(points[:, 17:], output.static_landmarks, rtol=0, atol=0)
    table = testing.random_dynamic_embedding(len(flame.faces), seed=2)
    np.testing.assert_array_equal(decoder.flame.contour_face_idx.numpy(), table["lmk_face_idx"])


def test_true_shape_diagnostic_term(small_flame, decoder51):
    """Weight 0 (default): RingNet's losses only. Weight w: + w·mean((β − β_true)²), and it needs the true β."""
    decoder = decoder51
    encoder = make_encoder(decoder).eval()
    batch = make_batch(small_flame, 2, 3)
    paper = ring_step(encoder, decoder, batch)
    assert "true_shape_mse" not in paper.terms
    with pytest.raises(ValueError, match="w_true_shape_mse"):
        ring_step(encoder, decoder, batch, weights=losses.LossWeights(true_shape_mse=2.0))
    batch["true_shape"] = torch.randn(2, 3, 100, generator=torch.Generator().manual_seed(3))
    prediction = ring_step(encoder, decoder, batch, weights=losses.LossWeights(true_shape_mse=2.0))
    expected = ((paper.params[..., SHAPE] - batch["true_shape"]) ** 2).mean()
    torch.testing.assert_close(prediction.terms["true_shape_mse"], expected)
    torch.testing.assert_close(prediction.total, paper.total + 2.0 * expected)
