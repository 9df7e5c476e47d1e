"""Synthetic rings rendered on the fly: FLAME heads, a weak-perspective camera, shaded grey renders.

For the quick preset, the tests and CPU runs, and at paper scale on a GPU: no files. A pool
of identities (a random β each) is drawn up front as *parameters* only; each of its images
has its own pose, expression and camera. A ring (one item) is R-1 images of one identity and
1 image of another, as in the paper. The loader carries parameters; :meth:`SyntheticRingSet.render`
turns a batch of them into images and target landmarks on the training device, through the
:class:`~ringnet_lib.decoder.Decoder` and the rasteriser of :mod:`ringnet_lib.data.render`,
so images, landmarks and β agree exactly, and nothing is rendered before the first step.

Determinism: the pool comes from one generator seeded with ``seed``; ring ``i`` is chosen by a
generator seeded with ``(seed, i)``; a render depends only on its parameters. So the set gives
the same batches whatever the order, the number of workers or the device (what exact resume
needs). ``n_identities=None`` draws a fresh identity for every ring instead of a pool.
"""
from __future__ import annotations

import math

import torch

from ..camera import camera_looking_at
from ..decoder import Decoder
from ..params import N_EXPRESSION, N_LANDMARKS, N_POSE, N_SHAPE, join_params
from .render import render

# A grey head lit from the upper right of the camera: the shading shows the surface
# (nose, lips, eye sockets, jaw), so images carry more shape than an outline does.
GREY_ALBEDO = 0.8
LIGHT_DIRECTION = (0.3, 0.4, 1.0)  # towards the light, camera space (+z to the viewer)
AMBIENT, DIFFUSE = 0.25, 0.9
CAMERA_SCALE = 7.5  # the head's landmarks span about 0.16 m: s = 7.5 fills about 60 % of the crop


def render_grey_heads(vertices: torch.Tensor, faces: torch.Tensor, camera: torch.Tensor, image_size: int,
                      chunk: int = 64) -> torch.Tensor:
    """Lambert-shaded grey heads on black, through :func:`ringnet_lib.data.render.render`.

    Args:
        vertices: ``N x V x 3`` FLAME space.
        faces: ``F x 3``.
        camera: ``N x 3`` = (s, tx, ty), the weak perspective of :mod:`ringnet_lib.camera`.
        image_size: side S.
        chunk: images rasterised at once (bounds memory).
    Returns:
        ``N x 3 x S x S`` in [0, 1].
    """
    images = []
    for part, part_camera in zip(vertices.split(chunk), camera.split(chunk)):
        n = part.shape[0]
        light = torch.nn.functional.normalize(part.new_tensor(LIGHT_DIRECTION), dim=0).expand(n, 3)
        image, _ = render(part, faces, part_camera, image_size, torch.full_like(part, GREY_ALBEDO), light,
                          part.new_full((n, 3), AMBIENT), part.new_full((n, 3), DIFFUSE),
                          part.new_zeros(n, 3, image_size, image_size))
        images.append(image)
    return torch.cat(images)


def draw_views(count: int, generator: torch.Generator, expression_std: float, max_yaw_degrees: float
               ) -> dict[str, torch.Tensor]:
    """Per-image draws: pose (global + jaw), expression ψ and the camera's jitter, ``count`` of each.

    Yaw uniform in ±``max_yaw_degrees`` (a rotation about y, symmetric: its sign convention does
    not matter here), pitch ~ N(0, 0.1 rad), jaw opening uniform in [0, 0.15] rad; the camera's
    scale jitters by ±10 % around :data:`CAMERA_SCALE` and its centre by N(0, 0.01).
    """
    pose = torch.zeros(count, N_POSE)
    rotation_y = math.radians(max_yaw_degrees) * (2 * torch.rand(count, generator=generator) - 1)
    pose[:, 0] = 0.1 * torch.randn(count, generator=generator)  # pitch
    pose[:, 1] = rotation_y
    pose[:, 3] = 0.15 * torch.rand(count, generator=generator)  # jaw opening
    expression = expression_std * torch.randn(count, N_EXPRESSION, generator=generator)
    scale = CAMERA_SCALE * (1 + 0.1 * (2 * torch.rand(count, 1, generator=generator) - 1))
    shift = 0.01 * torch.randn(count, 2, generator=generator)
    return {"true_pose": pose, "true_expression": expression, "camera_jitter": torch.cat([scale, shift], dim=1)}


