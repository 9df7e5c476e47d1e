"""The encoder: trunk, ImageNet normalisation, iterative regression, initial estimate, weights files."""
from __future__ import annotations

import pytest
import torch

from ringnet_lib import encoder as enc
from ringnet_lib.camera import project_weak_perspective
from ringnet_lib.flame import FLAME
from ringnet_lib.params import CAMERA, N_PARAMS, full_pose_from_ringnet_pose, split_params


@pytest.fixture(scope="module")
def small_encoder():
    torch.manual_seed(0)
    return enc.RingNetEncoder(trunk="resnet18", dropout=0.0).eval()


def test_output_shapes_and_iterations(small_encoder):
    images = torch.rand(3, 3, 32, 32)
    out = small_encoder(images)
    assert out.params.shape == (3, N_PARAMS)
    assert out.estimates.shape == (3, 3, N_PARAMS)
    assert out.features.shape == (3, 512)
    torch.testing.assert_close(out.params, out.estimates[-1])


def test_iterative_error_feedback_is_what_the_docstring_says(small_encoder):
    images = torch.rand(2, 3, 32, 32)
    out = small_encoder(images)
    estimate = small_encoder.initial_params.expand(2, -1)
    with torch.no_grad():
        for k in range(3):  # estimate_{k+1} = estimate_k + MLP(features ⊕ estimate_k)
            estimate = estimate + small_encoder.regressor.layers(torch.cat([out.features, estimate], 1))
            torch.testing.assert_close(out.estimates[k], estimate)


def test_regressor_is_the_papers_mlp(small_encoder):
    linear = [m for m in small_encoder.regressor.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(512 + 159, 512), (512, 512), (512, 159)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in small_encoder.regressor.modules()) == 2
    assert sum(isinstance(m, torch.nn.ReLU) for m in small_encoder.regressor.modules()) == 2


def test_resnet50_is_the_default_with_2048_features():
    model = enc.RingNetEncoder()
    assert model.trunk_name == "resnet50" and model.n_features == 2048 and model.n_iterations == 3
    assert model.regressor.layers[0].in_features == 2048 + N_PARAMS


def test_imagenet_normalisation():
    mean_image = torch.tensor(enc.IMAGENET_MEAN)[None, :, None, None].expand(1, 3, 4, 4)
    assert torch.allclose(enc.normalize_images(mean_image), torch.zeros(1, 3, 4, 4), atol=1e-6)
    ones = enc.normalize_images(torch.ones(1, 3, 2, 2))[0, :, 0, 0]
    expected = (1 - torch.tensor(enc.IMAGENET_MEAN)) / torch.tensor(enc.IMAGENET_STD)
    torch.testing.assert_close(ones, expected)
    with pytest.raises(ValueError):
        enc.normalize_images(torch.ones(1, 1, 4, 4))


def test_initial_estimate_puts_landmarks_inside_the_image():
    torch.manual_seed(1)
    model = enc.RingNetEncoder(trunk="resnet18").eval()
    params = model(torch.rand(4, 3, 32, 32)).params.detach()
    # the small last layer keeps the first estimates near the initial one
    assert (params - model.initial_params).abs().max() < 0.5
    assert params[:, CAMERA.start].sub(enc.DEFAULT_CAMERA_SCALE).abs().max() < 0.5
    camera, pose, shape, expression = split_params(params)
    flame = FLAME()
    landmarks = flame(shape=shape, expression=expression, pose=full_pose_from_ringnet_pose(pose)).static_landmarks
    projected = project_weak_perspective(landmarks, camera)
    assert projected.abs().max() < 1.0  # inside the [-1, 1] crop
    assert projected.abs().max() > 0.3  # and not a dot in the middle


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not downloaded"):
        enc.build_trunk("resnet18", tmp_path / "nope.pth")


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(2)
    import torchvision
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")  # with the fc.* entries, as torchvision ships it
    trunk, n_features = enc.build_trunk("resnet18", tmp_path / "r18.pth")
    assert n_features == 512
    torch.testing.assert_close(trunk.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="does not hold"):
        torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
        enc.build_trunk("resnet18", tmp_path / "bad.pth")


def test_small_cnn_trunk_keeps_a_4x4_layout_at_any_size(tmp_path):
    torch.manual_seed(0)
    trunk, n_features = enc.build_trunk("small_cnn")
    resnet18, _ = enc.build_trunk("resnet18")
    assert n_features == 512
    assert 3 * sum(p.numel() for p in trunk.parameters()) < sum(p.numel() for p in resnet18.parameters())
    trunk.eval()
    for size in (16, 64, 128):
        images = torch.rand(2, 3, size, size)
        maps = trunk.stages(images)  # four stride-2 stages: size / 16
        assert maps.shape == (2, 256, size // 16, size // 16)
        pooled = torch.nn.functional.avg_pool2d(maps, size // 16 // 4) if size >= 64 else maps.mean((2, 3), True)
        expected = trunk.project(pooled.expand(-1, -1, 4, 4) if size < 64 else pooled)
        torch.testing.assert_close(trunk(images), expected)
    encoder = enc.RingNetEncoder(trunk="small_cnn").eval()
    assert encoder(torch.rand(3, 3, 64, 64)).params.shape == (3, 159)
    torch.save(trunk.state_dict(), tmp_path / "small.pth")  # a local weights file loads like a ResNet's
    loaded, _ = enc.build_trunk("small_cnn", tmp_path / "small.pth")
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(images), trunk(images))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown trunk"):
        enc.build_trunk("vgg")
    with pytest.raises(ValueError, match="n_iterations"):
        enc.RingNetEncoder(trunk="resnet18", n_iterations=0)
    with pytest.raises(ValueError, match="initial_params"):
        enc.RingNetEncoder(trunk="resnet18", initial_params=torch.zeros(5))
