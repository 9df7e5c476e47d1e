"""The quick preset's data (grey renders made on the fly), the face-region shape error, and scoring a trained
encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib.camera import normalized_to_pixels
from ringnet_lib.data.render import project_to_pixels, rasterize
from ringnet_lib.data.synthetic import SyntheticRingSet, render_grey_heads
from ringnet_lib.decoder import Decoder
from ringnet_lib.evaluation import benchmark, trained
from ringnet_lib.face_region import crop_mask, face_region_error_mm
from ringnet_lib.params import N_PARAMS, SHAPE
from ringnet_lib.training import TrainConfig


@pytest.fixture(scope="module")
def decoder():
    return Decoder()


@pytest.fixture(scope="module")
def flame(decoder):
    return decoder.flame


def test_grey_renders_cover_exactly_the_rasterised_head(flame):
    torch.manual_seed(0)
    vertices = flame(shape=torch.randn(3, 100), expression=0.3 * torch.randn(3, 50)).vertices
    camera = torch.tensor([[7.5, 0.0, 0.01], [6.0, 0.01, 0.0], [8.0, -0.01, 0.02]])
    images = render_grey_heads(vertices, flame.faces, camera, 48, chunk=2)  # chunking must not matter
    assert images.shape == (3, 3, 48, 48) and float(images.min()) >= 0 and float(images.max()) <= 1
    covered = rasterize(project_to_pixels(vertices, camera, 48), flame.faces, 48, cull_backfaces=True).face_index >= 0
    assert torch.equal(images[:, 0] > 0, covered)  # ambient light: every head pixel is lit, the rest is black
    assert torch.equal(images, render_grey_heads(vertices, flame.faces, camera, 48, chunk=64))
    # A surface facing the light is brighter than one facing away from it.
    assert float(images[covered.unsqueeze(1).expand_as(images)].std()) > 0.05


def test_rendered_landmarks_lie_on_the_rendered_head(decoder):
    data = SyntheticRingSet(n_identities=3, images_per_identity=2, ring_size=2, image_size=64, seed=3)
    rendered = data.render_images(torch.arange(data.n_images), decoder)
    assert rendered["images"].shape == (6, 3, 64, 64) and rendered["landmarks"].shape == (6, 68, 2)
    pixels = normalized_to_pixels(rendered["landmarks"], 64).floor().long().clamp(0, 63)  # N x 68 x 2 (u, v)
    # Within a pixel of the head: the contour landmarks lie on its outline.
    head = torch.nn.functional.max_pool2d((rendered["images"][:, :1] > 0).float(), 3, stride=1, padding=1)[:, 0]
    on_head = torch.stack([head[i, pixels[i, :, 1], pixels[i, :, 0]] > 0 for i in range(len(pixels))])
    assert bool(on_head.all())
    blank = torch.zeros_like(head[0]).bool()
    blank[:4], blank[-4:] = True, True  # the top and bottom rows are not all head
    assert not bool((head[:, blank] > 0).all())


def _procrustes_loop(decoder, predicted, truth):
    """The same error computed another way: numpy SVD, one pair at a time."""
    mean_v, mean_l = benchmark.neutral_meshes(decoder, torch.zeros(1, 100))
    face = crop_mask(mean_v[0], mean_l[0]).numpy()
    errors = []
    for p, t in zip(benchmark.neutral_meshes(decoder, predicted)[0], benchmark.neutral_meshes(decoder, truth)[0]):
        x, y = p.numpy()[face].astype(np.float64), t.numpy()[face].astype(np.float64)
        xc, yc = x - x.mean(0), y - y.mean(0)
        u, s, vt = np.linalg.svd(yc.T @ xc)
        d = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
        rotation = u @ d @ vt
        scale = np.trace(np.diag(s) @ d) / (xc ** 2).sum()
        errors.append(np.linalg.norm(scale * xc @ rotation.T - yc, axis=1).mean() * 1000)
    return np.array(errors)


def test_face_region_error_matches_a_numpy_procrustes(decoder):
    generator = torch.Generator().manual_seed(1)
    truth = torch.randn(4, 100, generator=generator)
    predicted = truth + 0.7 * torch.randn(4, 100, generator=generator)
    errors = face_region_error_mm(decoder, predicted, truth)
    assert np.allclose(errors.numpy(), _procrustes_loop(decoder, predicted, truth), rtol=1e-4)
    assert float(face_region_error_mm(decoder, truth, truth).max()) < 1e-4
    # Closer β, smaller error; the mean shape is millimetres away.
    closer = face_region_error_mm(decoder, truth + 0.5 * (predicted - truth), truth)
    assert bool((closer < errors).all())
    assert float(face_region_error_mm(decoder, torch.zeros_like(truth), truth).mean()) > 1.0


class OracleEncoder(torch.nn.Module):
    """Knows the true β of every benchmark image: what a perfect encoder would predict."""

    def __init__(self, images, betas):
        super().__init__()
        self.images, self.betas = images.flatten(1), betas
        self.weight = torch.nn.Parameter(torch.zeros(()))  # predict_params asks for a parameter's device

    def forward(self, images):
        index = torch.cdist(images.flatten(1), self.images).argmin(dim=1)
        params = torch.zeros(len(images), N_PARAMS)
        params[:, SHAPE] = self.betas[index]
        return type("Output", (), {"params": params})()


def test_a_perfect_encoder_beats_the_mean_shape_and_a_blind_one_does_not(decoder, tmp_path):
    config = TrainConfig.from_preset("quick", image_size=32)
    images, betas = trained.heldout_images(decoder, config, 3, 2)
    assert images.shape == (6, 3, 32, 32) and torch.equal(betas[0], betas[1])  # 2 images per identity
    options = dict(n_identities=3, images_per_identity=2, n_points=400, icp_iterations=3)
    perfect = trained.benchmark_encoder(OracleEncoder(images, betas), config, decoder, **options)
    assert trained.median_ratio(perfect) < 0.2
    blind = trained.benchmark_encoder(OracleEncoder(images, torch.zeros_like(betas)), config, decoder, **options)
    assert abs(trained.median_ratio(blind) - 1) < 1e-6
    paths = trained.write_benchmark(perfect, tmp_path)
    assert "trained encoder" in paths["md"].read_text() and paths["png"].stat().st_size > 5_000
    assert {p.name for p in paths.values()} == {"metrics.md", "metrics.csv", "metrics.json", "metrics.png"}


def test_heldout_seed_must_differ_from_the_training_seed(decoder):
    with pytest.raises(ValueError, match="trained on"):
        trained.heldout_images(decoder, TrainConfig.from_preset("quick", data_seed=benchmark.HELDOUT_SEED), 2, 1)


def test_command_line_scores_a_checkpoint(tmp_path, capsys):
    from ringnet_lib.training import train

    config = TrainConfig.from_preset("quick", max_steps=1, image_size=32, batch_size=2, ring_size=3, n_identities=4,
                                     images_per_identity=3, eval_rings=0, tensorboard=False, progress=False,
                                     out_dir=str(tmp_path / "run"))
    checkpoint = train(config).checkpoint
    assert trained.main([str(checkpoint), "--out", str(tmp_path / "eval"), "--identities", "2",
                         "--points", "300"]) == 0
    printed = capsys.readouterr().out
    assert "| trained encoder |" in printed and "| mean shape (β = 0) |" in printed
    assert (tmp_path / "eval" / "metrics.csv").is_file()
    assert trained.main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "eval")]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    checkpoint.unlink()  # ~45 MB of weights and Adam state
