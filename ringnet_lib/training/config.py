"""The training config: one typed dataclass whose fields are at once the papermill parameters and the CLI flags.

Fields are grouped (data, model, loss, optimisation, run) in their metadata; the CLI lists
them in those groups (``python -m ringnet_lib.train --help``). Each field's metadata also says
which data sources it applies to (``applies_to``) and whether a resumed run may change it
(``resumable``): the validation, the CLI and the resume check are derived from that, not
from hand-kept lists. Field names stay flat (``ring_size``, not ``data.ring_size``) because
they are papermill's parameter names.

Data sources (``data``):

* ``"render"`` - synthetic rings rendered on the fly on the training device
  (:class:`~ringnet_lib.data.synthetic.SyntheticRingSet`): a pool of ``n_identities``
  identities x ``images_per_identity`` views, or a fresh pair of identities for every ring
  (``n_identities=None``, then ``n_rings`` rings make an epoch);
* ``"synthetic"`` - the shipped textured sample (8 people x 6 images, package data);
* a folder in docs/dataset_format.md's format (``python -m ringnet_lib.data.synthesize`` or
  ``... .data.photos`` make one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .. import losses
from ..checks import gib, memory_available
from ..cli import ConfigError, check_finite_fields, coerce, field_types

RENDER = "render"
SYNTHETIC = "synthetic"
TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101", "small_cnn")
FOLDERS = ("folder",)  # applies_to tag for "synthetic" and dataset folders


def _field(default, help: str, group: str, applies_to: tuple[str, ...] | None = None, resumable: bool = False):
    return field(default=default, metadata={"help": help, "group": group, "applies_to": applies_to,
                                            "resumable": resumable})


@dataclass
class TrainConfig:
    """Everything a run depends on. Field names = papermill parameters = CLI flags."""

    preset: Literal["quick", "paper"] = _field("quick", "the preset whose values the other fields override", "run",
                                               resumable=True)
    # data
    data: str = _field(RENDER, "'render' (on the fly), 'synthetic' (the shipped sample) or a dataset folder", "data")
    ring_size: int = _field(4, "R: images per ring (R-1 of one person, 1 of another)", "data")
    batch_size: int = _field(4, "rings per optimiser step, over all processes", "data")
    image_size: int = _field(64, "side of the square crops the encoder sees, pixels", "data")
    data_seed: int = _field(0, "seed of the data (identities, views, rings)", "data")
    workers: int = _field(0, "DataLoader worker processes (0: load in the main process)", "data", resumable=True)
    n_identities: int | None = _field(1000, "identities in the rendered pool (none: a fresh pair for every ring)",
                                      "data", applies_to=(RENDER,))
    images_per_identity: int = _field(5, "views drawn per pool identity", "data", applies_to=(RENDER,))
    n_rings: int | None = _field(None, "rings per epoch (none: one per pool identity)", "data", applies_to=(RENDER,))
    style: Literal["grey", "textured"] = _field("grey", "rendered pictures: grey heads on black, or the textured "
                                                "generator's (skin, hair, light, backgrounds)", "data",
                                                applies_to=(RENDER,))
    flip_probability: float = _field(0.0, "chance of a horizontal flip per image", "data", applies_to=FOLDERS)
    # model
    trunk: Literal["resnet18", "resnet34", "resnet50", "resnet101", "small_cnn"] = _field(
        "resnet18", "the encoder's trunk (the paper's: resnet50)", "model")
    trunk_weights: Path | None = _field(None, "a local ImageNet weights file for the trunk (never downloaded)",
                                        "model")
    n_iterations: int = _field(3, "iterative error-feedback steps of the regressor", "model")
    dropout: float = _field(0.5, "dropout of the regressor's hidden layers", "model")
    flame_model: Path | None = _field(None, "a folder of FLAME files (none: the embedded default head)", "model")
    landmarks68: bool = _field(True, "68 iBUG landmarks (false: FLAME's 51 static ones)", "model")
    bn_mode: Literal["train", "sync", "eval"] = _field("train", "BatchNorm: per process, synchronised, or frozen",
                                                       "model")
    # loss
    consistency: Literal["ring", "swap", "mean", "none"] = _field("ring", "the consistency term (ablations)", "loss")
    margin: float = _field(losses.RING_MARGIN, "η of the ring loss", "loss")
    w_consistency: float = _field(1.0, "λ_sc, weight of the ring (consistency) loss", "loss")
    w_landmarks: float = _field(60.0, "λ_proj, weight of the landmark loss", "loss")
    w_shape_norm: float = _field(1e-4, "λ_β, weight of the regulariser ‖β‖²", "loss")
    w_expression_norm: float = _field(1e-4, "λ_ψ, weight of the regulariser ‖ψ‖²", "loss")
    w_true_shape_mse: float = _field(0.0, "not RingNet's: weight of the error to the true β (a diagnostic)", "loss")
    # optimisation
    lr: float = _field(1e-4, "Adam's learning rate", "optimisation")
    epochs: int = _field(1, "passes over the rings (see max_steps)", "optimisation", resumable=True)
    max_steps: int | None = _field(None, "stop after this many steps in total (overrides epochs)", "optimisation",
                                   resumable=True)
    seed: int = _field(0, "seed of the weights, dropout and the ring order", "optimisation")
    device: str = _field("cpu", "cpu, cuda or cuda:N", "optimisation", resumable=True)
    amp: bool = _field(True, "bf16 autocast of the trunk (CUDA only)", "optimisation")
    channels_last: bool = _field(True, "channels-last images and weights (CUDA only)", "optimisation")
    threads: int | None = _field(None, "torch CPU threads (none: torch's choice)", "optimisation", resumable=True)
    # run
    out_dir: Path = _field(Path("runs/quick"), "where the checkpoint and logs go", "run", resumable=True)
    resume: str | None = _field(None, "'auto' (out_dir's checkpoint, if any) or a checkpoint path", "run",
                                resumable=True)
    overwrite: bool = _field(False, "start afresh even if out_dir holds a checkpoint (it is replaced)", "run",
                             resumable=True)
    checkpoint_every: int = _field(50, "steps between checkpoints", "run", resumable=True)
    log_every: int = _field(10, "steps between TensorBoard scalars", "run", resumable=True)
    image_every: int = _field(100, "steps between TensorBoard landmark pictures", "run", resumable=True)
    eval_rings: int = _field(16, "rings of the start/end metrics (0: skip)", "run", resumable=True)
    tensorboard: bool = _field(True, "write TensorBoard logs", "run", resumable=True)
    progress: bool = _field(True, "a progress line (steps, losses, time left) on stderr", "run", resumable=True)
    progress_interval: float = _field(10.0, "seconds between progress updates", "run", resumable=True)
    verbose: bool = _field(False, "show the whole config in error messages", "run", resumable=True)

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            setattr(self, item.name, coerce(TrainConfig, item.name, getattr(self, item.name)))
        # Paths are kept absolute, so a checkpoint names its model and data wherever it is read from.
        for name in ("out_dir", "flame_model", "trunk_weights"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).expanduser().resolve())
        if self.data not in (RENDER, SYNTHETIC):
            self.data = str(Path(self.data).expanduser().resolve())
        if self.resume not in (None, "auto"):
            self.resume = str(Path(self.resume).expanduser().resolve())

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides) -> "TrainConfig":
        """The preset's values, then ``overrides``; a preset's value for a field that does not apply to
        the data source chosen in ``overrides`` is dropped (unknown names are an error)."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; see python -m ringnet_lib.train --help")
        values = {**PRESETS[preset], "preset": preset}
        source = overrides.get("data", values.get("data", RENDER))
        values = {k: v for k, v in values.items() if applies(k, source)}
        return cls(**{**values, **overrides})

    def loss_weights(self) -> losses.LossWeights:
        """The λ, by name."""
        return losses.LossWeights(**{name: getattr(self, f"w_{name}")
                                     for name in (f.name for f in dataclasses.fields(losses.LossWeights))})

    def describe(self) -> str:
        """The fields that differ from the preset, one line (the whole config with ``verbose``)."""
        shown = dataclasses.asdict(self) if self.verbose else {"preset": self.preset, **changed_fields(self)}
        return ", ".join(f"{k}={v}" for k, v in shown.items())


