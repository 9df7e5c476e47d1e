"""An in-memory synthetic ring set: FLAME heads, a weak-perspective camera, silhouette images.

For tests and quick CPU runs that must not depend on :mod:`ringnet_lib.data`.
Every identity is a random β; each of its images has its own pose, expression
and camera; the image is a depth-shaded splat of the projected vertices (no
rasteriser needed), and the 68 target landmarks are the FLAME landmarks pushed
through the *same* camera, so images, landmarks and β agree exactly.

A ring (one item) is R-1 images of one identity and 1 image of another, as in
the paper; item ``i`` is chosen by a generator seeded with ``(seed, i)``, so the
set is deterministic whatever order it is read in (what exact resume needs).
"""
from __future__ import annotations

import math

import torch

from ..camera import normalized_to_pixels, project_weak_perspective
from ..flame import FLAME
from ..params import full_pose_from_ringnet_pose
from .step import N_LANDMARKS, LandmarkHead


def splat_silhouettes(vertices: torch.Tensor, camera: torch.Tensor, image_size: int) -> torch.Tensor:
    """Depth-shaded silhouette images from projected vertices.

    Args:
        vertices: ``N x V x 3`` FLAME space.
        camera: ``N x 3`` = (s, tx, ty).
        image_size: side S.
    Returns:
        ``N x 3 x S x S`` in [0, 1]: background 0, the head brighter where closer.
    """
    n_images = vertices.shape[0]
    pixels = normalized_to_pixels(project_weak_perspective(vertices, camera), image_size).floor().long()
    inside = ((pixels >= 0) & (pixels < image_size)).all(dim=-1)  # N x V
    depth = vertices[..., 2]
    shade = 0.35 + 0.65 * (depth - depth.amin(1, keepdim=True)) / (depth.amax(1, keepdim=True)
                                                                    - depth.amin(1, keepdim=True) + 1e-8)
    flat = (torch.arange(n_images)[:, None] * image_size * image_size
            + pixels[..., 1].clamp(0, image_size - 1) * image_size + pixels[..., 0].clamp(0, image_size - 1))
    image = torch.zeros(n_images * image_size * image_size)
    image.scatter_reduce_(0, flat[inside], shade[inside], reduce="amax")
    image = image.view(n_images, 1, image_size, image_size)
    # Close the holes between splatted vertices at high resolutions.
    image = torch.nn.functional.max_pool2d(image, kernel_size=3, stride=1, padding=1)
    return image.expand(-1, 3, -1, -1).contiguous()


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
    """

    def __init__(self, n_identities: int = 32, images_per_identity: int = 6, ring_size: int = 4,
                 image_size: int = 64, n_rings: int | None = None, seed: int = 0, flame: FLAME | None = None,
                 shape_std: float = 1.0, expression_std: float = 0.5, max_yaw_degrees: float = 30.0):
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
        head = LandmarkHead(flame)
        with torch.no_grad():
            pose15 = full_pose_from_ringnet_pose(pose)
            output = flame(shape=self.shapes.repeat_interleave(images_per_identity, 0), expression=expression,
                           pose=pose15)
            landmarks3d = head(output, pose15)
            centre = landmarks3d[..., :2].mean(1)
            scale = 7.5 * (1 + 0.1 * (2 * torch.rand(count, 1, generator=generator) - 1))
            shift = -centre + 0.01 * torch.randn(count, 2, generator=generator)
            self.cameras = torch.cat([scale, shift], dim=1)
            self.images = splat_silhouettes(output.vertices, self.cameras, image_size)
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
