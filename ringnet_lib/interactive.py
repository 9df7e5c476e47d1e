"""Interactive 3D views: a plotly mesh, and a FLAME explorer with sliders.

Everything here builds ordinary objects (a plotly ``Figure``, ipywidgets), so
it also runs headless: tests call :func:`flame_explorer` and move its sliders
without a browser. Notebooks display the explorer only when not in CI, since
widgets can time out under nbval.
"""
from __future__ import annotations

import torch

from .params import JAW, N_FULL_POSE, NECK, joint_pose
from .viz import to_numpy


def plotly_mesh(vertices, faces, color: str = "#d9b8a0", title: str | None = None, figure_widget: bool = False):
    """A shaded plotly mesh of ``V x 3`` vertices and ``F x 3`` faces, viewed from the front."""
    import plotly.graph_objects as go  # lazy: the notebooks extra, only when a figure is made
    v, f = to_numpy(vertices), to_numpy(faces)
    mesh = go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], color=color,
                     flatshading=False, lighting=dict(ambient=0.35, diffuse=0.8, specular=0.15, roughness=0.6),
                     lightposition=dict(x=0, y=100, z=300))
    layout = go.Layout(title=title, height=500, margin=dict(l=0, r=0, t=40 if title else 0, b=0),
                       scene=dict(aspectmode="data", xaxis_visible=False, yaxis_visible=False, zaxis_visible=False,
                                  camera=dict(up=dict(x=0, y=1, z=0), eye=dict(x=0.0, y=0.0, z=2.0))))
    return (go.FigureWidget if figure_widget else go.Figure)(data=[mesh], layout=layout)


def flame_explorer(flame, n_shape_sliders: int = 3, n_expression_sliders: int = 3):
    """Sliders for the first β and ψ, jaw opening and neck turn, driving a plotly mesh.

    Returns ``(widget, sliders, figure)``: display ``widget``; ``sliders`` is a
    dict name -> FloatSlider (tests set their values), ``figure`` the
    FigureWidget whose mesh they update.
    """
    import ipywidgets as widgets  # lazy: the notebooks extra, only when a widget is made

    def slider(description: str, low: float, high: float) -> widgets.FloatSlider:
        return widgets.FloatSlider(value=0.0, min=low, max=high, step=0.05, description=description,
                                   continuous_update=False)

    sliders = {f"shape {i}": slider(f"β{i}", -3, 3) for i in range(n_shape_sliders)}
    sliders |= {f"expression {i}": slider(f"ψ{i}", -3, 3) for i in range(n_expression_sliders)}
    sliders |= {"jaw": slider("jaw (rad)", 0.0, 0.5), "neck yaw": slider("neck (rad)", -0.8, 0.8)}
    figure = plotly_mesh(flame.v_template, flame.faces, figure_widget=True)

    def update(_=None) -> None:
        shape = torch.zeros(1, flame.n_shape)
        expression = torch.zeros(1, flame.n_expression)
        pose = torch.zeros(1, N_FULL_POSE)
        for i in range(n_shape_sliders):
            shape[0, i] = sliders[f"shape {i}"].value
        for i in range(n_expression_sliders):
            expression[0, i] = sliders[f"expression {i}"].value
        pose[0, joint_pose(JAW).start] = sliders["jaw"].value  # jaw: rotation about x opens the mouth
        pose[0, joint_pose(NECK).start + 1] = sliders["neck yaw"].value  # neck: rotation about y turns the head
        with torch.no_grad():
            v = flame(shape=shape, expression=expression, pose=pose).vertices[0].numpy()
        with figure.batch_update():
            figure.data[0].x, figure.data[0].y, figure.data[0].z = v[:, 0], v[:, 1], v[:, 2]

    for control in sliders.values():
        control.observe(update, names="value")
    widget = widgets.HBox([widgets.VBox(list(sliders.values())), figure])
    return widget, sliders, figure
