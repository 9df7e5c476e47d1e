"""The Decoder (159 parameters -> FLAME -> 68 landmarks -> weak perspective) against an independent reference.

The reference is smplx 0.1.28 reading the same FLAME folder with ``use_face_contour=True``: its
``joints[:, 5:]`` are the 51 static landmarks then the 17 contour points (smplx's order,
reordered to iBUG's with SMPLX_TO_IBUG68), projected here by hand as ``s * (X[:, :2] + t)``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ringnet_lib import model_io, testing
from ringnet_lib.decoder import Decoder
from ringnet_lib.flame import FLAME
from ringnet_lib.landmarks import SMPLX_TO_IBUG68, yaw_degrees
from ringnet_lib.model_io import DYNAMIC_EMBEDDING_NAME, STATIC_EMBEDDING_NAME, ModelFileError
from ringnet_lib.params import N_PARAMS, full_pose_from_ringnet_pose

smplx = pytest.importorskip("smplx")

TOLERANCE = 1e-5  # float32, metres (3D) and normalised image units (2D)


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    """A random FLAME-format model (pose correctives included) with its own random landmark tables."""
    folder = testing.write_random_flame_folder(tmp_path_factory.mktemp("random_decoder"), n_vertices=400, seed=11)
    assert (folder / STATIC_EMBEDDING_NAME).is_file() and (folder / DYNAMIC_EMBEDDING_NAME).is_file()
    return folder


def random_params(batch: int, seed: int) -> torch.Tensor:
    """``batch x 159``: camera s in [5, 9] and t ~ N(0, 0.05); global rotation with yaw over +-70 deg
    (beyond the contour table's +-39) plus pitch and roll; a jaw; β ~ N(0, 1); ψ ~ N(0, 0.5)."""
    rng = np.random.default_rng(seed)
    params = np.zeros((batch, N_PARAMS))
    params[:, 0] = rng.uniform(5.0, 9.0, batch)
    params[:, 1:3] = rng.normal(0.0, 0.05, (batch, 2))
    params[:, 3:9] = rng.normal(0.0, 0.15, (batch, 6))
    params[:, 4] = rng.uniform(-1.2, 1.2, batch)  # the global rotation about y: the yaw
    params[:, 9:109] = rng.normal(0.0, 1.0, (batch, 100))
    params[:, 109:159] = rng.normal(0.0, 0.5, (batch, 50))
    return torch.tensor(params, dtype=torch.float32)


def reference(folder, params: torch.Tensor, shape: torch.Tensor | None = None, landmarks68: bool = True):
    """smplx's vertices, landmarks (iBUG order, or the 51 static ones) and their weak-perspective projection."""
    batch = params.shape[0]
    model = smplx.FLAME(model_path=str(folder), num_betas=100, num_expression_coeffs=50, use_face_contour=True,
                        batch_size=batch)
    zeros = torch.zeros(batch, 3)
    with torch.no_grad():
        out = model(betas=params[:, 9:109] if shape is None else shape, expression=params[:, 109:159],
                    global_orient=params[:, 3:6], jaw_pose=params[:, 6:9], neck_pose=zeros, leye_pose=zeros,
                    reye_pose=zeros)
    landmarks = out.joints[:, 5:]  # 51 static, then 17 contour
    landmarks = landmarks[:, list(SMPLX_TO_IBUG68)] if landmarks68 else landmarks[:, :51]
    scale, shift = params[:, None, :1], params[:, None, 1:3]
    return out.vertices, landmarks, scale * (landmarks[..., :2] + shift)


def assert_matches(output, expected):
    vertices, landmarks3d, landmarks2d = expected
    assert output.vertices.shape == vertices.shape
    assert output.landmarks3d.shape == landmarks3d.shape and output.landmarks2d.shape == landmarks2d.shape
    assert (output.vertices - vertices).abs().max().item() < TOLERANCE
    assert (output.landmarks3d - landmarks3d).abs().max().item() < TOLERANCE
    assert (output.landmarks2d - landmarks2d).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("model", ["default", "default folder", "random"])
def test_decoder_equals_smplx(default_model_folder, random_folder, model):
    folder = random_folder if model == "random" else default_model_folder
    decoder = Decoder() if model == "default" else Decoder(folder)
    assert decoder.flame.is_embedded_default == (model == "default")
    assert decoder.n_landmarks == 68 and decoder.target_index.tolist() == list(range(68))
    params = random_params(16, seed={"default": 0, "default folder": 1, "random": 2}[model])
    assert (yaw_degrees(full_pose_from_ringnet_pose(params[:, 3:9])).abs() > 39).any()
    with torch.no_grad():
        output = decoder(params)
    assert torch.equal(output.pose, full_pose_from_ringnet_pose(params[:, 3:9]))
    assert_matches(output, reference(folder, params))
    # The comparison is not trivially met by landmarks that did not move with the parameters.
    assert (output.landmarks2d - decoder(torch.zeros_like(params)).landmarks2d).abs().max() > 0.05


@pytest.mark.parametrize("model", ["default", "random"])
def test_shape_override_equals_smplx(default_model_folder, random_folder, model):
    """decoder(params, shape=β') decodes with β' instead of the parameters' own β (the swap ablations)."""
    folder = random_folder if model == "random" else default_model_folder
    decoder = Decoder(folder)
    params = random_params(8, seed=5)
    other = torch.randn(8, 100, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        output = decoder(params, shape=other)
        own = decoder(params)
    assert_matches(output, reference(folder, params, shape=other))
    assert (output.vertices - own.vertices).abs().max() > 1e-3  # β' did change the head


@pytest.mark.parametrize("model", ["default", "random"])
def test_static_landmarks_only_equal_smplx(default_model_folder, random_folder, model):
    """landmarks68=False: FLAME's 51 static landmarks (iBUG 18..68), the same points as in the 68."""
    folder = random_folder if model == "random" else default_model_folder
    decoder = Decoder(folder, landmarks68=False)
    assert decoder.n_landmarks == 51 and decoder.target_index.tolist() == list(range(17, 68))
    params = random_params(8, seed=7)
    with torch.no_grad():
        output = decoder(params)
        full = Decoder(folder)(params)
    assert_matches(output, reference(folder, params, landmarks68=False))
    assert torch.equal(output.landmarks3d, full.landmarks3d[:, decoder.target_index])


def test_folder_without_contour_table(random_model_folders):
    """A folder without flame_dynamic_embedding.npy: a clear error for 68 landmarks; 51 work."""
    folder = random_model_folders["chumpy"]
    assert not (folder / DYNAMIC_EMBEDDING_NAME).exists()
    with pytest.raises(ModelFileError, match="landmarks68"):
        Decoder(folder)
    with pytest.raises(ModelFileError, match=DYNAMIC_EMBEDDING_NAME):
        Decoder(FLAME(folder))
    decoder = Decoder(folder, landmarks68=False)
    params = random_params(4, seed=8)
    output = decoder(params)
    assert output.landmarks3d.shape == (4, 51, 3) and output.landmarks2d.shape == (4, 51, 2)
    static = FLAME(folder)(shape=params[:, 9:109], expression=params[:, 109:159],
                           pose=full_pose_from_ringnet_pose(params[:, 3:9])).static_landmarks
    assert torch.equal(output.landmarks3d, static)


def test_folder_without_static_embedding(tmp_path):
    model = dataclasses.replace(testing.random_flame_model(300, seed=12), static_embedding=None)
    folder = model_io.write_flame_folder(model, tmp_path)
    assert not (folder / STATIC_EMBEDDING_NAME).exists() and (folder / DYNAMIC_EMBEDDING_NAME).exists()
    for landmarks68 in (True, False):
        with pytest.raises(ModelFileError, match="static landmark embedding"):
            Decoder(folder, landmarks68=landmarks68)


def test_project_and_wrong_sizes():
    points = torch.tensor([[[0.1, -0.2, 5.0], [0.0, 0.3, -1.0]]])
    camera = torch.tensor([[2.0, 0.5, 0.25]])
    assert torch.allclose(Decoder.project(points, camera), torch.tensor([[[1.2, 0.1], [1.0, 1.1]]]))
    with pytest.raises(ValueError, match="159"):
        Decoder()(torch.zeros(2, 158))


def test_neutral_and_initial_params():
    decoder = Decoder()
    betas = torch.randn(3, 100, generator=torch.Generator().manual_seed(9))
    neutral = decoder.neutral(betas)
    expected = decoder.flame(shape=betas, expression=torch.zeros(3, 50), pose=torch.zeros(3, 15))
    assert torch.equal(neutral.vertices, expected.vertices)
    start = decoder.initial_params(fill=0.8)
    assert start.shape == (N_PARAMS,) and (start[3:] == 0).all()
    landmarks = decoder(start[None]).landmarks2d[0]
    extent = (landmarks.amax(0) - landmarks.amin(0)).max()
    assert extent.item() == pytest.approx(1.6, abs=1e-5)  # fill 0.8 of [-1, 1]
    assert torch.allclose((landmarks.amax(0) + landmarks.amin(0)) / 2, torch.zeros(2), atol=1e-6)
    chosen = decoder.initial_params(camera=torch.tensor([7.0, 0.1, -0.2]))
    assert torch.equal(chosen[:3], torch.tensor([7.0, 0.1, -0.2])) and (chosen[3:] == 0).all()


@pytest.mark.parametrize("model", ["default", "random"])
@pytest.mark.parametrize("landmarks68", [True, False])
def test_the_landmark_submodel_gives_the_same_landmarks_and_gradients(random_folder, model, landmarks68):
    """for_landmarks() (what fitting uses) keeps only the landmarks' triangles: the same landmarks to the bit,
    the same gradients (float64, up to summation order), and exactly the full model's vertices where it keeps them."""
    full = Decoder(FLAME(None if model == "default" else random_folder, dtype=torch.float64), landmarks68=landmarks68)
    small = full.for_landmarks()
    if model == "default":  # a random contour table touches almost every triangle of a 400-vertex model
        assert len(small.flame.v_template) < len(full.flame.v_template) / 3
    params = random_params(6, seed=5).double().requires_grad_(True)
    a, b = full(params), small(params)
    assert torch.equal(a.landmarks3d, b.landmarks3d) and torch.equal(a.landmarks2d, b.landmarks2d)
    kept = torch.unique(full.flame.faces[torch.unique(torch.cat(
        [full.flame.landmark_face_idx.flatten(), full.flame.contour_face_idx.flatten()]))].flatten())
    assert torch.equal(a.vertices[:, kept], b.vertices)
    grad_full, = torch.autograd.grad(a.landmarks2d.square().sum(), params)
    grad_small, = torch.autograd.grad(b.landmarks2d.square().sum(), params)
    assert torch.allclose(grad_full, grad_small, atol=1e-10, rtol=1e-10)
