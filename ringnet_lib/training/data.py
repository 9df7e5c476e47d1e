"""Where the training loop gets rings: the dataset hook and a resumable batch sampler.

``make_dataset(config)`` is the one place that knows about data sources:

* ``"memory"``: :class:`ringnet_lib.training.synthetic.InMemoryRingSet` (FLAME + camera + grey renders);
* ``"synthetic"``: ``data_samples/synthetic``, written by ``python -m ringnet_lib.data.synthesize``;
* anything else: a dataset folder (synthetic or real) in :mod:`ringnet_lib.data.dataset`'s format.

A dataset item is one ring: ``images`` R x 3 x H x W, ``landmarks`` R x 68 x 2,
``confidence`` R x 68, optional ``identity`` R and ``shape`` R x 100;
:func:`~ringnet_lib.data.sampler.collate_rings` (re-exported here) stacks B of them.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.sampler import as_ring_item, collate_rings  # noqa: F401  (collate_rings: the training loop's import)


class RingBatchSampler:
    """Orders, batches and shards ring items already built; use it in the training loop (exact resume, DDP).

    The items are whole rings (``InMemoryRingSet``, or :class:`FolderRingSet`, whose rings
    :class:`ringnet_lib.data.sampler.RingSampler` builds from identities); its position
    ``(epoch, batch)`` goes into checkpoints. Batches are reshuffled every epoch.

    The permutation of epoch ``e`` comes from a generator seeded with
    ``seed + e``, so the position ``(epoch, batch)`` alone restores the order
    (exact resume). Each process takes ``batch[rank::world_size]``.

    Args:
        n_items: rings in the dataset.
        batch_size: rings per global batch (divisible by ``world_size``).
        seed: base seed of the shuffles.
        rank: this process.
        world_size: processes.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        if n_items < batch_size:
            raise ValueError(f"the dataset has {n_items} rings, fewer than one batch ({batch_size})")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n_items // self.batch_size  # the incomplete last batch is dropped

    def next_indices(self) -> list[int]:
        """This process's share of the next global batch; advances the position."""
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        chosen = order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        return chosen[self.rank::self.world_size].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def make_dataset(config, flame=None):
    """The dataset ``config.data`` names; errors (missing path, R too large) before any training.

    ``flame``: the decoder the in-memory set renders with (the run's own, so that
    targets and predictions come from the same model).
    """
    if config.data == "memory":
        from .synthetic import InMemoryRingSet
        return InMemoryRingSet(n_identities=config.n_identities, images_per_identity=config.images_per_identity,
                               ring_size=config.ring_size, image_size=config.image_size, seed=config.data_seed,
                               n_rings=config.n_rings or None, flame=flame,
                               landmarks68=config.landmarks68)
    path = Path(DEFAULT_SYNTHETIC if config.data == "synthetic" else config.data).expanduser()
    if not path.exists():
        hint = (f" Make it with: python -m ringnet_lib.data.synthesize --identities 32 --per-identity 6 "
                f"--size {config.image_size} --out {path}" if config.data == "synthetic" else "")
        raise FileNotFoundError(f"data={config.data!r}: no such folder ({path}). Use 'memory', 'synthetic', or the "
                                f"path of a dataset folder (docs/dataset_format.md).{hint}")
    from ..data.dataset import FaceDataset
    faces = FaceDataset(path, image_size=config.image_size, flip_probability=config.flip_probability)
    return FolderRingSet(faces, config.ring_size, config.data_seed)


DEFAULT_SYNTHETIC = Path(__file__).resolve().parents[2] / "data_samples" / "synthetic"


class FolderRingSet(torch.utils.data.Dataset):
    """Rings of a ``FaceDataset`` (:mod:`ringnet_lib.data.dataset`), as ``RingSampler`` builds them.

    Item ``i`` is ring ``i`` of the current epoch's ring list (which depends only on
    ``(seed, epoch)``); the training loop calls :meth:`set_epoch`, and
    :class:`RingBatchSampler` shards and orders the items, so resume and DDP work as
    with the in-memory set.
    """

    def __init__(self, faces, ring_size: int, seed: int = 0):
        import numpy as np

        from ..data.sampler import RingSampler
        self.faces, self.ring_size = faces, ring_size
        counts = np.unique(np.asarray(faces.identity), return_counts=True)[1]
        self.max_ring_size = int(counts.max()) + 1 if len(counts) else 0
        if ring_size > self.max_ring_size:
            raise ValueError(f"ring_size {ring_size} is larger than the images available: the largest identity of "
                             f"{faces.root} has {self.max_ring_size - 1} images, so rings hold at most "
                             f"{self.max_ring_size}")
        self.sampler = RingSampler(faces.identity, ring_size, seed, names=faces.identity_names)
        self.epoch, self.rings = None, None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.rings = epoch, self.sampler.epoch_rings(epoch)

    @property
    def mean_camera(self) -> torch.Tensor | None:
        """``3``: the average ground-truth camera, when the dataset has one."""
        if "camera" not in self.faces.meta:
            return None
        return torch.as_tensor(self.faces.meta["camera"][self.faces.rows]).float().mean(dim=0)

    def __len__(self) -> int:
        return self.sampler.rings_per_epoch

    def __getitem__(self, index: int) -> dict:
        return as_ring_item(self.faces[tuple(int(i) for i in self.rings[index])])
