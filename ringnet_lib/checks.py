"""Input checks shared by the library: one message style for NaN/inf values, for requests too big for memory and
for output folders (checked by writing, and left as they were when a run is refused)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .cli import ConfigError


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise a ValueError that says where NaN/inf values are and what to do."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = bad.reshape(tensor.shape[0], -1).any(-1).nonzero().flatten()[:5].tolist() if tensor.ndim else []
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf values (first rows: {rows}). Check the prediction "
                         "that produced it (e.g. a diverged network); remove or fix those rows before evaluating.")


def non_finite_weights(state: dict) -> list[str]:
    """The names of a state dict's floating-point tensors that hold NaN or inf."""
    return [name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]


def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first: what ``mkdir(parents=True)`` would make."""
    path = Path(path)
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that are empty: what a refused run made and never wrote to. One that is
    not there, or holds anything, is kept."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            continue


def check_out_dir(out_dir: str | Path, name: str = "out_dir") -> list[Path]:
    """The folder exists or can be made, and can be written (checked by writing), before any work.

    Returns the folders it made (``out_dir`` and any missing parents, deepest first), for
    :func:`remove_if_empty` when the run is refused before it writes anything.

    Raises:
        ConfigError: one line naming ``name`` (the field or flag) and the folder; nothing made is left.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{name}: {out_dir} is a file; give a folder")
    made = missing_folders(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write_test"):
            pass
    except OSError as error:
        remove_if_empty(made)
        raise ConfigError(f"{name}: cannot write to {out_dir} ({error.strerror or error}); choose another "
                          "folder") from None
    return made


def memory_available(device: str = "cpu") -> float:
    """Bytes of the device: the GPU's memory, or the machine's RAM."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(n_bytes: float) -> str:
    """``n_bytes`` as ``"1,234.5 GiB"``."""
    return f"{n_bytes / 2**30:,.1f} GiB"


def check_memory(name: str, needed: float, what_to_do: str, device: str = "cpu", share: float = 1.0) -> None:
    """Raise a ValueError naming ``name`` when ``needed`` bytes exceed ``share`` of the device's memory.

    Called before anything is allocated, so that a request of a TiB is a one-line refusal, not a
    MemoryError or the kernel's OOM killer.
    """
    available = memory_available(device)
    if needed > share * available:
        raise ValueError(f"{name}: needs about {gib(needed)}, and this machine has {gib(available)}; {what_to_do}")