def applies(name: str, source) -> bool:
    """Whether field ``name`` means anything for data source ``source``."""
    tags = next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata.get("applies_to")
    if tags is None:
        return True
    return (RENDER if str(source) == RENDER else "folder") in tags


PRESETS = {
    # CPU minutes (about 6 on 2 cores): ResNet-18 at 64 px, rings of 4, 4 rings a step, on 1,000
    # identities x 5 grey renders made on the fly (5 epochs of 250 steps), the paper's lr 1e-4
    # (1e-3 learned slower here: landmark loss 0.122 vs 0.100 after 500 steps).
    "quick": dict(trunk="resnet18", image_size=64, ring_size=4, batch_size=4, epochs=5, data=RENDER,
                  n_identities=1000, images_per_identity=5, dropout=0.1, eval_rings=32,
                  out_dir="runs/quick", log_every=10, image_every=250, checkpoint_every=250),
    # The paper's set-up, for a GPU: R = 6, 224 px, ResNet-50, lr 1e-4, 8 rings (48 images) a step, on
    # textured rings rendered on the device, a fresh pair of identities for every ring: an epoch is
    # 20,000 rings (2,500 steps, 120,000 images, 40,000 people), 10 epochs 200,000 rings and 1.2 M images.
    "paper": dict(trunk="resnet50", image_size=224, ring_size=6, batch_size=8, epochs=10, data=RENDER,
                  style="textured", n_identities=None, n_rings=20000, images_per_identity=6, dropout=0.5,
                  device="cuda", workers=4, out_dir="runs/paper", checkpoint_every=500, log_every=20,
                  image_every=500, eval_rings=64),
}


