"""Ring sampler invariants: composition, coverage, reproducibility, DDP shards, small identities."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ringnet_lib.data.sampler import RingSampler

# 5 identities with 3, 7, 5, 10 and 6 images, indices shuffled so identity != index order.
COUNTS = [3, 7, 5, 10, 6]
IDENTITY = np.random.default_rng(0).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))


def rings_of(sampler: RingSampler) -> np.ndarray:
    return np.array(list(iter(sampler)))


@pytest.mark.parametrize("ring_size", [2, 4, 6])
def test_each_ring_is_r_minus_1_of_one_identity_and_one_other(ring_size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rings = rings_of(RingSampler(IDENTITY, ring_size=ring_size, seed=1))
    assert rings.shape[1] == ring_size
    ids = IDENTITY[rings]
    assert (ids[:, :-1] == ids[:, :1]).all()
    assert (ids[:, -1] != ids[:, 0]).all()
    # Epoch: each identity anchors ceil(n / (R-1)) rings.
    expected = sum(math.ceil(n / (ring_size - 1)) for n in COUNTS)
    assert len(rings) == expected
    # Every image is a same-identity member at least once per epoch.
    assert set(rings[:, :-1].ravel()) == set(range(len(IDENTITY)))


def test_no_repeats_within_a_ring_when_identity_is_large_enough():
    rings = rings_of(RingSampler(IDENTITY, ring_size=4, seed=2))  # R-1 = 3 <= every count
    assert all(len(set(ring)) == len(ring) for ring in rings)


def test_reproducible_per_seed_and_epoch():
    a, b = RingSampler(IDENTITY, 4, seed=5), RingSampler(IDENTITY, 4, seed=5)
    np.testing.assert_array_equal(rings_of(a), rings_of(b))
    b.set_epoch(1)
    assert not np.array_equal(rings_of(a), rings_of(b))
    a.set_epoch(1)
    np.testing.assert_array_equal(rings_of(a), rings_of(b))
    assert not np.array_equal(rings_of(RingSampler(IDENTITY, 4, seed=6)), rings_of(RingSampler(IDENTITY, 4, seed=5)))


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(world_size):
    full = RingSampler(IDENTITY, 4, seed=3).epoch_rings(0)
    shards = [rings_of(RingSampler(IDENTITY, 4, seed=3, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # equal length: DDP steps stay in lockstep
    kept = len(full) - len(full) % world_size
    union = np.concatenate(shards)
    assert len(union) == kept
    as_set = {tuple(r) for r in union}
    assert len(as_set) == len(union)  # no ring on two ranks
    assert as_set == {tuple(r) for r in full[:kept]}
    assert RingSampler(IDENTITY, 4, seed=3, world_size=world_size).dropped_per_epoch == len(full) % world_size


def test_small_identities_sample_with_replacement_and_warn():
    identity = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    with pytest.warns(UserWarning, match="2 identit.*fewer than R-1 = 5"):
        sampler = RingSampler(identity, ring_size=6, seed=0)
    rings = rings_of(sampler)
    ids = identity[rings]
    assert (ids[:, :-1] == ids[:, :1]).all()
    assert {0, 2} <= set(ids[:, 0])


def test_single_image_identity_is_skipped_and_named():
    identity = np.array([0, 0, 0, 1, 2, 2, 2])
    with pytest.warns(UserWarning, match="single image.*bob"):
        sampler = RingSampler(identity, ring_size=3, names=["alice", "bob", "carol"])
    assert sampler.skipped_identities == ["bob"]
    assert 3 not in rings_of(sampler).ravel()


def test_too_few_identities_is_an_error():
    with pytest.raises(ValueError, match="at least 2 identities"):
        RingSampler(np.zeros(10, dtype=int), ring_size=6)
