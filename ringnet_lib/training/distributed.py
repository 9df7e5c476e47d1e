"""DDP set-up, detected from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    torchrun --standalone --nproc_per_node 2 -m ringnet_lib.train --preset quick     # CPU: gloo
    torchrun --standalone --nproc_per_node 8 -m ringnet_lib.train --preset paper     # GPUs: NCCL

Rank 0 alone logs, shows progress and writes checkpoints. The global batch
(``batch_size`` rings) is split evenly over the processes, and DDP averages
gradients, so N processes take the same steps as one process on the same
global batch (up to float rounding; ``tests/test_train_ddp.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun describes; a single process when ``RANK`` is unset."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext()
    context = DistributedContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                                 int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(context.local_rank)
    return context


def cleanup_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(values: dict[str, float], context: DistributedContext, device) -> dict[str, float]:
    """Average a few logged scalars over processes (the gradients are averaged by DDP itself)."""
    if not context.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / context.world_size).tolist()))


def gather_objects(value, context: DistributedContext) -> list:
    """Every process's ``value`` (e.g. RNG states), in rank order."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def any_process(flag: bool, context: DistributedContext, device) -> bool:
    """True when ``flag`` is true in at least one process (so all stop together)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())
