"""The decoder: RingNet's 159 parameters -> FLAME mesh -> 68 landmarks -> image, in one place.

    params (N x 159) = camera 3 | pose 6 | shape β 100 | expression ψ 50        (ringnet_lib.params)
      -> FLAME(β, ψ, pose 15)             vertices N x V x 3, joint rotations, 51 static landmarks
      -> + 17 contour points by yaw       landmarks3d N x 68 x 3                 (ringnet_lib.landmarks)
      -> weak perspective s (X + t)       landmarks2d N x 68 x 2, normalised     (ringnet_lib.camera)

Everything that turns parameters into landmarks calls :class:`Decoder`: the training step, the
fitting, both synthetic generators, the demo, the evaluation and the notebooks. FLAME runs once
per call; the head rotation (for the contour's yaw) and the static landmarks come out of that
one FLAME call.

    decoder = Decoder()                        # the embedded default head; Decoder("~/flame2020") for FLAME
    out = decoder(params)                      # DecoderOutput
    out.landmarks2d                            # N x 68 x 2
    decoder(params, shape=other_betas)         # decode with other β (the swap / mean ablations)
    decoder.neutral(betas).vertices            # ψ = 0, pose = 0: the identity alone (what NoW scores)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .camera import camera_looking_at, project_weak_perspective
from .flame import FLAME, FlameOutput, ModelSource
from .landmarks import ibug68
from .model_io import DYNAMIC_EMBEDDING_NAME, STATIC_EMBEDDING_NAME, ModelFileError
from .params import CAMERA, GLOBAL, N_LANDMARKS, N_PARAMS, STATIC_IN_68, full_pose_from_ringnet_pose, split_params


class DecoderOutput(NamedTuple):
    vertices: torch.Tensor  # N x V x 3, posed (FLAME space, metres)
    landmarks3d: torch.Tensor  # N x L x 3 (L = 68, or 51 with landmarks68=False)
    landmarks2d: torch.Tensor  # N x L x 2, normalised image coordinates (+y up)
    pose: torch.Tensor  # N x 15, FLAME's full pose (neck and eyes zero)


class Decoder(nn.Module):
    """FLAME + landmarks + weak-perspective camera; never trained (buffers only).

    Args:
        flame: a :class:`~ringnet_lib.flame.FLAME`, or what :class:`FLAME` accepts (None: the
            embedded default head; a folder of FLAME files).
        landmarks68: True: the 68 iBUG landmarks (needs the model's contour table); False: FLAME's
            51 static landmarks, which are iBUG 18..68 (:attr:`target_index` says which of the 68).
        yaw_chain: joints whose rotation picks the contour row (see :func:`ringnet_lib.landmarks.chain_rotation`).

    Raises:
        ModelFileError: the model lacks a landmark table it needs, saying which file and what to do.
    """

    def __init__(self, flame: FLAME | ModelSource = None, landmarks68: bool = True,
                 yaw_chain: tuple[int, ...] = (GLOBAL,)):
        super().__init__()
        self.flame = flame if isinstance(flame, FLAME) else FLAME(flame)
        self.landmarks68, self.yaw_chain = landmarks68, tuple(yaw_chain)
        if self.flame.landmark_face_idx is None:
            raise ModelFileError(f"{self.flame.source}: the model has no static landmark embedding "
                                 f"({STATIC_EMBEDDING_NAME}); landmarks need it. Put it beside the model file "
                                 "(it comes with the FLAME download).")
        if landmarks68 and self.flame.contour_face_idx is None:
            raise ModelFileError(
                f"{self.flame.source}: the 68 landmarks need the model's contour table ({DYNAMIC_EMBEDDING_NAME}), "
                f"and there is none beside the model. Put {DYNAMIC_EMBEDDING_NAME} there (RingNet's release ships "
                f"it as flame_model/{DYNAMIC_EMBEDDING_NAME}; for another mesh build one with "
                "ringnet_lib.contour.build_dynamic_embedding), or use FLAME's 51 static landmarks "
                "(Decoder(..., landmarks68=False); in training: --no-landmarks68).")
        index = torch.arange(N_LANDMARKS) if landmarks68 else torch.arange(N_LANDMARKS)[STATIC_IN_68]
        self.register_buffer("target_index", index, persistent=False)

    def for_landmarks(self) -> "Decoder":
        """A decoder with the same landmarks that computes only the vertices they use
        (:meth:`ringnet_lib.flame.FLAME.landmark_submodel`): the same ``landmarks3d`` and ``landmarks2d``
        at a fraction of the cost, for fitting. Its ``vertices`` are that subset only."""
        return Decoder(self.flame.landmark_submodel(), self.landmarks68, self.yaw_chain)

    @property
    def n_landmarks(self) -> int:
        return len(self.target_index)

    def landmarks(self, output: FlameOutput) -> torch.Tensor:
        """The landmarks of a FLAME output: ``N x 68 x 3`` (or ``N x 51 x 3``)."""
        if not self.landmarks68:
            return output.static_landmarks
        return ibug68(output, self.flame.faces, self.flame.contour_face_idx, self.flame.contour_bary_coords,
                      self.yaw_chain)

    def forward(self, params: torch.Tensor, shape: torch.Tensor | None = None) -> DecoderOutput:
        """Decode ``N x 159`` parameters.

        Args:
            params: ``N x 159`` (:mod:`ringnet_lib.params`).
            shape: optional ``N x 100`` β used instead of the parameters' own (the "swap" and
                "mean" consistency ablations decode with other images' β).
        Returns:
            :class:`DecoderOutput`.
        """
        if params.ndim != 2 or params.shape[1] != N_PARAMS:
            raise ValueError(f"params must be N x {N_PARAMS}, got {tuple(params.shape)}")
        camera, pose, own_shape, expression = split_params(params)
        pose15 = full_pose_from_ringnet_pose(pose)
        output = self.flame(shape=own_shape if shape is None else shape, expression=expression, pose=pose15)
        landmarks3d = self.landmarks(output)
        return DecoderOutput(output.vertices, landmarks3d, self.project(landmarks3d, camera), pose15)

    @staticmethod
    def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """The decoder's camera: weak perspective ``s (X[:, :2] + t)``, ``N x L x 3``, ``N x 3`` -> ``N x L x 2``
        (:func:`ringnet_lib.camera.project_weak_perspective`); for points decoded before their camera was known."""
        return project_weak_perspective(points, camera)

    def neutral(self, shape: torch.Tensor) -> FlameOutput:
        """The identity alone: ``N x 100`` β with ψ = 0 and pose = 0 (what NoW evaluates)."""
        return self.flame(shape=shape.to(self.flame.v_template.dtype))

    @torch.no_grad()
    def initial_params(self, fill: float = 0.8, camera: torch.Tensor | None = None) -> torch.Tensor:
        """A ``159`` starting estimate: the mean head, framed so its landmarks lie inside the image.

        Args:
            fill: fraction of the crop the landmarks' larger extent covers.
            camera: ``3`` (s, tx, ty) to use instead (e.g. a dataset's mean camera).
        Returns:
            ``159`` on the CPU: zero pose, β and ψ; the camera of
            :func:`ringnet_lib.camera.camera_looking_at` (or ``camera``).
        """
        params = torch.zeros(1, N_PARAMS, dtype=self.flame.v_template.dtype, device=self.flame.v_template.device)
        if camera is not None:
            params[0, CAMERA] = torch.as_tensor(camera, dtype=params.dtype)
        else:
            params[:, CAMERA] = camera_looking_at(self(params).landmarks3d, fill)
        return params[0].float().cpu()
