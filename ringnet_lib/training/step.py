"""The 6-branch step: B rings of R images through one encoder call, one FLAME call, the losses.

RingNet's R "branches" share all their weights, so they are one network applied
to a batch of B·R images; nothing here loops over branches.

    images B x R x 3 x H x W --flatten--> encoder (B·R) --> params B x R x 159
    --> FLAME (one call) --> 3D landmarks --> weak perspective --> B x R x L x 2
    --> ring loss on β (B x R x 100), landmark loss, regularisers
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .. import losses
from ..camera import camera_looking_at, project_weak_perspective
from ..flame import FLAME
from ..landmarks import Landmarks68, load_dynamic_embedding
from ..model_io import DYNAMIC_EMBEDDING_NAME, STATIC_EMBEDDING_NAME, ModelFileError
from ..params import CAMERA, EXPRESSION, N_PARAMS, POSE, SHAPE, full_pose_from_ringnet_pose, split_params

N_LANDMARKS = 68
STATIC_IN_68 = torch.arange(17, 68)  # iBUG 18..68: the 51 landmarks FLAME's static embedding gives


class LandmarkHead(nn.Module):
    """FLAME vertices + pose -> the 3D landmarks that the loss compares with targets.

    ``use_68=True`` (default): the 68 iBUG landmarks of :class:`ringnet_lib.landmarks.Landmarks68`,
    contour chosen by yaw. They need the model's contour table (dynamic embedding):
    ``dynamic_embedding`` if given, else the shipped table of the embedded default head, else
    ``flame_dynamic_embedding.npy`` beside the model file (:meth:`contour_table`); without one
    it raises :class:`~ringnet_lib.model_io.ModelFileError` saying what to do.
    ``use_68=False``: FLAME's 51 static landmarks, which are iBUG's 18..68
    (``target_index`` says which of the 68 targets they match).
    """

    def __init__(self, flame: FLAME, use_68: bool = True, dynamic_embedding: dict | None = None):
        super().__init__()
        self.landmarks68 = None
        if use_68:
            self.landmarks68 = Landmarks68(flame, dynamic_embedding if dynamic_embedding is not None
                                           else self.contour_table(flame))
        elif flame.landmark_face_idx is None:
            raise ModelFileError(f"{flame.source}: the model has no static landmark embedding "
                                 f"({STATIC_EMBEDDING_NAME}); the 51 static landmarks need it")
        index = torch.arange(N_LANDMARKS) if self.landmarks68 is not None else STATIC_IN_68.clone()
        self.register_buffer("target_index", index, persistent=False)

    @staticmethod
    def contour_table(flame: FLAME) -> dict | None:
        """The contour table (dynamic embedding) that goes with ``flame``, for :class:`LandmarkHead`.

        None for the embedded default head (:class:`~ringnet_lib.landmarks.Landmarks68` uses its
        shipped table); for a model read from a file, ``flame_dynamic_embedding.npy`` in its folder.
        Raises :class:`~ringnet_lib.model_io.ModelFileError` naming the missing file otherwise.
        """
        if flame.source == "embedded default head":
            return None
        source = Path(flame.source)
        folder = source if source.is_dir() else source.parent if source.is_file() else None
        if folder is not None and (folder / DYNAMIC_EMBEDDING_NAME).is_file():
            return load_dynamic_embedding(folder / DYNAMIC_EMBEDDING_NAME, n_faces=flame.faces.shape[0])
        where = (f"there is no {folder / DYNAMIC_EMBEDDING_NAME}" if folder is not None else
                 f"it was not read from a folder, so there is no {DYNAMIC_EMBEDDING_NAME} beside it")
        raise ModelFileError(
            f"{flame.source}: the 68 landmarks need the model's contour table (dynamic embedding), and {where}. "
            f"Put {DYNAMIC_EMBEDDING_NAME} there (RingNet's release ships it as flame_model/{DYNAMIC_EMBEDDING_NAME}; "
            "for another mesh build one with ringnet_lib.contour.build_dynamic_embedding and "
            "ringnet_lib.landmarks.save_dynamic_embedding), or pass LandmarkHead(flame, dynamic_embedding=...); "
            "or use LandmarkHead(flame, use_68=False) for FLAME's 51 static landmarks (iBUG 18-68; "
            "in training: --no-landmarks68).")

    def forward(self, flame_output, pose15: torch.Tensor) -> torch.Tensor:
        """FlameOutput (batch B), ``B x 15`` -> ``B x L x 3``."""
        if self.landmarks68 is not None:
            return self.landmarks68(flame_output.vertices, pose15)
        return flame_output.static_landmarks


class RingPrediction(NamedTuple):
    params: torch.Tensor  # B x R x 159
    landmarks2d: torch.Tensor  # B x R x L x 2 (L = len(target_index))
    terms: dict  # loss terms (scalars)
    total: torch.Tensor  # scalar


def decode_landmarks(flame: FLAME, head: LandmarkHead, params: torch.Tensor,
                     shapes: torch.Tensor | None = None) -> torch.Tensor:
    """Parameters to projected landmarks in ONE FLAME call.

    Args:
        flame: the decoder.
        head: which landmarks.
        params: ``N x 159``.
        shapes: optional ``N x 100`` used instead of the params' own β (for the
            "mean" and "swap" consistency modes).
    Returns:
        ``N x L x 2`` normalised image coordinates.
    """
    camera, pose, shape, expression = split_params(params)
    pose15 = full_pose_from_ringnet_pose(pose)
    output = flame(shape=shape if shapes is None else shapes, expression=expression, pose=pose15)
    return project_weak_perspective(head(output, pose15), camera)


def ring_step(encoder: nn.Module, flame: FLAME, head: LandmarkHead, batch: dict,
              consistency: str = "ring", weights: losses.LossWeights = losses.LossWeights(),
              margin: float = losses.RING_MARGIN, amp_dtype: torch.dtype | None = None) -> RingPrediction:
    """Forward pass and losses for a batch of rings (no backward, no optimiser).

    Args:
        encoder: images ``N x 3 x H x W`` -> object with ``.params`` ``N x 159`` (maybe DDP-wrapped).
        flame: the decoder (buffers only; never trained).
        head: landmark selection (see :class:`LandmarkHead`).
        batch: ``images`` B x R x 3 x H x W, ``landmarks`` B x R x 68 x 2,
            ``confidence`` B x R x 68, optional ``identity`` B x R and ``shape`` B x R x 100
            (the true β, read only when ``weights.true_shape`` > 0).
        consistency: one of :data:`ringnet_lib.losses.CONSISTENCY_MODES`.
        weights: the λ.
        margin: η of the ring loss.
        amp_dtype: autocast dtype for the encoder (e.g. bf16 on CUDA); FLAME and losses stay float32.
    Returns:
        :class:`RingPrediction`.
    """
    if consistency not in losses.CONSISTENCY_MODES:
        raise ValueError(f"consistency must be one of {losses.CONSISTENCY_MODES}, got {consistency!r}")
    images = batch["images"]
    n_rings, ring = images.shape[:2]
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        params = encoder(images.flatten(0, 1)).params.float()  # B·R x 159: one call, shared weights
    ring_params = params.view(n_rings, ring, N_PARAMS)
    _, _, shape, expression = split_params(ring_params)
    identity = batch.get("identity")
    if identity is None:
        identity = losses.default_ring_identity(n_rings, ring, device=images.device)
    index = head.target_index
    target = batch["landmarks"][:, :, index]  # B x R x L x 2
    confidence = batch["confidence"][:, :, index]  # B x R x L

    zero = params.new_zeros(())
    if consistency == "swap":
        # DECA: decode each image with a same-identity partner's β; the landmarks must still fit.
        # Original and swapped decodings go through FLAME together (one call, 2·B·R meshes).
        swapped = losses.swapped_shapes(shape, identity).flatten(0, 1)
        both = decode_landmarks(flame, head, torch.cat([params, params]), torch.cat([params[:, SHAPE], swapped]))
        landmarks2d, swapped2d = both.view(2, n_rings, ring, *both.shape[1:]).unbind(0)
        consistency_term = losses.landmark_loss(swapped2d, target, confidence)
    else:
        shapes = losses.mean_shapes(shape, identity).flatten(0, 1) if consistency == "mean" else None
        landmarks2d = decode_landmarks(flame, head, params, shapes).view(n_rings, ring, -1, 2)
        consistency_term = losses.ring_loss(shape, margin) if consistency == "ring" else zero
    terms = {"consistency": consistency_term,
             "landmarks": losses.landmark_loss(landmarks2d, target, confidence),
             "shape": losses.squared_norm(shape),
             "expression": losses.squared_norm(expression)}
    if weights.true_shape:  # the supervised diagnostic, not RingNet's (see losses.true_shape_loss)
        if "shape" not in batch:
            raise ValueError("w_true_shape > 0 needs the true β of every image (batch['shape']): synthetic data "
                             "has them, photos do not; set w_true_shape to 0")
        terms["true_shape"] = losses.true_shape_loss(shape, batch["shape"].to(shape.dtype))
    total = losses.total_loss(terms, weights)
    return RingPrediction(ring_params, landmarks2d, terms, total)


def initial_params_from_flame(flame: FLAME, head: LandmarkHead, fill: float = 0.8,
                              camera: torch.Tensor | None = None) -> torch.Tensor:
    """A ``159`` starting estimate: the mean head with a camera that frames its landmarks.

    Args:
        flame: the decoder.
        head: which landmarks to frame.
        fill: fraction of the crop the landmarks' larger extent covers.
        camera: ``3`` (s, tx, ty) to use instead (e.g. a dataset's mean camera).
    Returns:
        ``159``: zero pose/shape/expression and a camera from
        :func:`ringnet_lib.camera.camera_looking_at`, so the first projections lie inside the image.
    """
    if camera is not None:
        params = torch.zeros(N_PARAMS)
        params[CAMERA] = torch.as_tensor(camera, dtype=torch.float32).cpu()
        return params
    with torch.no_grad():
        params = torch.zeros(1, N_PARAMS, device=flame.v_template.device)
        pose15 = full_pose_from_ringnet_pose(params[:, POSE])
        points = head(flame(shape=params[:, SHAPE], expression=params[:, EXPRESSION], pose=pose15), pose15)
        params[:, CAMERA] = camera_looking_at(points, fill)
    return params[0].cpu()
