"""An in-memory synthetic ring set: FLAME heads, a weak-perspective camera, shaded grey renders.

For the quick preset, tests and CPU runs: no files, thousands of identities in
seconds. Every identity is a random β; each of its images has its own pose,
expression and camera; the image is a grey, Lambert-shaded render (the rasteriser
of :mod:`ringnet_lib.data.render`, without the textures, hair and backgrounds of
:mod:`ringnet_lib.data.synthesize`), and the 68 target landmarks are the FLAME
landmarks pushed through the *same* camera, so images, landmarks and β agree exactly.

A ring (one item) is R-1 images of one identity and 1 image of another, as in
the paper; item ``i`` is chosen by a generator seeded with ``(seed, i)``, so the
set is deterministic whatever order it is read in (what exact resume needs).
"""
from __future__ import annotations

import math

import torch

from ..camera import project_weak_perspective
from ..flame import FLAME
from ..params import full_pose_from_ringnet_pose, join_params
from .step import N_LANDMARKS, LandmarkHead


# A grey head lit from the upper right of the camera: the shading shows the surface
# (nose, lips, eye sockets, jaw), so images carry more shape than an outline does.
GREY_ALBEDO = 0.8
LIGHT_DIRECTION = (0.3, 0.4, 1.0)  # towards the light, camera space (+z to the viewer)
AMBIENT, DIFFUSE = 0.25, 0.9


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
    from ..data.render import render

    images = []
    for part, part_camera in zip(vertices.split(chunk), camera.split(chunk)):
        n = part.shape[0]
        light = torch.nn.functional.normalize(part.new_tensor(LIGHT_DIRECTION), dim=0).expand(n, 3)
        image, _ = render(part, faces, part_camera, image_size, torch.full_like(part, GREY_ALBEDO), light,
                          part.new_full((n, 3), AMBIENT), part.new_full((n, 3), DIFFUSE),
                          part.new_zeros(n, 3, image_size, image_size))
        images.append(image)
    return torch.cat(images)


class InMemoryRingSet(torch.utils.data.Dataset):
    """Rings of synthetic FLAME images, all generated up front.

    Args:
        n_identities: how many random β.
        images_per_identity: images rendered per identity.
        ring_size: R (R-1 of one identity + 1 of another); at most ``images_per_identity + 1``.
        image_size: side of the square images.
        n_rings: items per epoch (default: one ring per identity).
        seed: makes everything reproducible.
        flame: the decoder (the embedded default head when omitted).
        shape_std: standard deviation of β.
        landmarks68: False: targets are FLAME's 51 static landmarks only (the others get confidence 0).
    """

    def __init__(self, n_identities: int = 32, images_per_identity: int = 6, ring_size: int = 4,
                 image_size: int = 64, n_rings: int | None = None, seed: int = 0, flame: FLAME | None = None,
                 shape_std: float = 1.0, expression_std: float = 0.5, max_yaw_degrees: float = 30.0,
                 landmarks68: bool = True):
        if ring_size - 1 > images_per_identity:
            raise ValueError(f"ring_size {ring_size} needs {ring_size - 1} images of one identity, but there are "
                             f"only {images_per_identity} per identity (images_per_identity)")
        if n_identities < 2:
            raise ValueError("a ring needs at least 2 identities")
        self.ring_size, self.image_size, self.seed = ring_size, image_size, seed
        self.n_identities, self.images_per_identity = n_identities, images_per_identity
        self.n_rings = n_identities if n_rings is None else n_rings
        flame = FLAME() if flame is None else flame
        generator = torch.Generator().manual_seed(seed)
        count = n_identities * images_per_identity
        self.shapes = shape_std * torch.randn(n_identities, flame.n_shape, generator=generator)
        yaw = math.radians(max_yaw_degrees) * (2 * torch.rand(count, generator=generator) - 1)
        pose = torch.zeros(count, 6)
        pose[:, 0] = 0.1 * torch.randn(count, generator=generator)  # pitch
        pose[:, 1] = yaw
        pose[:, 3] = 0.15 * torch.rand(count, generator=generator)  # jaw opening
        expression = expression_std * torch.randn(count, flame.n_expression, generator=generator)
        head = LandmarkHead(flame, use_68=landmarks68)
        with torch.no_grad():
            pose15 = full_pose_from_ringnet_pose(pose)
            output = flame(shape=self.shapes.repeat_interleave(images_per_identity, 0), expression=expression,
                           pose=pose15)
            landmarks3d = head(output, pose15)
            centre = landmarks3d[..., :2].mean(1)
            scale = 7.5 * (1 + 0.1 * (2 * torch.rand(count, 1, generator=generator) - 1))
            shift = -centre + 0.01 * torch.randn(count, 2, generator=generator)
            self.cameras = torch.cat([scale, shift], dim=1)
            self.images = render_grey_heads(output.vertices, flame.faces, self.cameras, image_size)
            projected = project_weak_perspective(landmarks3d, self.cameras)
        self.landmarks = torch.zeros(count, N_LANDMARKS, 2)
        self.confidence = torch.zeros(count, N_LANDMARKS)
        self.landmarks[:, head.target_index] = projected
        self.confidence[:, head.target_index] = 1.0
        self.pose, self.expression = pose, expression

    @property
    def mean_camera(self) -> torch.Tensor:
        """``3``: the average (s, tx, ty), a good starting camera for the encoder."""
        return self.cameras.mean(dim=0)

    @property
    def image_params(self) -> torch.Tensor:
        """``N x 159``: the true camera, pose, shape and expression of every image (what an encoder should output)."""
        return join_params(self.cameras, self.pose, self.shapes.repeat_interleave(self.images_per_identity, 0),
                           self.expression)

    @property
    def max_ring_size(self) -> int:
        return self.images_per_identity + 1

    def __len__(self) -> int:
        return self.n_rings

    def ring_indices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image indices (R) and identities (R) of ring ``index``; deterministic in (seed, index)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        identity = index % self.n_identities
        other = (identity + 1 + torch.randint(self.n_identities - 1, (1,), generator=generator)) % self.n_identities
        own = torch.randperm(self.images_per_identity, generator=generator)[: self.ring_size - 1]
        images = torch.cat([identity * self.images_per_identity + own,
                            other * self.images_per_identity
                            + torch.randint(self.images_per_identity, (1,), generator=generator)])
        identities = torch.cat([torch.full((self.ring_size - 1,), identity), other])
        return images, identities

    def __getitem__(self, index: int) -> dict:
        images, identities = self.ring_indices(index)
        return {"images": self.images[images], "landmarks": self.landmarks[images],
                "confidence": self.confidence[images], "identity": identities, "shape": self.shapes[identities]}