class SyntheticRingSet(torch.utils.data.Dataset):
    """Rings of synthetic FLAME images, keyed by ``(epoch, ring)`` (the epoch does not matter).

    Args:
        n_identities: identities in the pool (a random β each); None: a fresh identity per ring.
        images_per_identity: images drawn per pool identity.
        ring_size: R (R-1 of one identity + 1 of another); at most ``images_per_identity + 1``.
        image_size: side of the square images.
        n_rings: rings per epoch (default: one per pool identity).
        seed: makes everything reproducible.
        shape_std: standard deviation of β.
        expression_std: of ψ.
        max_yaw_degrees: the largest head turn.
    """

    def __init__(self, n_identities: int | None = 32, images_per_identity: int = 6, ring_size: int = 4,
                 image_size: int = 64, n_rings: int | None = None, seed: int = 0, shape_std: float = 1.0,
                 expression_std: float = 0.5, max_yaw_degrees: float = 30.0):
        if ring_size - 1 > images_per_identity:
            raise ValueError(f"ring_size {ring_size} needs {ring_size - 1} images of one identity, but there are "
                             f"only {images_per_identity} per identity (images_per_identity)")
        if n_identities is not None and n_identities < 2:
            raise ValueError("a ring needs at least 2 identities (n_identities >= 2)")
        if n_identities is None and not n_rings:
            raise ValueError("fresh identities (n_identities=None) need n_rings, the rings of one epoch")
        self.ring_size, self.image_size, self.seed = ring_size, image_size, seed
        self.n_identities, self.images_per_identity = n_identities, images_per_identity
        self.shape_std, self.expression_std, self.max_yaw_degrees = shape_std, expression_std, max_yaw_degrees
        self.rings_per_epoch = n_rings or n_identities
        self.pool = None
        if n_identities is not None:
            generator = torch.Generator().manual_seed(seed)
            count = n_identities * images_per_identity
            shapes = shape_std * torch.randn(n_identities, N_SHAPE, generator=generator)
            self.pool = {"true_shape": shapes.repeat_interleave(images_per_identity, 0),
                         **draw_views(count, generator, expression_std, max_yaw_degrees)}

    def __len__(self) -> int:
        return self.rings_per_epoch

    @property
    def n_images(self) -> int:
        """Images in the pool (0 without one)."""
        return 0 if self.pool is None else len(self.pool["true_shape"])

    def ring_indices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool image indices (R) and identities (R) of ring ``index``; deterministic in (seed, index)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        identity = index % self.n_identities
        other = (identity + 1 + torch.randint(self.n_identities - 1, (1,), generator=generator)) % self.n_identities
        own = torch.randperm(self.images_per_identity, generator=generator)[: self.ring_size - 1]
        images = torch.cat([identity * self.images_per_identity + own,
                            other * self.images_per_identity
                            + torch.randint(self.images_per_identity, (1,), generator=generator)])
        identities = torch.cat([torch.full((self.ring_size - 1,), identity), other])
        return images, identities

    def images(self, indices) -> dict[str, torch.Tensor]:
        """The pool's parameters of images ``indices`` (a list or ``N`` tensor), with their ``image_index``."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return {"image_index": indices, **{key: value[indices] for key, value in self.pool.items()}}

    def _fresh_ring(self, index: int) -> dict[str, torch.Tensor]:
        """A ring of two identities drawn for this ring alone (no pool)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        shapes = self.shape_std * torch.randn(2, N_SHAPE, generator=generator)
        identity = torch.tensor([0] * (self.ring_size - 1) + [1])
        return {"identity": identity, "true_shape": shapes[identity],
                **draw_views(self.ring_size, generator, self.expression_std, self.max_yaw_degrees)}

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index = int(key[1] if isinstance(key, tuple) else key)
        if self.pool is None:
            return self._fresh_ring(index)
        images, identities = self.ring_indices(index)
        return {"identity": identities, **self.images(images)}

    def render_images(self, indices, decoder: Decoder) -> dict[str, torch.Tensor]:
        """Pool images ``indices`` rendered: :meth:`images` plus ``images`` N x 3 x S x S, ``landmarks``,
        ``confidence``, ``true_camera`` and ``true_params`` N x 159 (what an encoder should output)."""
        rendered = self.render(self.images(indices), decoder)
        camera = rendered["true_camera"]
        rendered["true_params"] = join_params(camera, rendered["true_pose"].to(camera),
                                              rendered["true_shape"].to(camera), rendered["true_expression"].to(camera))
        return rendered

    @torch.no_grad()
    def render(self, batch: dict, decoder: Decoder) -> dict:
        """Add ``images``, ``landmarks`` (68, normalised), ``confidence`` and ``true_camera`` to a batch of
        parameters (``... x 100`` true_shape, ``... x 50`` true_expression, ``... x 6`` true_pose,
        ``... x 3`` camera_jitter; any leading shape), on the decoder's device."""
        device = decoder.flame.v_template.device
        lead = batch["true_shape"].shape[:-1]
        flat = {key: batch[key].reshape(-1, batch[key].shape[-1]).to(device)
                for key in ("true_shape", "true_expression", "true_pose", "camera_jitter")}
        count = len(flat["true_shape"])
        unframed = decoder(join_params(torch.zeros(count, 3, device=device), flat["true_pose"], flat["true_shape"],
                                       flat["true_expression"]))
        camera = camera_looking_at(unframed.landmarks3d, scale=flat["camera_jitter"][:, 0])
        camera[:, 1:] += flat["camera_jitter"][:, 1:]
        images = render_grey_heads(unframed.vertices, decoder.flame.faces, camera, self.image_size)
        landmarks = torch.zeros(count, N_LANDMARKS, 2, device=device)
        confidence = torch.zeros(count, N_LANDMARKS, device=device)
        landmarks[:, decoder.target_index] = decoder.project(unframed.landmarks3d, camera)
        confidence[:, decoder.target_index] = 1.0
        return {**batch, "images": images.reshape(*lead, *images.shape[1:]),
                "landmarks": landmarks.reshape(*lead, N_LANDMARKS, 2),
                "confidence": confidence.reshape(*lead, N_LANDMARKS), "true_camera": camera.reshape(*lead, 3)}
