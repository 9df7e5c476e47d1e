"""Synthetic identity-grouped face images with exact ground truth.

    python -m ringnet_lib.data.synthesize --identities 8 --per-identity 6 --size 224 --out data_samples/synthetic

For each identity, β is drawn from FLAME's prior (β ~ N(0, I): FLAME's shape
directions are scaled by their standard deviations), with its own skin tone, texture,
brows, eyes and hair. Each of its K images draws an expression ψ, a jaw opening, a
head pose (yaw, pitch, roll), a light, a background and a loose crop (the face fills
about 45-60 % of the crop, its centre jittered), then renders with
:mod:`ringnet_lib.data.render`. Everything is written in the dataset format of
:mod:`ringnet_lib.data.dataset`.

Determinism: identity ``i`` takes its random numbers from
``default_rng([seed, i])`` and its image ``k`` from ``default_rng([seed, i, k + 1])``,
so a given (seed, i, k) gives the same picture whatever the batch size or N.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from ..camera import camera_looking_at, normalized_to_pixels, project_weak_perspective
from ..flame import FLAME
from ..landmarks import Landmarks68
from ..params import N_EXPRESSION, N_SHAPE
from . import appearance, render
from .dataset import write_metadata

# Confidence given to a landmark hidden behind the face itself: its position is exact
# (ground truth), but a detector would be guessing there. Outside the image: 0.
OCCLUDED_CONFIDENCE = 0.25
VISIBILITY_TOLERANCE_M = 0.004  # depth slack for "visible", in metres


@dataclasses.dataclass
class SynthConfig:
    """What the generator draws; the fields are the CLI flags."""

    identities: int = 8
    per_identity: int = 6
    size: int = 224
    seed: int = 0
    shape_std: float = 1.0  # β ~ N(0, shape_std² I)
    expression_std: float = 0.3  # ψ ~ N(0, expression_std² I)
    yaw_deg: float = 45.0  # uniform in ±yaw
    pitch_deg: float = 20.0
    roll_deg: float = 15.0
    jaw_open_max: float = 0.3  # radians about x
    fill: tuple[float, float] = (0.45, 0.6)  # landmark extent / crop width
    centre_jitter: float = 0.08  # normalised units
    image_format: str = "jpg"  # or png
    batch: int = 32


@dataclasses.dataclass
class SynthBatch:
    """A rendered batch; landmarks in pixels of the S x S image."""

    images: torch.Tensor  # B x 3 x S x S in [0, 1]
    landmarks: torch.Tensor  # B x 68 x 2 pixels (u, v)
    confidence: torch.Tensor  # B x 68
    shape: torch.Tensor  # B x 100
    expression: torch.Tensor  # B x 50
    pose: torch.Tensor  # B x 15
    camera: torch.Tensor  # B x 3
    vertices: torch.Tensor  # B x V x 3 posed meshes (FLAME space)
    fragments: render.Fragments


def euler_to_axis_angle(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotation R = R_y(yaw) R_x(pitch) R_z(roll) (radians) as axis-angle ``N x 3``.

    Positive yaw turns the face towards +x (image right), positive pitch tilts it down.
    """
    return Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], axis=1)).as_rotvec()


