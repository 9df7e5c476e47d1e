"""Synthetic identity-grouped face images with exact ground truth, written as a dataset folder.

    python -m ringnet_lib.data.synthesize --identities 200 --per-identity 12 --size 224 --out data/synth

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
import warnings
from dataclasses import field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..camera import camera_looking_at, normalized_to_pixels
from ..checks import check_memory, memory_available
from ..cli import ConfigError, add_arguments, flag, non_finite_field
from ..decoder import Decoder
from ..landmarks import head_rotation
from ..params import GLOBAL, JAW, N_EXPRESSION, N_FULL_POSE, N_PARAMS, N_SHAPE, join_params, joint_pose
from . import appearance, render
from .dataset import METADATA_NAME, DatasetExistsError, check_output_folder, new_dataset_folder, write_metadata

# `python -m ringnet_lib.data.synthesize` imports the package ringnet_lib.data first, whose __init__ imports this
# module (through .synthetic), so runpy warns, on every run, that it executes a second copy as __main__. That copy
# is harmless: main() uses its own functions and classes throughout, and the errors it catches come from other
# modules. The warning is silenced for this module alone, rather than making the package's imports lazy.
warnings.filterwarnings("ignore", message=r"'ringnet_lib\.data\.synthesize' found in sys\.modules",
                        category=RuntimeWarning)

# Confidence given to a landmark hidden behind the face itself: its position is exact
# (ground truth), but a detector would be guessing there. Outside the image: 0.
OCCLUDED_CONFIDENCE = 0.25
VISIBILITY_TOLERANCE_M = 0.004  # depth slack for "visible", in metres

# Memory, to refuse what cannot fit before allocating anything (SynthConfig.memory_needed).
# Rendering: measured 52-92 bytes per pixel of a batch (peak RSS, 256 to 1,800 px, batches of 1 to 8: the
# background drawn in float64, the z-buffer, barycentrics, face indices, the shaded image); 128 leaves a margin.
RENDER_BYTES_PER_PIXEL = 128
# ... and per image of a batch, whatever its size: the albedo (V x 3 in float64 and float32), FLAME's
# intermediates (measured about 0.5 MB an image) and the renderer's triangle tables.
RENDER_BYTES_PER_IMAGE = 2**20
# Kept for every image until metadata.npz is written: 1.5 kB of float32 ground truth (held twice while the
# batches are concatenated), the (identity, k) pair and the file name as Python objects, and the float64 copy
# of the landmarks that write_metadata's validation makes.
BYTES_PER_IMAGE = 8 * 2**10
# Kept for every identity: its neutral mesh (FLAME's 5,023 vertices x 3 float32 = 60 kB), β and its name.
BYTES_PER_IDENTITY = 64 * 2**10
LIBRARY_BYTES = 2**30  # torch, numpy and the model (measured 0.7 GB of RSS once the model is loaded)


def _option(default, help: str, group: str):
    return field(default=default, metadata={"help": help, "group": group})


@dataclasses.dataclass
class SynthConfig:
    """What the generator draws; the fields are the CLI flags."""

    identities: int = _option(8, "identities (a random β each)", "identities")
    per_identity: int = _option(6, "images per identity", "identities")
    seed: int = _option(0, "seed: (seed, identity, image) fixes every picture, whatever the batch", "identities")
    shape_std: float = _option(1.0, "β ~ N(0, shape_std² I); FLAME's directions are scaled by their standard "
                                    "deviations, so 1 is FLAME's prior", "identities")
    expression_std: float = _option(0.3, "ψ ~ N(0, expression_std² I)", "views")
    yaw_deg: float = _option(45.0, "yaw uniform in ±yaw_deg; positive turns the face to the subject's right "
                                   "(the sign of ringnet_lib.landmarks)", "views")
    pitch_deg: float = _option(20.0, "pitch uniform in ±pitch_deg; positive tips the face down", "views")
    roll_deg: float = _option(15.0, "roll uniform in ±roll_deg; positive tilts the head towards the subject's "
                                    "right shoulder", "views")
    jaw_open_max: float = _option(0.3, "jaw opening uniform in [0, jaw_open_max] radians", "views")
    size: int = _option(224, "side of the square images, pixels", "pictures")
    fill_min: float = _option(0.45, "the landmarks' extent covers at least this fraction of the crop (a loose "
                                    "crop, as photo crops are)", "pictures")
    fill_max: float = _option(0.6, "... and at most this fraction", "pictures")
    centre_jitter: float = _option(0.08, "shift of the face's centre, in normalised units (the crop spans 2), "
                                         "uniform in ±centre_jitter", "pictures")
    image_format: str = _option("jpg", "jpg or png", "pictures")
    batch: int = _option(32, "images rendered at once", "speed")

    def validate(self) -> None:
        """One-line :class:`ConfigError` naming the field and its flag, for values the generator cannot use
        (each field is checked), then for a request that cannot fit in this machine's memory."""
        bad = non_finite_field(self)  # NaN passes every comparison below, and inf overflows later
        if bad is not None:
            self._fail(bad, "must be a finite number")
        checks = [("identities", self.identities >= 2, "must be >= 2 (a ring needs two people)"),
                  ("per_identity", self.per_identity >= 2, "must be >= 2 (a ring needs two views of a person)"),
                  ("seed", self.seed >= 0, "must be >= 0 (numpy's seeds are non-negative)"),
                  ("size", self.size >= 16, "must be >= 16 pixels"),
                  ("batch", self.batch >= 1, "must be >= 1"),
                  ("fill_min", self.fill_min > 0, "must be > 0 (the face's share of the crop)"),
                  ("fill_max", self.fill_min <= self.fill_max <= 1.5, "must lie in [fill_min, 1.5]"),
                  ("image_format", self.image_format in ("jpg", "png"), "must be jpg or png"),
                  *[(name, getattr(self, name) >= 0, "must be >= 0") for name in NON_NEGATIVE_FIELDS]]
        for name, ok, message in checks:
            if not ok:
                self._fail(name, message)
        self._check_memory()

    def _fail(self, name: str, message: str) -> NoReturn:
        raise ConfigError(f"{name} ({flag(name)}): {message}, got {getattr(self, name)!r}")

    def memory_needed(self) -> dict[str, float]:
        """Bytes that :func:`synthesize_dataset` holds at once besides the libraries: ``render``, one batch
        being rendered, and ``metadata``, what is kept for every image and identity until ``metadata.npz`` is
        written; ``render_one``, the render of a batch of one image."""
        images = self.identities * self.per_identity
        render_one = RENDER_BYTES_PER_PIXEL * self.size ** 2 + RENDER_BYTES_PER_IMAGE
        return {"render": min(self.batch, images) * render_one, "render_one": render_one,
                "metadata": images * BYTES_PER_IMAGE + self.identities * BYTES_PER_IDENTITY}

    def _check_memory(self) -> None:
        """Refuse, before anything is allocated, what needs more than the machine's memory, naming the flag
        that asks for most of it: the number of images, their side, or the batch."""
        needed = self.memory_needed()
        if needed["metadata"] >= needed["render"]:
            name = f"identities (--identities {self.identities} x --per-identity {self.per_identity})"
            what_to_do = ("every image's landmarks and ground truth and every identity's mesh stay in memory until "
                          "metadata.npz is written: lower --identities or --per-identity")
        elif LIBRARY_BYTES + needed["metadata"] + needed["render_one"] > memory_available():
            name, what_to_do = f"size (--size {self.size})", "images are rendered at this side: lower --size"
        else:
            name = f"batch (--batch {self.batch})"
            what_to_do = f"{self.batch} images of {self.size} px are rendered at once: lower --batch"
        try:
            check_memory(name, LIBRARY_BYTES + needed["render"] + needed["metadata"], what_to_do)
        except ValueError as error:
            raise ConfigError(str(error)) from None


