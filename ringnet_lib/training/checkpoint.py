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
an array needs (:data:`LEGACY_NUMPY_GLOBALS`) are the only globals allowed.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..cli import ConfigError
from .config import TrainConfig
from .model import build_decoder, build_encoder

CHECKPOINT_NAME = "checkpoint.pt"
# 2: the typed config (data "render", β/ψ regulariser names, None instead of 0 / "") and no sampler state.
FORMAT_VERSION = 2


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


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(temporary, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (on the CPU), safely.

    Raises:
        CheckpointError: no such file, a file torch cannot read, one that asks for code
            (refused before it runs), or one that is not a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; train one with python -m ringnet_lib.train "
                              "(or give the checkpoint.pt a previous run wrote)")
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(error))
        if wanted is None:  # not a refused global: a file that is not a torch pickle at all
            raise CheckpointError(f"{path}: not a checkpoint torch can read (the file is corrupt, truncated or of "
                                  "another kind)") from None
        raise CheckpointError(f"{path}: refused to load: the file asks for Python code ({wanted.group(1)}), which "
                              "a ringnet_lib checkpoint never holds; it may be hostile. Only use checkpoints you "
                              "trained or trust.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a checkpoint torch can read ({first[:200]}); the file is corrupt, "
                              "truncated or of another kind") from None
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise CheckpointError(f"{path}: not a ringnet_lib training checkpoint (it has no 'model' and 'config' "
                              "entries)")
    if state.get("format_version", 1) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by another version of ringnet_lib (checkpoint format "
                              f"{state.get('format_version', 1)}, this one reads {FORMAT_VERSION}); retrain it")
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
    decoder = build_decoder(config) if decoder is None else decoder
    # The camera the encoder starts from is a buffer in the state dict, so any value works here.
    encoder = build_encoder(config, decoder, torch.zeros(3))
    try:
        encoder.load_state_dict(strip_wrappers(saved["model"]))
    except RuntimeError as error:
        first = " ".join(str(error).splitlines()[0:2])[:300]
        raise CheckpointError(f"{path}: the weights do not fit the encoder its config describes (trunk "
                              f"{config.trunk!r}, {config.n_iterations} iterations): the checkpoint was edited or "
                              f"comes from another version. {first}") from None
    return encoder.eval(), config, decoder