class Synthesizer:
    """Draws and renders synthetic faces for one FLAME model (the default head unless given)."""

    def __init__(self, config: SynthConfig, flame: FLAME | None = None):
        self.config = config
        self.flame = flame if flame is not None else FLAME()
        self.landmarks68 = Landmarks68(self.flame)  # (B x V x 3, B x 15) -> B x 68 x 3, contour by yaw
        with torch.no_grad():
            template = self.flame.v_template[None]
            lmk = self.landmarks68(template, template.new_zeros(1, 15))[0]
        self.template = template[0].double().numpy()
        self.masks = appearance.feature_masks(self.template, lmk.double().numpy())

    def identity(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """β (100,) and per-vertex albedo (V x 3) of identity ``i``."""
        rng = np.random.default_rng([self.config.seed, i])
        beta = rng.normal(scale=self.config.shape_std, size=N_SHAPE)
        return beta, appearance.random_albedo(self.template, self.masks, rng)

    def image_parameters(self, i: int, k: int) -> dict[str, np.ndarray]:
        """Per-image draws for image ``k`` of identity ``i``: ψ, pose 15, light, crop."""
        c, rng = self.config, np.random.default_rng([self.config.seed, i, k + 1])
        pose = np.zeros(15)
        yaw, pitch, roll = (np.radians(rng.uniform(-a, a, 1)) for a in (c.yaw_deg, c.pitch_deg, c.roll_deg))
        pose[:3] = euler_to_axis_angle(yaw, pitch, roll)[0]
        pose[6] = rng.uniform(0, c.jaw_open_max)
        pose[7:9] = rng.uniform(-0.04, 0.04, 2)
        direction, ambient, diffuse = appearance.random_lighting(1, rng)
        return {"expression": rng.normal(scale=c.expression_std, size=N_EXPRESSION), "pose": pose,
                "light": direction[0], "ambient": ambient[0], "diffuse": diffuse[0],
                "fill": rng.uniform(*c.fill), "shift": rng.uniform(-c.centre_jitter, c.centre_jitter, 2),
                "background_seed": rng.integers(2**31)}

    @torch.no_grad()
    def render_batch(self, pairs: list[tuple[int, int]]) -> SynthBatch:
        """Render the images ``(identity, k)`` listed in ``pairs``."""
        size = self.config.size
        ids = {i: self.identity(i) for i in sorted({i for i, _ in pairs})}
        draws = [self.image_parameters(i, k) for i, k in pairs]
        stack = lambda values: torch.as_tensor(np.stack(values), dtype=torch.float32)
        shape = stack([ids[i][0] for i, _ in pairs])
        albedo = stack([ids[i][1] for i, _ in pairs])
        expression, pose = stack([d["expression"] for d in draws]), stack([d["pose"] for d in draws])
        vertices = self.flame(shape=shape, expression=expression, pose=pose).vertices
        landmarks3d = self.landmarks68(vertices, pose)  # B x 68 x 3
        camera = camera_looking_at(landmarks3d, fill=1.0)
        # Loose crop: the landmarks fill `fill` of the crop; shift the face off centre a little.
        camera[:, 0] *= stack([d["fill"] for d in draws])
        camera[:, 1:] += stack([d["shift"] for d in draws]) / camera[:, :1]
        background = torch.cat([appearance.random_background(1, size, np.random.default_rng(d["background_seed"]))
                                for d in draws])
        images, fragments = render.render(vertices, self.flame.faces, camera, size, albedo,
                                          stack([d["light"] for d in draws]), stack([d["ambient"] for d in draws]),
                                          stack([d["diffuse"] for d in draws]), background)
        pixels = normalized_to_pixels(project_weak_perspective(landmarks3d, camera), size)
        confidence = landmark_confidence(pixels, camera[:, :1] * landmarks3d[..., 2], fragments.depth,
                                         VISIBILITY_TOLERANCE_M * camera[:, :1])
        return SynthBatch(images, pixels, confidence, shape, expression, pose, camera, vertices, fragments)


def landmark_confidence(pixels: torch.Tensor, depth: torch.Tensor, zbuffer: torch.Tensor,
                        tolerance: torch.Tensor) -> torch.Tensor:
    """Visibility-based confidence of projected landmarks.

    Args:
        pixels: ``B x L x 2`` pixel (u, v).
        depth: ``B x L`` the landmarks' depths in the renderer's units (s * z).
        zbuffer: ``B x S x S`` from :func:`render.rasterize` (-inf on the background).
        tolerance: ``B x 1`` depth slack.
    Returns:
        ``B x L``: 1 where the landmark is the nearest surface at its pixel (within the
        slack, over its 3 x 3 neighbourhood, so silhouette points count as seen),
        :data:`OCCLUDED_CONFIDENCE` where something is in front, 0 outside the image.
    """
    size = zbuffer.shape[-1]
    # Nearest surface around each pixel: the 3 x 3 minimum of the z-buffer is the farthest front
    # surface, so a landmark on the silhouette edge is not called hidden by the background.
    front = -torch.nn.functional.max_pool2d(-zbuffer.nan_to_num(neginf=-1e9)[:, None], 3, 1, 1)[:, 0]
    col, row = pixels[..., 0].floor().long(), pixels[..., 1].floor().long()
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    batch = torch.arange(len(pixels))[:, None].expand_as(col)
    nearest = front[batch, row.clamp(0, size - 1), col.clamp(0, size - 1)]
    visible = depth >= nearest - tolerance
    confidence = torch.where(visible, 1.0, OCCLUDED_CONFIDENCE)
    return confidence * inside


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B x 3 x S x S`` float [0, 1] to ``B x S x S x 3`` uint8."""
    return (images.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def synthesize_dataset(config: SynthConfig, out: str | Path, flame: FLAME | None = None,
                       progress: bool = True, description: str = "",
                       synthesizer: Synthesizer | None = None) -> Path:
    """Render ``identities x per_identity`` images into ``out`` in the dataset format. Returns the metadata path.

    ``flame`` or a ready ``synthesizer`` (whose config must be ``config``) saves the model load.
    """
    from PIL import Image

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    synth = synthesizer if synthesizer is not None else Synthesizer(config, flame)
    pairs = [(i, k) for i in range(config.identities) for k in range(config.per_identity)]
    names, fields = [], {key: [] for key in ("landmarks", "confidence", "shape", "expression", "pose", "camera")}
    save_options = {"quality": 92} if config.image_format == "jpg" else {}
    with tqdm(total=len(pairs), desc="rendering", unit="img", disable=not progress, mininterval=1.0) as bar:
        for start in range(0, len(pairs), config.batch):
            chunk = pairs[start:start + config.batch]
            batch = synth.render_batch(chunk)
            for (i, k), pixels in zip(chunk, to_uint8(batch.images)):
                name = f"images/id{i:05d}_{k:03d}.{config.image_format}"
                Image.fromarray(pixels).save(out / name, **save_options)
                names.append(name)
            for key in fields:
                fields[key].append(getattr(batch, key).numpy())
            bar.update(len(chunk))
    with torch.no_grad():
        betas = torch.as_tensor(np.stack([synth.identity(i)[0] for i in range(config.identities)]), dtype=torch.float32)
        neutral = synth.flame(shape=betas).vertices.numpy()
    arrays = {key: np.concatenate(value) for key, value in fields.items()}
    info = json.dumps({"generator": "ringnet_lib.data.synthesize", "config": dataclasses.asdict(config),
                       "model": str(synth.flame.source), "command": description})
    return write_metadata(out, names, np.array([i for i, _ in pairs]),
                          [f"synthetic_{i:05d}" for i in range(config.identities)],
                          neutral_vertices=neutral.astype(np.float32), faces=synth.flame.faces.numpy(),
                          description=info, **arrays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=SynthConfig.identities)
    parser.add_argument("--per-identity", type=int, default=SynthConfig.per_identity)
    parser.add_argument("--size", type=int, default=SynthConfig.size)
    parser.add_argument("--seed", type=int, default=SynthConfig.seed)
    parser.add_argument("--format", choices=("jpg", "png"), default=SynthConfig.image_format)
    parser.add_argument("--batch", type=int, default=SynthConfig.batch)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    args = parser.parse_args(argv)
    if args.identities < 2 or args.per_identity < 2:
        parser.error("a ring needs at least 2 identities and 2 images per identity")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SynthConfig(identities=args.identities, per_identity=args.per_identity, size=args.size,
                         seed=args.seed, image_format=args.format, batch=args.batch)
    command = " ".join(["python -m ringnet_lib.data.synthesize"] + (sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    synthesizer = Synthesizer(config)
    loaded = time.perf_counter()
    path = synthesize_dataset(config, args.out, description=command, synthesizer=synthesizer)
    seconds = time.perf_counter() - loaded
    n = args.identities * args.per_identity
    print(f"wrote {n} images and {path}: model load {loaded - start:.1f} s, then {seconds:.1f} s "
          f"({n / seconds:.1f} images/s rendered and written)")


if __name__ == "__main__":
    main()
