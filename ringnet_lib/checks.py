"""Input checks shared by the library: one message style for NaN/inf values and for requests too big for memory."""
from __future__ import annotations

import os

import torch


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise a ValueError that says where NaN/inf values are and what to do."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = bad.reshape(tensor.shape[0], -1).any(-1).nonzero().flatten()[:5].tolist() if tensor.ndim else []
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf values (first rows: {rows}). Check the prediction "
                         "that produced it (e.g. a diverged network); remove or fix those rows before evaluating.")


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
