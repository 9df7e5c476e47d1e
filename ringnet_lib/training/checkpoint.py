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

CHECKPOINT_NAME = "checkpoint.pt"


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
    return state


def strip_wrappers(state_dict: dict) -> dict:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    clean = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        clean[key] = value
    return clean