NON_NEGATIVE_FIELDS = ("shape_std", "expression_std", "yaw_deg", "pitch_deg", "roll_deg", "jaw_open_max",
                       "centre_jitter")


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


class Synthesizer:
    """Draws and renders synthetic faces for one model (the embedded default head unless given)."""

    def __init__(self, config: SynthConfig, decoder: Decoder | None = None):
        self.config = config
        self.decoder = decoder if decoder is not None else Decoder()
        with torch.no_grad():
            lmk = self.decoder(torch.zeros(1, N_PARAMS)).landmarks3d[0]  # the mean head, unposed
        self.template = self.decoder.flame.v_template.double().numpy()
        self.masks = appearance.feature_masks(self.template, lmk.double().numpy())

    def identity(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """β (100,) and per-vertex albedo (V x 3) of identity ``i``."""
        rng = np.random.default_rng([self.config.seed, i])
        beta = rng.normal(scale=self.config.shape_std, size=N_SHAPE)
        return beta, appearance.random_albedo(self.template, self.masks, rng)

    def image_parameters(self, i: int, k: int) -> dict[str, np.ndarray]:
        """Per-image draws for image ``k`` of identity ``i``: ψ, pose 15, light, crop."""
        c, rng = self.config, np.random.default_rng([self.config.seed, i, k + 1])
        pose = np.zeros(N_FULL_POSE)
        yaw, pitch, roll = (rng.uniform(-a, a, 1) for a in (c.yaw_deg, c.pitch_deg, c.roll_deg))
        pose[joint_pose(GLOBAL)] = head_rotation(yaw, pitch, roll)[0]
        jaw = joint_pose(JAW)
        pose[jaw.start] = rng.uniform(0, c.jaw_open_max)  # opening: about x
        pose[jaw.start + 1:jaw.stop] = rng.uniform(-0.04, 0.04, 2)
        direction, ambient, diffuse = appearance.random_lighting(1, rng)
        return {"expression": rng.normal(scale=c.expression_std, size=N_EXPRESSION), "pose": pose,
                "light": direction[0], "ambient": ambient[0], "diffuse": diffuse[0],
                "fill": rng.uniform(c.fill_min, c.fill_max),
                "shift": rng.uniform(-c.centre_jitter, c.centre_jitter, 2),
                "background_seed": rng.integers(2**31)}

    def draw(self, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """Everything random about the images ``(identity, k)`` in ``pairs``, as CPU tensors (cheap; no FLAME,
        no rendering): ``true_shape`` N x 100, ``albedo`` N x V x 3, ``true_expression`` N x 50, ``true_pose``
        N x 6 (global, jaw), ``light``, ``ambient``, ``diffuse`` N x 3, ``fill`` N, ``shift`` N x 2, ``background``
        N x 3 x S x S. A DataLoader worker draws; :meth:`render_drawn` renders on the training device."""
        ids = {i: self.identity(i) for i in sorted({i for i, _ in pairs})}
        draws = [self.image_parameters(i, k) for i, k in pairs]
        stack = lambda values: torch.as_tensor(np.stack(values), dtype=torch.float32)
        pose = stack([d["pose"] for d in draws])
        return {"true_shape": stack([ids[i][0] for i, _ in pairs]), "albedo": stack([ids[i][1] for i, _ in pairs]),
                "true_expression": stack([d["expression"] for d in draws]),
                "true_pose": torch.cat([pose[:, joint_pose(GLOBAL)], pose[:, joint_pose(JAW)]], dim=1),
                **{key: stack([d[key] for d in draws]) for key in ("light", "ambient", "diffuse", "fill", "shift")},
                "background": torch.cat([appearance.random_background(1, self.config.size,
                                                                      np.random.default_rng(d["background_seed"]))
                                         for d in draws])}

    @torch.no_grad()
    def frame(self, drawn: dict[str, torch.Tensor], decoder: Decoder):
        """The posed heads of :meth:`draw`'s images (a :class:`~ringnet_lib.decoder.DecoderOutput` with no camera)
        and their cameras ``N x 3``: a loose crop, the landmarks filling ``fill`` of it, the face's centre
        shifted by ``shift``."""
        device = decoder.flame.v_template.device
        count = len(drawn["true_shape"])
        unframed = decoder(join_params(torch.zeros(count, 3, device=device), drawn["true_pose"].to(device),
                                       drawn["true_shape"].to(device), drawn["true_expression"].to(device)))
        camera = camera_looking_at(unframed.landmarks3d, fill=1.0)
        camera[:, 0] *= drawn["fill"].to(device)
        camera[:, 1:] += drawn["shift"].to(device) / camera[:, :1]
        return unframed, camera

    @torch.no_grad()
    def render_drawn(self, drawn: dict[str, torch.Tensor], decoder: Decoder | None = None) -> SynthBatch:
        """Render :meth:`draw`'s images with ``decoder`` (default: this synthesizer's), on the decoder's device."""
        decoder = self.decoder if decoder is None else decoder
        d = {key: value.to(decoder.flame.v_template.device) for key, value in drawn.items()}
        size = self.config.size
        unframed, camera = self.frame(d, decoder)
        images, fragments = render.render(unframed.vertices, decoder.flame.faces, camera, size, d["albedo"],
                                          d["light"], d["ambient"], d["diffuse"], d["background"])
        pixels = normalized_to_pixels(decoder.project(unframed.landmarks3d, camera), size)
        confidence = landmark_confidence(pixels, camera[:, :1] * unframed.landmarks3d[..., 2], fragments.depth,
                                         VISIBILITY_TOLERANCE_M * camera[:, :1])
        return SynthBatch(images, pixels, confidence, d["true_shape"], d["true_expression"], unframed.pose, camera,
                          unframed.vertices, fragments)

    def render_batch(self, pairs: list[tuple[int, int]]) -> SynthBatch:
        """Render the images ``(identity, k)`` listed in ``pairs`` (:meth:`draw`, then :meth:`render_drawn`)."""
        return self.render_drawn(self.draw(pairs))


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
    batch = torch.arange(len(pixels), device=pixels.device)[:, None].expand_as(col)
    nearest = front[batch, row.clamp(0, size - 1), col.clamp(0, size - 1)]
    visible = depth >= nearest - tolerance
    confidence = torch.where(visible, 1.0, OCCLUDED_CONFIDENCE)
    return confidence * inside


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``B x 3 x S x S`` float [0, 1] to ``B x S x S x 3`` uint8."""
    return (images.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def synthesize_dataset(config: SynthConfig, out: str | Path, decoder: Decoder | None = None,
                       progress: bool = True, description: str = "",
                       synthesizer: Synthesizer | None = None, overwrite: bool = False) -> Path:
    """Render ``identities x per_identity`` images into ``out`` in the dataset format. Returns the metadata path.

    Everything is written to a temporary folder beside ``out`` and moved into place at the end,
    so an interrupted run leaves nothing half written. An ``out`` that holds a dataset is refused
    unless ``overwrite`` (which removes it, old images included, once the new one is complete); a
    file, or a folder that holds anything else, is always refused (:func:`~.dataset.check_output_folder`).
    ``decoder`` or a ready ``synthesizer`` (whose config must be ``config``) saves building the model.
    """
    config.validate()
    with new_dataset_folder(out, overwrite) as staging:
        (staging / "images").mkdir()
        synth = synthesizer if synthesizer is not None else Synthesizer(config, decoder)
        pairs = [(i, k) for i in range(config.identities) for k in range(config.per_identity)]
        names, fields = [], {key: [] for key in ("landmarks", "confidence", "shape", "expression", "pose", "camera")}
        save_options = {"quality": 92} if config.image_format == "jpg" else {}
        with tqdm(total=len(pairs), desc="rendering", unit="img", disable=not progress, mininterval=1.0) as bar:
            for start in range(0, len(pairs), config.batch):
                chunk = pairs[start:start + config.batch]
                batch = synth.render_batch(chunk)
                for (i, k), pixels in zip(chunk, to_uint8(batch.images)):
                    name = f"images/id{i:05d}_{k:03d}.{config.image_format}"
                    Image.fromarray(pixels).save(staging / name, **save_options)
                    names.append(name)
                for key in fields:
                    fields[key].append(getattr(batch, key).numpy())
                bar.update(len(chunk))
        neutral = neutral_meshes(synth, config.identities, config.batch)
        arrays = {key: np.concatenate(value) for key, value in fields.items()}
        info = json.dumps({"generator": "ringnet_lib.data.synthesize", "config": dataclasses.asdict(config),
                           "model": str(synth.decoder.flame.source), "command": description})
        write_metadata(staging, names, np.array([i for i, _ in pairs]),
                       [f"synthetic_{i:05d}" for i in range(config.identities)],
                       neutral_vertices=neutral, faces=synth.decoder.flame.faces.numpy(),
                       description=info, **arrays)
    return Path(out) / METADATA_NAME


@torch.no_grad()
def neutral_meshes(synth: Synthesizer, identities: int, batch: int) -> np.ndarray:
    """``identities x V x 3`` float32: each identity's neutral mesh, ``batch`` identities at a time (FLAME's
    intermediates take about 0.5 MB an identity: all at once, 10^5 identities would need 50 GB)."""
    meshes = np.empty((identities, synth.decoder.flame.v_template.shape[0], 3), dtype=np.float32)
    for start in range(0, identities, batch):
        chosen = range(start, min(start + batch, identities))
        betas = torch.as_tensor(np.stack([synth.identity(i)[0] for i in chosen]), dtype=torch.float32)
        meshes[start:start + len(chosen)] = synth.decoder.neutral(betas).vertices.numpy()
    return meshes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.data.synthesize", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(parser, SynthConfig)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out (never a "
                        "folder that holds anything else)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = vars(parser.parse_args(argv))
    out, overwrite, threads = args.pop("out"), args.pop("overwrite"), args.pop("threads")
    config = SynthConfig(**args)
    command = " ".join(["python -m ringnet_lib.data.synthesize"] + (sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    try:
        if threads is not None and threads < 1:  # torch.set_num_threads(-1) is a traceback
            raise ConfigError(f"threads (--threads): must be >= 1 (leave it out for torch's choice), got {threads}")
        if threads:
            torch.set_num_threads(threads)
        config.validate()
        check_output_folder(out, overwrite)  # before the model is built; synthesize_dataset checks it again
        synthesizer = Synthesizer(config)
        loaded = time.perf_counter()
        path = synthesize_dataset(config, out, description=command, synthesizer=synthesizer, overwrite=overwrite)
    except (ConfigError, DatasetExistsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - loaded
    n = config.identities * config.per_identity
    print(f"wrote {n} images and {path}: model load {loaded - start:.1f} s, then {seconds:.1f} s "
          f"({n / seconds:.1f} images/s rendered and written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
