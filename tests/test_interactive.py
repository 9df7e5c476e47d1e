"""The slider explorer works headless: moving a slider redraws the mesh FLAME computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ringnet_lib import testing
from ringnet_lib.flame import FLAME
from ringnet_lib.interactive import flame_explorer, plotly_mesh


@pytest.fixture(scope="module")
def flame():
    return FLAME(testing.random_flame_model(200, seed=4))


def mesh_vertices(figure) -> np.ndarray:
    mesh = figure.data[0]
    return np.stack([np.asarray(mesh.x), np.asarray(mesh.y), np.asarray(mesh.z)], axis=1)


def test_sliders_redraw_what_flame_computes(flame):
    _, sliders, figure = flame_explorer(flame)
    np.testing.assert_allclose(mesh_vertices(figure), flame.v_template.numpy())
    sliders["jaw"].value = 0.3
    sliders["shape 1"].value = 2.0
    sliders["neck yaw"].value = -0.5
    pose = torch.zeros(1, 15)
    pose[0, 6], pose[0, 4] = 0.3, -0.5
    shape = torch.zeros(1, 100)
    shape[0, 1] = 2.0
    expected = flame(shape=shape, pose=pose).vertices[0].detach().numpy()
    np.testing.assert_allclose(mesh_vertices(figure), expected, atol=1e-6)
    assert np.abs(expected - flame.v_template.numpy()).max() > 1e-3


def test_plotly_mesh_has_all_faces(flame):
    figure = plotly_mesh(flame.v_template, flame.faces)
    assert len(figure.data[0].i) == flame.faces.shape[0]
    assert figure.layout.scene.aspectmode == "data"
