"""The ring sampler: groups of R images, R-1 of one identity and 1 of another.

RingNet's ring loss compares the shapes predicted for the R images of a ring: the R-1
images of the same person must give closer β than the odd one out (Sanyal et al., CVPR
2019, R = 6 in the paper).

Epoch. In every epoch each identity (with at least 2 images) is the "anchor" of
``ceil(n_i / (R-1))`` rings: its images are shuffled and cut into groups of R-1, so every
image is a same-identity member at least once per epoch; the last group of an identity is
filled up by drawing from its other images (no image twice in a ring when n_i >= R-1).
Each ring gets one image of another identity, drawn uniformly over all images of the
other identities; it is placed LAST (index R-1) in the ring. Rings are then shuffled.

Small identities. An identity with fewer than R-1 images fills its ring by sampling its
images with replacement (so some repeat); the sampler warns once with their count. An
identity with a single image cannot form a pair and is skipped, with a warning that names
it (:attr:`RingSampler.skipped_identities`). Fewer than 2 usable identities is an error.

Reproducibility and DDP. Rings depend only on (seed, epoch): every rank builds the same
list, then takes the disjoint shard ``rings[rank::world_size]`` after cutting the list to a
multiple of world_size (at most world_size - 1 rings of an epoch are left out, as with
``drop_last``; :attr:`dropped_per_epoch` says how many). Call :meth:`set_epoch` before each
epoch, as with ``DistributedSampler``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch


class RingSampler(torch.utils.data.Sampler):
    """Builds rings (R indices) from identities; use it to stream a FaceDataset's rings through a DataLoader.

    It yields tuples of R dataset indices (pass it as a DataLoader's ``sampler``, as
    :func:`ring_loader` does); ``FaceDataset[ring]`` loads the R images and
    :func:`collate_rings` makes ``B x R x ...`` batches. The training loop keeps its building
    (:meth:`epoch_rings`) and leaves ordering, batching and resume to
    :class:`ringnet_lib.training.data.RingBatchSampler`.

    Args:
        identity: per dataset index, its identity (``FaceDataset.identity``).
        ring_size: R >= 2.
        seed: base seed; rings depend on (seed, epoch) only.
        rank, world_size: this process's shard (DDP); defaults to one process.
        names: optional identity names, for warnings.
    """

    def __init__(self, identity: Sequence[int] | np.ndarray, ring_size: int = 6, seed: int = 0,
                 rank: int = 0, world_size: int = 1, names: Sequence[str] | None = None):
        if ring_size < 2:
            raise ValueError(f"ring_size must be at least 2, got {ring_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        identity = np.asarray(identity)
        self.ring_size, self.seed, self.rank, self.world_size, self.epoch = ring_size, seed, rank, world_size, 0
        label = (lambda i: str(names[i])) if names is not None else str
        groups = {int(i): np.nonzero(identity == i)[0] for i in np.unique(identity)}
        self.skipped_identities = [label(i) for i, members in groups.items() if len(members) < 2]
        if self.skipped_identities:
            warnings.warn(f"RingSampler: skipped {len(self.skipped_identities)} identit(y/ies) with a single image "
                          f"(no pair possible): {', '.join(self.skipped_identities[:10])}", stacklevel=2)
        self.groups = {i: members for i, members in groups.items() if len(members) >= 2}
        if len(self.groups) < 2:
            raise ValueError(f"a ring needs images of at least 2 identities with 2+ images each; got {len(self.groups)}")
        self.small_identities = [label(i) for i, members in self.groups.items() if len(members) < ring_size - 1]
        if self.small_identities:
            warnings.warn(f"RingSampler: {len(self.small_identities)} identit(y/ies) have fewer than R-1 = "
                          f"{ring_size - 1} images; their rings repeat images (sampling with replacement)",
                          stacklevel=2)
        self.rings_per_epoch = sum(math.ceil(len(m) / (ring_size - 1)) for m in self.groups.values())
        self.dropped_per_epoch = self.rings_per_epoch % world_size
        # For the negative draw: all usable indices, and each one's identity.
        self._pool = np.concatenate(list(self.groups.values()))
        self._pool_identity = identity[self._pool]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.rings_per_epoch // self.world_size

    def epoch_rings(self, epoch: int | None = None) -> np.ndarray:
        """All rings of an epoch (every rank's), ``n_rings x R`` dataset indices."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        same = self.ring_size - 1
        rings = []
        for anchor, members in self.groups.items():
            others = self._pool[self._pool_identity != anchor]
            order = rng.permutation(members)
            for start in range(0, len(order), same):
                group = order[start:start + same]
                if len(group) < same:
                    group = np.concatenate([group, self._fill(rng, members, group, same - len(group))])
                rings.append(np.append(group, others[rng.integers(len(others))]))
        rings = np.stack(rings)
        return rings[rng.permutation(len(rings))]

    @staticmethod
    def _fill(rng: np.random.Generator, members: np.ndarray, group: np.ndarray, count: int) -> np.ndarray:
        """``count`` more images of the identity: unused ones first, then with replacement."""
        unused = np.setdiff1d(members, group)
        if len(unused) >= count:
            return rng.choice(unused, size=count, replace=False)
        return rng.choice(members, size=count, replace=True)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        rings = self.epoch_rings()
        rings = rings[:len(rings) - self.dropped_per_epoch][self.rank::self.world_size]
        return iter([tuple(int(i) for i in ring) for ring in rings])


def as_ring_item(ring: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ring as ``FaceDataset[ring]`` gives it (``image`` R x 3 x H x W) with the ring key ``images``."""
    return {("images" if key == "image" else key): value for key, value in ring.items()}


def collate_rings(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack B rings (dicts of ``R x ...`` tensors) into one ring batch; the one collate of the library.

    Items are ``FaceDataset[ring]`` dicts (their ``image`` becomes ``images``) or ring items
    of the training sets (``images`` already); entries that are not tensors are dropped.
    Returns a dict: ``images`` B x R x 3 x H x W in [0, 1] (what
    :func:`ringnet_lib.training.step.ring_step` reads), ``landmarks`` B x R x 68 x 2
    (normalised, camera.py), ``confidence`` B x R x 68, and what the items have of
    ``identity`` B x R, ``index`` B x R, ``flipped`` B x R, ``shape`` B x R x 100
    (``expression``, ``pose``, ``camera``). The odd identity is at ring position R-1.
    """
    items = [as_ring_item(item) for item in items]
    return {key: torch.stack([item[key] for item in items]) for key, value in items[0].items()
            if isinstance(value, torch.Tensor)}


def ring_loader(dataset, ring_size: int = 6, rings_per_batch: int = 4, seed: int = 0, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, **loader_options) -> torch.utils.data.DataLoader:
    """A DataLoader of ring batches (see :func:`collate_rings`) over a :class:`FaceDataset`."""
    sampler = RingSampler(dataset.identity, ring_size, seed, rank, world_size, names=dataset.identity_names)
    generator = torch.Generator().manual_seed(seed + rank)  # seeds the workers' flips
    return torch.utils.data.DataLoader(dataset, batch_size=rings_per_batch, sampler=sampler,
                                       collate_fn=collate_rings, num_workers=num_workers,
                                       generator=generator, persistent_workers=num_workers > 0,
                                       **loader_options)