def changed_fields(config: TrainConfig) -> dict:
    """The fields of ``config`` that differ from its preset (or from the default where the preset is silent).

    ``data`` is compared with the preset's own source, every other field with the preset as it is for
    ``config``'s source (whose values for fields that do not apply to it are dropped).
    """
    preset = TrainConfig.from_preset(config.preset)
    for_source = TrainConfig.from_preset(config.preset, data=config.data)
    return {key: value for key, value in dataclasses.asdict(config).items()
            if key != "preset" and value != getattr(preset if key == "data" else for_source, key)}


def validate_config(config: TrainConfig) -> None:
    """Clear one-line errors for values that would only fail later (or never, silently)."""
    defaults = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        if not applies(item.name, config.data) and getattr(config, item.name) != getattr(defaults, item.name):
            raise ConfigError(f"{item.name}: applies only to data={item.metadata['applies_to'][0]!r} "
                              f"(this run has data={config.data!r}); leave it out")
    positive = ("ring_size", "batch_size", "image_size", "n_iterations", "epochs", "checkpoint_every", "log_every",
                "image_every", "images_per_identity")
    checks = [(config.ring_size >= 2, "ring_size", "must be >= 2 (one identity plus one other)"),
              (config.image_size >= 16, "image_size", "must be >= 16 pixels"),
              (config.n_identities is None or config.n_identities >= 2, "n_identities", "must be >= 2 (or none)"),
              (config.n_identities is not None or config.n_rings, "n_rings",
               "is needed with n_identities=none (fresh identities): the rings of one epoch"),
              (config.n_rings is None or config.n_rings >= 1, "n_rings", "must be >= 1 (or none)"),
              (config.max_steps is None or config.max_steps >= 1, "max_steps", "must be >= 1 (or none: epochs)"),
              (config.seed >= 0, "seed", "must be >= 0 (numpy takes no negative seeds)"),
              (config.data_seed >= 0, "data_seed", "must be >= 0 (numpy takes no negative seeds)"),
              (0.0 <= config.flip_probability <= 1.0, "flip_probability", "must lie in [0, 1]"),
              (0.0 <= config.dropout < 1.0, "dropout", "must lie in [0, 1)"),
              (config.margin >= 0, "margin", "must be >= 0"),
              (config.lr > 0, "lr", "must be > 0"),
              (config.eval_rings >= 0, "eval_rings", "must be >= 0"),
              (config.workers >= 0, "workers", "must be >= 0"),
              (config.threads is None or config.threads >= 1, "threads", "must be >= 1 (or none)"),
              (config.progress_interval > 0, "progress_interval", "must be > 0"),
              (config.resume is None or config.resume == "auto" or Path(config.resume).suffix != "", "resume",
               "must be 'auto' or the path of a checkpoint file")]
    checks += [(getattr(config, name) >= 1, name, "must be >= 1") for name in positive]
    checks += [(getattr(config, f.name) >= 0, f.name, "must be >= 0 (a negative weight rewards the error)")
               for f in dataclasses.fields(TrainConfig) if f.name.startswith("w_")]
    for ok, name, message in checks:
        if not ok:
            raise ConfigError(f"{name}: {message}; got {getattr(config, name)!r}")
    check_finite_fields(config)  # after the ranges, which already refuse NaN ("lr: must be > 0; got nan")
    if config.data == RENDER and config.ring_size - 1 > config.images_per_identity:
        raise ConfigError(f"ring_size: {config.ring_size} is more than images_per_identity + 1 = "
                          f"{config.images_per_identity + 1} (ring_size {config.ring_size} needs "
                          f"{config.ring_size - 1} images of one identity); lower ring_size or raise "
                          f"images_per_identity to {config.ring_size - 1}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {config.device!r}, but CUDA is not available here; use --device cpu")
    if config.device.startswith("cuda:"):
        index = config.device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device: {config.device!r} does not exist ({torch.cuda.device_count()} GPU(s) here)")
    elif config.device not in ("cpu", "cuda"):
        raise ConfigError(f"device: {config.device!r} is not cpu, cuda or cuda:N")
    needed, available = memory_needed(config), memory_available(config.device)
    if needed["pool"] > available / 2:
        raise ConfigError(f"n_identities: a pool of {config.n_identities:,} identities x {config.images_per_identity} "
                          f"views needs {gib(needed['pool'])}, and this machine has {gib(available)}; lower "
                          "n_identities, or use fresh identities (n_identities none with n_rings)")
    if needed["step"] > available:
        raise ConfigError(f"image_size: {config.batch_size * config.ring_size} images of {config.image_size} px a "
                          f"step need about {gib(needed['step'])} for {config.trunk}, and {config.device} has "
                          f"{gib(available)}; lower image_size or batch_size")


