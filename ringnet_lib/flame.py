"""FLAME as an ``nn.Module``: parameters in, mesh and joints out.

The module is a "layer" in smplx's sense: it holds no parameters of its own,
only buffers read from a model file, and takes every parameter as a forward
argument (what a regressor such as RingNet's encoder needs). It is never
trained: RingNet learns only the encoder.

    flame = FLAME()                           # the embedded default head
    flame = FLAME("~/models/flame2020")       # a folder with the real FLAME files
    out = flame(shape=beta, expression=psi, pose=theta)   # B x 100, B x 50, B x 15
    out.vertices                              # B x V x 3, metres
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import lbs
from .default_head import default_model
from .landmarks import barycentric_landmarks
from .model_io import FlameModelData, ModelFileError, load_flame_folder
from .params import FLAME_SHAPE_SPACE, N_EXPRESSION, N_FULL_POSE, N_SHAPE

ModelSource = FlameModelData | str | Path | None


class FlameOutput(NamedTuple):
    vertices: torch.Tensor  # B x V x 3
    joints: torch.Tensor  # B x 5 x 3 (global/root, neck, jaw, left eye, right eye)
    rotations: torch.Tensor  # B x 5 x 3 x 3, each joint's local rotation (Rodrigues of its pose)
    static_landmarks: torch.Tensor | None  # B x 51 x 3, when the model has a landmark embedding


def load_model_source(source: ModelSource) -> FlameModelData:
    """What :class:`FLAME` was given, as model arrays with their landmark tables.

    ``None`` or ``"default"``: the embedded default head. A folder: the FLAME files in it
    (:func:`ringnet_lib.model_io.load_flame_folder`). A file: that model file and the landmark
    files beside it.
    """
    if source is None or (isinstance(source, str) and source == "default"):
        return default_model()
    if isinstance(source, FlameModelData):
        return source
    return load_flame_folder(source)


class FLAME(nn.Module):
    """The FLAME decoder (Li et al., SIGGRAPH Asia 2017) with linear blend skinning.

    Args:
        model: a :class:`FlameModelData`, a path to a FLAME model file or
            folder, or ``None`` for the embedded default head.
        n_shape: how many shape components to use (β, at most 300).
        n_expression: how many expression components to use (ψ, at most 100);
            in FLAME's layout they start at column 300 of ``shapedirs``.
        static_embedding: optional dict with ``lmk_face_idx`` (51,) and
            ``lmk_b_coords`` (51 x 3), instead of the one the model carries.
        dynamic_embedding: optional contour table (``79 x 17`` and ``79 x 17 x 3``), instead of
            the one the model carries.
        dtype: of the buffers (float32 by default).

    Attributes besides the buffers: ``source`` (where the model came from) and
    ``is_embedded_default``. The landmark tables are buffers too (``landmark_face_idx``,
    ``landmark_bary_coords``, ``contour_face_idx``, ``contour_bary_coords``), None when absent.
    """

    def __init__(self, model: ModelSource = None, n_shape: int = N_SHAPE, n_expression: int = N_EXPRESSION,
                 static_embedding: dict | None = None, dynamic_embedding: dict | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        data = load_model_source(model)
        static_embedding = data.static_embedding if static_embedding is None else static_embedding
        dynamic_embedding = data.dynamic_embedding if dynamic_embedding is None else dynamic_embedding
        n_columns = data.shapedirs.shape[2]
        if not 0 <= n_shape <= min(FLAME_SHAPE_SPACE, n_columns):
            raise ModelFileError(f"{data.source}: asked for {n_shape} shape components, but the file has "
                                 f"{min(FLAME_SHAPE_SPACE, n_columns)}. Use n_shape <= that.")
        if n_expression and n_columns < FLAME_SHAPE_SPACE + n_expression:
            raise ModelFileError(f"{data.source}: asked for {n_expression} expression components, but shapedirs has "
                                 f"{n_columns} columns and FLAME's expressions start at column {FLAME_SHAPE_SPACE} "
                                 f"(so at most {max(0, n_columns - FLAME_SHAPE_SPACE)} are available). "
                                 "Lower n_expression, or use a FLAME 2020/2023 file (400 columns).")
        self.n_shape, self.n_expression = n_shape, n_expression
        self.parents = list(data.parents)
        self.source = data.source
        self.is_embedded_default = data.is_embedded_default
        n_vertices = data.n_vertices

        columns = np.r_[0:n_shape, FLAME_SHAPE_SPACE:FLAME_SHAPE_SPACE + n_expression]
        coefficient_dirs = data.shapedirs[:, :, columns]  # V x 3 x K
        # K x 3V rows, so that coefficients @ directions is one matrix product.
        coefficient_rows = coefficient_dirs.reshape(n_vertices * 3, -1).T
        pose_rows = data.posedirs.reshape(n_vertices * 3, -1).T  # 36 x 3V
        joint_rows = np.einsum("jv,vck->kjc", data.joint_regressor, coefficient_dirs).reshape(len(columns), -1)

        def buffer(name: str, array: np.ndarray | None, buffer_dtype: torch.dtype = dtype) -> None:
            value = None if array is None else torch.tensor(np.ascontiguousarray(array), dtype=buffer_dtype)
            self.register_buffer(name, value, persistent=False)

        buffer("v_template", data.v_template)
        buffer("faces", data.faces, torch.long)
        buffer("directions", np.concatenate([coefficient_rows, pose_rows], axis=0))
        buffer("joint_template", data.joint_regressor @ data.v_template)
        buffer("joint_directions", joint_rows)
        buffer("joint_regressor", data.joint_regressor)
        buffer("weights", data.weights)
        buffer("landmark_face_idx", None if static_embedding is None else static_embedding["lmk_face_idx"], torch.long)
        buffer("landmark_bary_coords", None if static_embedding is None else static_embedding["lmk_b_coords"])
        buffer("contour_face_idx", None if dynamic_embedding is None else dynamic_embedding["lmk_face_idx"],
               torch.long)
        buffer("contour_bary_coords", None if dynamic_embedding is None else dynamic_embedding["lmk_b_coords"])

    def landmark_submodel(self) -> "FLAME":
        """The same model restricted to the triangles its landmark tables use (and their vertices).

        Skinning is per vertex and the joints come from the precomputed regressor terms, so the
        vertices it keeps are exactly those of the full model; the landmark tables are re-indexed.
        Fitting to landmarks runs on it: 374 of the default head's 4,926 vertices (a fit step 6.7 ms
        on one thread). Its ``vertices`` are only those (``V' x 3``); use the full model for meshes.
        """
        if self.landmark_face_idx is None:
            raise ModelFileError(f"{self.source}: the model has no landmark embedding to restrict to")
        used = [self.landmark_face_idx.flatten()]
        if self.contour_face_idx is not None:
            used.append(self.contour_face_idx.flatten())
        faces_kept = torch.unique(torch.cat(used))  # sorted
        vertices_kept = torch.unique(self.faces[faces_kept].flatten())
        new_vertex = torch.full((len(self.v_template),), -1, dtype=torch.long, device=self.faces.device)
        new_vertex[vertices_kept] = torch.arange(len(vertices_kept), device=self.faces.device)
        new_face = torch.full((len(self.faces),), -1, dtype=torch.long, device=self.faces.device)
        new_face[faces_kept] = torch.arange(len(faces_kept), device=self.faces.device)
        columns = (3 * vertices_kept[:, None] + torch.arange(3, device=self.faces.device)).flatten()
        sub = FLAME.__new__(FLAME)
        nn.Module.__init__(sub)
        sub.n_shape, sub.n_expression, sub.parents = self.n_shape, self.n_expression, self.parents
        sub.source, sub.is_embedded_default = f"{self.source} (landmark triangles)", self.is_embedded_default
        buffers = {"v_template": self.v_template[vertices_kept], "faces": new_vertex[self.faces[faces_kept]],
                   "directions": self.directions[:, columns], "joint_template": self.joint_template,
                   "joint_directions": self.joint_directions, "joint_regressor": self.joint_regressor,
                   "weights": self.weights[vertices_kept], "landmark_face_idx": new_face[self.landmark_face_idx],
                   "landmark_bary_coords": self.landmark_bary_coords,
                   "contour_face_idx": None if self.contour_face_idx is None else new_face[self.contour_face_idx],
                   "contour_bary_coords": self.contour_bary_coords}
        for name, value in buffers.items():
            sub.register_buffer(name, value, persistent=False)
        return sub

    # Views into the stacked basis, for teaching and inspection (``V x 3 x n``).
    def _basis(self, rows: slice) -> torch.Tensor:
        return self.directions[rows].T.reshape(self.v_template.shape[0], 3, -1)

    @property
    def shape_directions(self) -> torch.Tensor:
        return self._basis(slice(0, self.n_shape))

    @property
    def expression_directions(self) -> torch.Tensor:
        return self._basis(slice(self.n_shape, self.n_shape + self.n_expression))

    @property
    def pose_directions(self) -> torch.Tensor:
        return self._basis(slice(self.n_shape + self.n_expression, None))

    def _coefficients(self, batch: int, name: str, value: torch.Tensor | None, size: int) -> torch.Tensor:
        if value is None:
            return self.v_template.new_zeros(batch, size)
        if value.ndim != 2 or value.shape != (batch, size):
            raise ValueError(f"{name} must be B x {size} with B = {batch}, got {tuple(value.shape)}")
        return value.to(self.v_template.dtype)

    def forward(self, shape: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                pose: torch.Tensor | None = None, translation: torch.Tensor | None = None) -> FlameOutput:
        """Decode parameters into a posed mesh.

        Args:
            shape: ``B x n_shape`` (β). Omitted: zeros.
            expression: ``B x n_expression`` (ψ). Omitted: zeros.
            pose: ``B x 15`` axis-angle: global, neck, jaw, left eye, right eye
                (see :func:`ringnet_lib.params.full_pose_from_ringnet_pose`).
            translation: ``B x 3``, added to everything.
        Returns:
            :class:`FlameOutput` with vertices ``B x V x 3``, joints ``B x 5 x 3``, the joints'
            local rotations ``B x 5 x 3 x 3`` and, if the model has an embedding, the 51 static landmarks.
        """
        given = [t for t in (shape, expression, pose, translation) if t is not None]
        batch = given[0].shape[0] if given else 1
        shape = self._coefficients(batch, "shape", shape, self.n_shape)
        expression = self._coefficients(batch, "expression", expression, self.n_expression)
        pose = self._coefficients(batch, "pose", pose, N_FULL_POSE)
        vertices, joints, rotations = lbs.linear_blend_skinning(
            torch.cat([shape, expression], dim=1), pose, self.v_template, self.directions,
            self.joint_template, self.joint_directions, self.parents, self.weights)
        if translation is not None:
            translation = self._coefficients(batch, "translation", translation, 3)
            vertices = vertices + translation[:, None]
            joints = joints + translation[:, None]
        landmarks = None
        if self.landmark_face_idx is not None:
            landmarks = barycentric_landmarks(vertices, self.faces, self.landmark_face_idx, self.landmark_bary_coords)
        return FlameOutput(vertices, joints, rotations, landmarks)
