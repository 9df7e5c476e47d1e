"""Checkpoints for exact resume: one dict with everything a run's future depends on.

Model, optimiser, step, sampler position, the RNG states of torch (CPU and
CUDA), numpy and Python (one per process under DDP), the loss history and the
config. Written atomically (temporary file, fsync, then ``os.replace``), so a run
killed while saving keeps the previous checkpoint intact.

Loading never runs code from the file: ``torch.load(weights_only=True)`` builds
only tensors and plain Python containers, and refuses any other global (a pickle
that would call ``os.system`` is refused before anything runs). Our checkpoints
hold nothing else: the numpy RNG state is stored as plain Python values. Files
written before that change stored it as a numpy array; the four numpy names such
an array needs (:data:`LEGACY_NUMPY_GLOBALS`) are the only globals allowed. A file that is not a torch file
at all (a plain ``pickle.dump``) is named so without being unpickled.

Damage is caught: torch does not check the zip's CRCs, so a checkpoint with flipped bytes in its
weights would load and predict nonsense. :func:`save_checkpoint` writes a SHA-256 digest of each
entry (:func:`entry_digest`: tensors' bytes with their dtype and shape, and the plain values, in a
defined order) under ``"digest"``, and :func:`load_checkpoint` refuses a file whose entries do not
match it. Checkpoints written before the digest have none and load unchecked, as before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..checks import non_finite_weights
from ..cli import ConfigError
from ..encoder import WeightsFileError, read_torch_file
from .config import TrainConfig
from .model import build_decoder, build_encoder

CHECKPOINT_NAME = "checkpoint.pt"
# 2: the typed config (data "render", β/ψ regulariser names, None instead of 0 / "") and no sampler state.
FORMAT_VERSION = 2
# The entry holding {"sha256": {entry: hex digest}}; optional (older files have none: loaded unchecked).
DIGEST = "digest"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, unsafe or not one of ours; the message names the file."""


