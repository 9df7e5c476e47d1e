"""The one data path of training: a batch sampler over ring keys, a collate, a DataLoader.

    loader = ring_loader(rings, batch_size=4, seed=0, workers=2, start_step=0, total_steps=1000)
    for batch in loader:        # dict of B x R x ... tensors (collate_rings)
        ...

Ring datasets (:class:`~ringnet_lib.data.rings.FolderRingSet`,
:class:`~ringnet_lib.data.synthetic.SyntheticRingSet`) are keyed by ``(epoch, ring)``, and
:class:`RingBatchSampler` decides which keys make each step's batch from the step number
alone: the rings of epoch ``e`` are shuffled by a generator seeded with ``(seed, e)``, cut into
global batches of ``batch_size`` (the incomplete last one is dropped), and process ``rank``
takes every ``world_size``-th ring of each (DDP). So a run resumed at step k reads exactly the
batches it would have read, whatever the number of workers, and N processes together read
what one process would. Workers only load and decode; every random choice is in the keys.
"""
from __future__ import annotations

import numpy as np
import torch


class RingBatchSampler(torch.utils.data.Sampler):
    """This process's ring keys for every step from ``start_step`` to ``total_steps``.

    Args:
        rings_per_epoch: rings in one epoch of the dataset.
        batch_size: rings per global batch (divisible by ``world_size``).
        seed: base seed of the shuffles.
        rank: this process.
        world_size: processes.
        start_step: the first step to yield (a resumed run's step).
        total_steps: the step to stop before.
    """

    def __init__(self, rings_per_epoch: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, total_steps: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        if rings_per_epoch < batch_size:
            raise ValueError(f"the dataset has {rings_per_epoch} rings per epoch, fewer than one batch "
                             f"({batch_size}); lower batch_size or add data")
        self.rings_per_epoch, self.batch_size, self.seed = rings_per_epoch, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step = start_step
        self.total_steps = total_steps if total_steps is not None else self.batches_per_epoch

    @property
    def batches_per_epoch(self) -> int:
        return self.rings_per_epoch // self.batch_size  # the incomplete last batch is dropped

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of ``step`` (0-based)."""
        return divmod(step, self.batches_per_epoch)

    def keys(self, step: int) -> list[tuple[int, int]]:
        """This process's ``(epoch, ring)`` keys of step ``step``."""
        epoch, batch = self.position(step)
        # (seed, epoch) together: seed + epoch would give seed s in epoch e+1 the order of seed s+1 in epoch e.
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rings_per_epoch)
        chosen = order[batch * self.batch_size:(batch + 1) * self.batch_size][self.rank::self.world_size]
        return [(epoch, int(ring)) for ring in chosen]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def collate_rings(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack B ring items (dicts of ``R x ...`` tensors) into one batch; the one collate of the library.

    Returns a dict: ``images`` B x R x 3 x H x W in [0, 1] (absent for rings rendered on the
    device), ``landmarks`` B x R x 68 x 2 (normalised, camera.py), ``confidence`` B x R x 68,
    ``identity`` B x R, and what the items have of ``true_shape`` B x R x 100 (``true_expression``,
    ``true_pose``, ``true_camera``, ``index``, ``flipped``). The odd identity is at ring position R-1.
    """
    return {key: torch.stack([item[key] for item in items]) for key, value in items[0].items()
            if isinstance(value, torch.Tensor)}


def ring_loader(rings, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 0,
                start_step: int = 0, total_steps: int | None = None, pin_memory: bool = False,
                prefetch_factor: int | None = None, collate_fn=collate_rings) -> torch.utils.data.DataLoader:
    """A DataLoader of ring batches over a ring dataset, driven by :class:`RingBatchSampler`.

    Args:
        rings: a dataset keyed by ``(epoch, ring)`` with ``rings_per_epoch``.
        batch_size: rings per global batch.
        seed: the shuffle seed (keep it the run's).
        rank: this process.
        world_size: processes.
        workers: loader processes (0: load in the main process).
        start_step: the first step (a resumed run's).
        total_steps: the step to stop before (default: one epoch).
        pin_memory: page-locked batches, for fast copies to a GPU.
        prefetch_factor: batches each worker loads ahead (workers > 0 only).
        collate_fn: rings -> batch (default :func:`collate_rings`; training's renders in the workers, see
            :func:`ringnet_lib.training.data.make_loader`).
    """
    sampler = RingBatchSampler(rings.rings_per_epoch, batch_size, seed, rank, world_size, start_step, total_steps)
    options = {"prefetch_factor": prefetch_factor} if workers and prefetch_factor else {}
    # A generator of its own: starting an iterator draws a seed from it, and from torch's global RNG
    # without one, which would shift the dropout of a resumed run (its RNG state is restored before).
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)
    return torch.utils.data.DataLoader(rings, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                                       pin_memory=pin_memory, persistent_workers=False, generator=generator, **options)
