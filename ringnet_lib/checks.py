"""Input checks shared by the library: one message style for NaN/inf values."""
from __future__ import annotations

import torch


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise a ValueError that says where NaN/inf values are and what to do."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = bad.reshape(tensor.shape[0], -1).any(-1).nonzero().flatten()[:5].tolist() if tensor.ndim else []
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf values (first rows: {rows}). Check the prediction "
                         "that produced it (e.g. a diverged network); remove or fix those rows before evaluating.")
