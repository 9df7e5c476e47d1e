"""Rings from identity-labelled images: R-1 images of one person, 1 of another (Sanyal et al., CVPR 2019).

RingNet's ring loss compares the shapes predicted for the R images of a ring: the R-1
images of the same person must give closer β than the odd one out (R = 6 in the paper).

Epoch. In every epoch each *anchor* identity is the subject of ``ceil(n_i / (R-1))`` rings:
its images are shuffled and cut into groups of R-1, so every image is a same-identity member
at least once per epoch; the last group is filled up by drawing from the identity's other
images (no image twice in a ring when n_i >= R-1). Each ring gets one image of another
identity, drawn uniformly over all images of the other identities, placed LAST (index R-1).
Rings are then shuffled. Rings depend only on (seed, epoch).

Who can be what:

* any identity with at least one image can be the "other" person (the paper's R-th image);
* an anchor needs 2 images (1 when R = 2): with one image, the ring's R-1 "views" would be
  copies of one photo;
* an anchor with fewer than R-1 images fills its rings by drawing its images again (some repeat);
* all of these are counted and named in ONE warning (:attr:`RingBuilder.report`).

Fewer than one anchor and one other identity is a :class:`RingError` that says what to add.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .dataset import FaceDataset


class RingError(ValueError):
    """The images cannot make rings (too few identities or images); the message says what to add."""


class RingBuilder:
    """The rings of every epoch, from each image's identity.

    Args:
        identity: per image, its identity (``FaceDataset.identity``).
        ring_size: R >= 2.
        seed: base seed; rings depend on (seed, epoch) only.
        names: optional identity names, for messages.
    """

    def __init__(self, identity: Sequence[int] | np.ndarray, ring_size: int = 6, seed: int = 0,
                 names: Sequence[str] | None = None):
        if ring_size < 2:
            raise RingError(f"ring_size must be at least 2 (one person plus one other), got {ring_size}")
        identity = np.asarray(identity)
        self.ring_size, self.seed = ring_size, seed
        label = (lambda i: str(names[i])) if names is not None else str
        groups = {int(i): np.nonzero(identity == i)[0] for i in np.unique(identity)}
        minimum = 1 if ring_size == 2 else 2
        self.anchors = {i: members for i, members in groups.items() if len(members) >= minimum}
        self.others_only = [label(i) for i, members in groups.items() if len(members) < minimum]
        self.small_identities = [label(i) for i, members in self.anchors.items() if len(members) < ring_size - 1]
        if not self.anchors or len(groups) < 2:
            raise RingError(
                f"a ring needs {ring_size - 1} images of one person and 1 of another: found {len(groups)} "
                f"identit{'y' if len(groups) == 1 else 'ies'}, {len(self.anchors)} with {minimum}+ images. "
                f"Add photos: at least {minimum} of one person (better {ring_size - 1}) and 1 of someone else "
                "(one sub-folder per person)")
        self.report = self._report()
        if self.report:
            warnings.warn(f"RingBuilder: {self.report}", stacklevel=2)
        self.rings_per_epoch = sum(math.ceil(len(m) / (ring_size - 1)) for m in self.anchors.values())
        # For the negative draw: all images, and each one's identity.
        self._pool = np.concatenate(list(groups.values()))
        self._pool_identity = identity[self._pool]
        self._cached = None  # (epoch, rings): a worker reads one epoch's rings many times

    def _report(self) -> str:
        """One line about identities that are not full anchors (empty when all are)."""
        parts = []
        if self.others_only:
            one = len(self.others_only) == 1
            parts.append(f"{len(self.others_only)} identit{'y' if one else 'ies'} with a single image only "
                         f"serve{'s' if one else ''} as the other person: {', '.join(self.others_only[:10])}")
        if self.small_identities:
            one = len(self.small_identities) == 1
            parts.append(f"{len(self.small_identities)} identit{'y' if one else 'ies'} with fewer than R-1 = "
                         f"{self.ring_size - 1} images repeat{'s' if one else ''} images in "
                         f"{'its' if one else 'their'} rings: {', '.join(self.small_identities[:10])}")
        return "; ".join(parts)

    def epoch_rings(self, epoch: int) -> np.ndarray:
        """All rings of an epoch, ``n_rings x R`` image indices (the odd identity last); read-only."""
        if self._cached is None or self._cached[0] != epoch:
            rings = self._build(epoch)
            rings.setflags(write=False)
            self._cached = (epoch, rings)
        return self._cached[1]

    def _build(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        same = self.ring_size - 1
        rings = []
        for anchor, members in self.anchors.items():
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


class FolderRingSet(torch.utils.data.Dataset):
    """Rings of a dataset folder (:class:`~ringnet_lib.data.dataset.FaceDataset`), keyed by ``(epoch, ring)``.

    Item ``(e, i)`` is ring ``i`` of epoch ``e`` (:meth:`RingBuilder.epoch_rings`), with each
    image flipped horizontally with probability ``flip_probability``, decided by a generator
    seeded with ``(seed, e, i)``: the same in every worker process and after a resume.

    Args:
        faces: the dataset.
        ring_size: R.
        seed: rings and flips.
        flip_probability: chance of a horizontal flip per image.
    """

    def __init__(self, faces: FaceDataset, ring_size: int, seed: int = 0, flip_probability: float = 0.0):
        self.faces, self.ring_size, self.seed, self.flip_probability = faces, ring_size, seed, flip_probability
        self.builder = RingBuilder(faces.identity, ring_size, seed, names=faces.identity_names)

    @property
    def rings_per_epoch(self) -> int:
        return self.builder.rings_per_epoch

    def mean_camera(self, decoder=None) -> torch.Tensor | None:
        """``3``: the average ground-truth camera, when the dataset has one (the encoder's starting camera;
        ``decoder`` is not needed here, as it is for rendered rings)."""
        return self.faces.mean_camera

    def __len__(self) -> int:
        return self.rings_per_epoch

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        ring = self.builder.epoch_rings(int(epoch))[int(index)]
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        flips = rng.random(len(ring)) < self.flip_probability
        return self.faces.ring(ring, flips)