# What an old checkpoint's numpy RNG state (a uint32 array) needs, and nothing more.
LEGACY_NUMPY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def rng_state() -> dict:
    """The RNG states of this process: torch CPU, torch CUDA (if any), numpy, Python (plain values only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), position, has_gauss, cached),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _feed(hasher, value, where: str) -> None:
    """Add ``value`` (tensors, numpy arrays, dicts, lists, tuples, plain values) to ``hasher``, with its place."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"{where}:{tensor.dtype}{tuple(tensor.shape)};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray):
        hasher.update(f"{where}:{value.dtype}{value.shape};".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        hasher.update(f"{where}:dict{len(value)};".encode())
        for key in sorted(value, key=repr):  # a defined order, whatever the insertion order
            _feed(hasher, value[key], f"{where}/{key!r}")
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{where}:{type(value).__name__}{len(value)};".encode())
        for index, item in enumerate(value):
            _feed(hasher, item, f"{where}/{index}")
    else:  # int, float, str, bool, None: repr round-trips exactly
        hasher.update(f"{where}={type(value).__name__}:{value!r};".encode())


def entry_digest(value) -> str:
    """SHA-256 (hex) of one checkpoint entry: each tensor's bytes, dtype and shape and each plain value, with
    its place in the entry, dict keys sorted. About 0.35 s per 300 MB of tensors (ResNet-50 + Adam) on one core."""
    hasher = hashlib.sha256()
    _feed(hasher, value, "")
    return hasher.hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically, with a digest of each entry (any ``"digest"`` in ``state`` is
    replaced: the file's digest always describes what is written)."""
    path = Path(path)
    state = {key: value for key, value in state.items() if key != DIGEST}
    state[DIGEST] = {"sha256": {key: entry_digest(value) for key, value in state.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(temporary, path)
    return path


def _digest_or_none(value) -> str | None:
    try:
        return entry_digest(value)
    except (RuntimeError, TypeError):  # a tensor no checkpoint of ours holds (sparse, ...): it cannot match
        return None


def check_digest(state: dict, path: str | Path) -> None:
    """Each entry the checkpoint's digest names still has that digest (none: written before digests, unchecked)."""
    if DIGEST not in state:
        return
    written = state[DIGEST].get("sha256") if isinstance(state[DIGEST], dict) else None
    if not isinstance(written, dict) or not all(isinstance(v, str) for v in written.values()):
        raise CheckpointError(f"{path}: corrupt: its digest entry is damaged, so its weights cannot be checked; use "
                              "another copy of the checkpoint or retrain")
    damaged = [key for key, digest in written.items() if key not in state or _digest_or_none(state[key]) != digest]
    if damaged:
        what = "its weights do" if "model" in damaged else f"its {', '.join(map(repr, damaged))} entry does"
        raise CheckpointError(f"{path}: corrupt: {what} not match the digest written with them (the file was "
                              "damaged after it was saved, on disk or in a copy); use another copy of the checkpoint "
                              "or retrain")


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU), safely.

    Raises:
        CheckpointError: no such file, a file torch cannot read, a plain pickle, one that asks for code
            (refused before it runs), one that is not a training checkpoint, or one whose entries do not
            match its digest (damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; train one with python -m ringnet_lib.train "
                              "(or give the checkpoint.pt a previous run wrote)")
    try:
        state = read_torch_file(path, LEGACY_NUMPY_GLOBALS, what="a checkpoint")
    except WeightsFileError as error:
        advice = {"code": ". Only use checkpoints you trained or trust.",
                  "pickle": "; give the checkpoint.pt written by python -m ringnet_lib.train"}.get(error.kind, "")
        raise CheckpointError(f"{path}: {error}{advice}") from None
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise CheckpointError(f"{path}: not a ringnet_lib training checkpoint (it has no 'model' and 'config' "
                              "entries)")
    if not isinstance(state["model"], dict) or not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: not a ringnet_lib training checkpoint (its 'model' and 'config' entries are "
                              "not dicts)")
    if state.get("format_version", 1) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by another version of ringnet_lib (checkpoint format "
                              f"{state.get('format_version', 1)}, this one reads {FORMAT_VERSION}); retrain it")
    check_digest(state, path)
    return state


def checkpoint_step(path: str | Path) -> int | str:
    """The step a checkpoint was written at ("?" if it cannot be read)."""
    try:
        return load_checkpoint(path)["step"]
    except CheckpointError:
        return "?"


def strip_wrappers(state_dict: dict) -> dict:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    clean = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        clean[key] = value
    return clean


def config_of(saved: dict, path: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` a loaded checkpoint was trained with (a clear error if it does not fit)."""
    try:
        return TrainConfig(**saved["config"])
    except (TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: its config does not fit this version of ringnet_lib ({error}); "
                              "retrain it") from None


def load_encoder(path: str | Path, expected: dict | None = None, decoder=None, flame_model: str | Path | None = None):
    """Rebuild the encoder a training checkpoint was made with, and its decoder; the one checkpoint -> model
    loader (the demo, the evaluation and the ablation use it).

    Args:
        path: a ``checkpoint.pt`` written by :func:`ringnet_lib.training.loop.train`.
        expected: optional config fields (e.g. ``{"trunk": "resnet50"}``) the checkpoint must have.
        decoder: the checkpoint's decoder if already built (saves building it again).
        flame_model: a FLAME folder to use instead of the one the checkpoint names (a checkpoint
            trained elsewhere, whose stored path does not exist here).
    Returns:
        ``(encoder in eval mode, TrainConfig, Decoder)``. Anything that does not fit raises :class:`CheckpointError`.
    """
    saved = load_checkpoint(path)
    config = config_of(saved, path)
    different = {k: (getattr(config, k), v) for k, v in (expected or {}).items() if getattr(config, k) != v}
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in sorted(different.items()))
        raise CheckpointError(f"{path}: the checkpoint comes from another config ({detail})")
    if flame_model is not None:
        config = TrainConfig(**{**saved["config"], "flame_model": flame_model})
    elif config.flame_model is not None and not Path(config.flame_model).exists():
        raise CheckpointError(f"{path}: its FLAME model {config.flame_model} does not exist here; pass "
                              "--flame-model FOLDER (the same FLAME files)")
    bad = non_finite_weights(saved["model"])
    if bad:
        raise CheckpointError(f"{path}: the saved weights are not finite ({bad[0]} and {len(bad) - 1} more): the run "
                              "that wrote it diverged; use an earlier checkpoint or retrain")
    decoder = build_decoder(config) if decoder is None else decoder
    # The camera the encoder starts from is a buffer in the state dict, so any value works here; so do the trunk's
    # initial weights (the checkpoint replaces them): the trunk_weights file it was trained from need not be here.
    encoder = build_encoder(dataclasses.replace(config, trunk_weights=None), decoder, torch.zeros(3))
    try:
        encoder.load_state_dict(strip_wrappers(saved["model"]))
    except RuntimeError as error:
        first = " ".join(str(error).splitlines()[0:2])[:300]
        raise CheckpointError(f"{path}: the weights do not fit the encoder its config describes (trunk "
                              f"{config.trunk!r}, {config.n_iterations} iterations): the checkpoint was edited or "
                              f"comes from another version. {first}") from None
    return encoder.eval(), config, decoder
