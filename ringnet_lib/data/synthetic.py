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

from ..camera import camera_looking_at, pixels_to_normalized
from ..decoder import Decoder
from ..params import N_EXPRESSION, N_LANDMARKS, N_POSE, N_SHAPE, join_params
from .render import render
from .sampler import collate_rings as collate
from .synthesize import SynthConfig, Synthesizer

STYLES = ("grey", "textured")

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

    Two styles of picture:

    * ``"grey"`` (the quick preset): Lambert-shaded grey heads on black, a fixed light, yaw ±30°;
      the pool's parameters are drawn up front (:func:`draw_views`).
    * ``"textured"`` (the paper preset): the textured generator's pictures
      (:class:`~ringnet_lib.data.synthesize.Synthesizer`: skin, brows, eyes, hair, random light and
      background, yaw ±45°, pitch, roll, loose crops, visibility-based confidences), drawn per
      image from ``(seed, identity, image)`` in the loader's workers, so a pool costs no memory and
      every identity and view is new until the pool repeats.

    Args:
        n_identities: identities in the pool (a random β each); None: a fresh pair for every ring.
        images_per_identity: images drawn per pool identity.
        ring_size: R (R-1 of one identity + 1 of another); at most ``images_per_identity + 1``.
        image_size: side of the square images.
        n_rings: rings per epoch (default: one per pool identity).
        seed: makes everything reproducible.
        shape_std: standard deviation of β.
        expression_std: of ψ (grey; the textured style uses the generator's).
        max_yaw_degrees: the largest head turn (grey).
        style: ``"grey"`` or ``"textured"``.
        decoder: the model the textured style draws its appearance on (its template and landmarks);
            default: the embedded default head.
    """

    def __init__(self, n_identities: int | None = 32, images_per_identity: int = 6, ring_size: int = 4,
                 image_size: int = 64, n_rings: int | None = None, seed: int = 0, shape_std: float = 1.0,
                 expression_std: float = 0.5, max_yaw_degrees: float = 30.0, style: str = "grey",
                 decoder: Decoder | None = None):
        if ring_size - 1 > images_per_identity:
            raise ValueError(f"ring_size {ring_size} needs {ring_size - 1} images of one identity, but there are "
                             f"only {images_per_identity} per identity (images_per_identity); lower ring_size to "
                             f"at most {images_per_identity + 1} or raise images_per_identity")
        if n_identities is not None and n_identities < 2:
            raise ValueError("a ring needs at least 2 identities (n_identities >= 2)")
        if n_identities is None and not n_rings:
            raise ValueError("fresh identities (n_identities=None) need n_rings, the rings of one epoch")
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.ring_size, self.image_size, self.seed, self.style = ring_size, image_size, seed, style
        self.n_identities, self.images_per_identity = n_identities, images_per_identity
        self.shape_std, self.expression_std, self.max_yaw_degrees = shape_std, expression_std, max_yaw_degrees
        self.rings_per_epoch = n_rings or n_identities
        self.pool, self.synthesizer = None, None
        if style == "textured":
            self.synthesizer = Synthesizer(SynthConfig(identities=max(2, n_identities or 2),
                                                       per_identity=images_per_identity, size=image_size, seed=seed,
                                                       shape_std=shape_std), decoder)
        elif n_identities is not None:
            generator = torch.Generator().manual_seed(seed)
            count = n_identities * images_per_identity
            shapes = shape_std * torch.randn(n_identities, N_SHAPE, generator=generator)
            self.pool = {"true_shape": shapes.repeat_interleave(images_per_identity, 0),
                         **draw_views(count, generator, expression_std, max_yaw_degrees)}

    def __len__(self) -> int:
        return self.rings_per_epoch

    @property
    def n_images(self) -> int:
        """Images in the pool (0 for fresh identities)."""
        return 0 if self.n_identities is None else self.n_identities * self.images_per_identity

    def ring_indices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool image indices (R) and identities (R) of ring ``index``; deterministic in (seed, index).

        Fresh identities: ring ``index`` shows identities ``2 index`` and ``2 index + 1``, never seen again.
        """
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.n_identities is None:
            identity, other = 2 * index, torch.tensor([2 * index + 1])
        else:
            identity = index % self.n_identities
            other = (identity + 1 + torch.randint(self.n_identities - 1, (1,), generator=generator)) \
                % self.n_identities
        own = torch.randperm(self.images_per_identity, generator=generator)[: self.ring_size - 1]
        images = torch.cat([identity * self.images_per_identity + own,
                            other * self.images_per_identity
                            + torch.randint(self.images_per_identity, (1,), generator=generator)])
        identities = torch.cat([torch.full((self.ring_size - 1,), identity), other])
        return images, identities

    def images(self, indices) -> dict[str, torch.Tensor]:
        """The parameters of images ``indices`` (a list or ``N`` tensor of image numbers), with their
        ``image_index``: the grey pool's rows, or the textured generator's draws."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        if self.synthesizer is not None:
            pairs = [(int(i) // self.images_per_identity, int(i) % self.images_per_identity) for i in indices]
            return {"image_index": indices, **self.synthesizer.draw(pairs)}
        return {"image_index": indices, **{key: value[indices] for key, value in self.pool.items()}}

    def _fresh_grey_ring(self, index: int) -> dict[str, torch.Tensor]:
        """A grey ring of two identities drawn for this ring alone (no pool)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        shapes = self.shape_std * torch.randn(2, N_SHAPE, generator=generator)
        identity = torch.tensor([0] * (self.ring_size - 1) + [1])
        return {"identity": identity, "true_shape": shapes[identity],
                **draw_views(self.ring_size, generator, self.expression_std, self.max_yaw_degrees)}

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index = int(key[1] if isinstance(key, tuple) else key)
        if self.pool is None and self.synthesizer is None:
            return self._fresh_grey_ring(index)
        images, identities = self.ring_indices(index)
        return {"identity": identities, **self.images(images)}

    @torch.no_grad()
    def mean_camera(self, decoder: Decoder, count: int | None = None) -> torch.Tensor:
        """``3``: the average camera (s, tx, ty) of the first ``count`` pool images (default: the whole grey
        pool, 2,000 textured ones, or 64 images of fresh rings): the encoder's starting camera, so that
        its first landmarks land where the data's are."""
        if self.n_identities is None:
            batch = collate([self[i] for i in range(max(1, 64 // self.ring_size))])
        else:
            count = count or (self.n_images if self.pool is not None else 2000)
            batch = self.images(torch.arange(min(count, self.n_images)))
        cameras = [self.render(_chunk(batch, rows), decoder, images=False)["true_camera"]
                   for rows in torch.arange(len(batch["true_shape"])).split(500)]
        return torch.cat(cameras).reshape(-1, 3).mean(dim=0).cpu()

    @torch.no_grad()
    def render(self, batch: dict, decoder: Decoder, images: bool = True) -> dict:
        """Add ``images``, ``landmarks`` (68, normalised), ``confidence`` and ``true_camera`` to a batch of
        parameters (any leading shape, e.g. ``B x R``), on the decoder's device; ``images=False``: the camera
        and landmarks only (no rasterising)."""
        device = decoder.flame.v_template.device
        lead = batch["true_shape"].shape[:-1]
        flat = {key: value.reshape(-1, *value.shape[len(lead):]).to(device) for key, value in batch.items()
                if key not in ("identity", "image_index")}
        count = len(flat["true_shape"])
        landmarks = torch.zeros(count, N_LANDMARKS, 2, device=device)
        confidence = torch.zeros(count, N_LANDMARKS, device=device)
        if self.synthesizer is not None and not images:
            unframed, camera = self.synthesizer.frame(flat, decoder)
            picture = None
            landmarks[:, decoder.target_index] = decoder.project(unframed.landmarks3d, camera)
        elif self.synthesizer is not None:
            rendered = self.synthesizer.render_drawn(flat, decoder)
            camera, picture = rendered.camera, rendered.images
            landmarks[:, decoder.target_index] = pixels_to_normalized(rendered.landmarks, self.image_size)
            confidence[:, decoder.target_index] = rendered.confidence
        else:
            unframed = decoder(join_params(torch.zeros(count, 3, device=device), flat["true_pose"],
                                           flat["true_shape"], flat["true_expression"]))
            camera = camera_looking_at(unframed.landmarks3d, scale=flat["camera_jitter"][:, 0])
            camera[:, 1:] += flat["camera_jitter"][:, 1:]
            picture = render_grey_heads(unframed.vertices, decoder.flame.faces, camera, self.image_size) \
                if images else None
            landmarks[:, decoder.target_index] = decoder.project(unframed.landmarks3d, camera)
            confidence[:, decoder.target_index] = 1.0
        out = {**batch, "landmarks": landmarks.reshape(*lead, N_LANDMARKS, 2),
               "confidence": confidence.reshape(*lead, N_LANDMARKS), "true_camera": camera.reshape(*lead, 3)}
        for key in ("albedo", "light", "ambient", "diffuse", "fill", "shift", "background"):
            out.pop(key, None)  # the textured draws: spent on the picture
        if images and picture is not None:
            out["images"] = picture.reshape(*lead, *picture.shape[1:])
        return out

    def render_images(self, indices, decoder: Decoder) -> dict[str, torch.Tensor]:
        """Pool images ``indices`` rendered: :meth:`images` plus ``images`` N x 3 x S x S, ``landmarks``,
        ``confidence``, ``true_camera`` and ``true_params`` N x 159 (what an encoder should output)."""
        rendered = self.render(self.images(indices), decoder)
        camera = rendered["true_camera"]
        rendered["true_params"] = join_params(camera, rendered["true_pose"].to(camera),
                                              rendered["true_shape"].to(camera), rendered["true_expression"].to(camera))
        return rendered


def _chunk(batch: dict, rows: torch.Tensor) -> dict:
    return {key: value[rows] for key, value in batch.items()}
