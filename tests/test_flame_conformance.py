"""Our FLAME against smplx 0.1.28 on the same files: vertices, joints and the 51 static landmarks."""
from __future__ import annotations

import numpy as np
import pytest
import smplx
import torch

from ringnet_lib.flame import FLAME

from ringnet_lib.testing import random_parameters

# float64 is limited by smplx, not by us: its Rodrigues uses |r + 1e-8| as the
# angle, which moves vertices by ~1e-8 m (ours equals scipy to 1e-12, test_lbs).
TOLERANCE_M = {torch.float32: 1e-5, torch.float64: 1e-7}


def smplx_forward(folder, shape, expression, pose, dtype):
    reference = smplx.FLAME(model_path=str(folder), num_betas=100, num_expression_coeffs=50,
                            batch_size=shape.shape[0], dtype=dtype)
    out = reference(betas=shape, expression=expression, global_orient=pose[:, 0:3], neck_pose=pose[:, 3:6],
                    jaw_pose=pose[:, 6:9], leye_pose=pose[:, 9:12], reye_pose=pose[:, 12:15])
    # smplx's joints: the 5 skeleton joints, then the 51 static landmarks.
    return out.vertices, out.joints[:, :5], out.joints[:, 5:]


def assert_matches_smplx(ours_source, smplx_folder, batch, seed, dtype):
    shape, expression, pose = (torch.as_tensor(a, dtype=dtype) for a in random_parameters(batch, seed))
    ours = FLAME(ours_source, dtype=dtype)(shape=shape, expression=expression, pose=pose)
    vertices, joints, landmarks = smplx_forward(smplx_folder, shape, expression, pose, dtype)
    tolerance = TOLERANCE_M[dtype]
    assert ours.vertices.shape == vertices.shape
    assert (ours.vertices - vertices).abs().max().item() < tolerance
    assert (ours.joints - joints).abs().max().item() < tolerance
    assert (ours.static_landmarks - landmarks).abs().max().item() < tolerance
    # The comparison must not be trivially satisfied by a mesh that did not move.
    template = smplx.FLAME(model_path=str(smplx_folder), dtype=dtype).v_template
    assert (vertices - template).abs().max().item() > 1e-3


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_pickle_matches_smplx(random_model_folders, batch, dtype):
    assert_matches_smplx(random_model_folders["plain"], random_model_folders["plain"], batch, seed=batch, dtype=dtype)


@pytest.mark.parametrize("batch", [1, 64])
def test_chumpy_style_pickle_matches_smplx(random_model_folders, batch):
    """smplx cannot read the chumpy-style file without chumpy; it reads the plain copy of the same arrays."""
    assert_matches_smplx(random_model_folders["chumpy"], random_model_folders["plain"], batch, seed=10 + batch,
                         dtype=torch.float32)


@pytest.mark.parametrize("batch", [1, 64])
def test_default_head_matches_smplx(default_model_folder, batch):
    assert_matches_smplx(None, default_model_folder, batch, seed=20 + batch, dtype=torch.float32)


def test_gradients_match_smplx(random_model_folders):
    folder = random_model_folders["plain"]
    arrays = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in random_parameters(4, seed=5)]
    ours = FLAME(folder, dtype=torch.float64)(*arrays)
    ours_grads = torch.autograd.grad(ours.vertices.pow(2).sum(), arrays)
    reference = smplx_forward(folder, *arrays, dtype=torch.float64)[0]
    reference_grads = torch.autograd.grad(reference.pow(2).sum(), arrays)
    for mine, theirs in zip(ours_grads, reference_grads):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-8)