# Training memory per image, measured as the peak of one step over a batch, at 224 px (float32): ResNet-50
# about 100 MB, ResNet-18 about 40 MB; it grows with the pixels. The grey pool holds 159 numbers per image.
TRUNK_BYTES_PER_IMAGE_224 = {"resnet18": 40e6, "resnet34": 60e6, "resnet50": 100e6, "resnet101": 150e6,
                             "small_cnn": 20e6}
POOL_BYTES_PER_IMAGE = 4 * (100 + 50 + 6 + 3)


def memory_needed(config: TrainConfig) -> dict[str, float]:
    """Rough bytes a run needs: ``step`` (one training step's activations) and ``pool`` (the grey pool's parameters)."""
    images = config.batch_size * config.ring_size
    step = images * TRUNK_BYTES_PER_IMAGE_224[config.trunk] * (config.image_size / 224) ** 2
    pool = 0.0
    if config.data == RENDER and config.style == "grey" and config.n_identities is not None:
        pool = config.n_identities * config.images_per_identity * POOL_BYTES_PER_IMAGE
    return {"step": step, "pool": pool}


def check_compatible(saved: dict, config: TrainConfig) -> list[str]:
    """A checkpoint resumes only the run it came from: same model, data, loss and optimiser settings.

    Fields marked ``resumable`` may differ; among them ``device`` and ``threads`` change the float
    arithmetic, so the resumed run is no longer bit-for-bit the uninterrupted one: those are returned
    as warnings. Raises :class:`ConfigError` for any other difference.
    """
    saved = {**dataclasses.asdict(TrainConfig()), **saved}  # a field newer than the checkpoint had its default
    current = dataclasses.asdict(config)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    different = {k: (coerce(TrainConfig, k, saved[k]), v) for k, v in current.items()
                 if not fields[k].metadata["resumable"] and coerce(TrainConfig, k, saved[k]) != v}
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(different.items()))
        raise ConfigError(f"the checkpoint comes from another config ({detail}); start a new out_dir or match them")
    return [f"{k} changed ({saved[k]!r} -> {current[k]!r}): the resumed run continues, but is no longer "
            "bit-for-bit the uninterrupted one" for k in ("device", "threads") if saved[k] != current[k]]


__all__ = ["TrainConfig", "PRESETS", "RENDER", "SYNTHETIC", "TRUNKS", "applies", "changed_fields", "validate_config",
           "check_compatible", "field_types"]
