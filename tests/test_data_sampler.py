"""Rings and their batches: composition, coverage, reproducibility, small identities (RingBuilder), and the one
batch sampler (RingBatchSampler, ring_loader): DDP shards, exact resume, worker independence."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from ringnet_lib.data.dataset import FaceDataset
from ringnet_lib.data.rings import FolderRingSet, RingBuilder, RingError
from ringnet_lib.data.sampler import RingBatchSampler, ring_loader
from ringnet_lib.data.samples import SYNTHETIC_SAMPLE
from ringnet_lib.data.synthetic import SyntheticRingSet

# 5 identities with 3, 7, 5, 10 and 6 images, indices shuffled so identity != index order.
COUNTS = [3, 7, 5, 10, 6]
IDENTITY = np.random.default_rng(0).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))


def quiet_builder(*args, **kwargs) -> RingBuilder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RingBuilder(*args, **kwargs)


# ------------------------------------------------------------------ ring building (RingBuilder)
@pytest.mark.parametrize("ring_size", [2, 4, 6])
def test_each_ring_is_r_minus_1_of_one_identity_and_one_other(ring_size):
    rings = quiet_builder(IDENTITY, ring_size=ring_size, seed=1).epoch_rings(0)
    assert rings.shape[1] == ring_size
    ids = IDENTITY[rings]
    assert (ids[:, :-1] == ids[:, :1]).all()
    assert (ids[:, -1] != ids[:, 0]).all()
    # Epoch: each identity anchors ceil(n / (R-1)) rings.
    expected = sum(math.ceil(n / (ring_size - 1)) for n in COUNTS)
    assert len(rings) == expected
    assert quiet_builder(IDENTITY, ring_size=ring_size, seed=1).rings_per_epoch == expected
    # Every image is a same-identity member at least once per epoch.
    assert set(rings[:, :-1].ravel()) == set(range(len(IDENTITY)))


def test_no_repeats_within_a_ring_when_identity_is_large_enough():
    rings = RingBuilder(IDENTITY, ring_size=4, seed=2).epoch_rings(0)  # R-1 = 3 <= every count
    assert all(len(set(ring)) == len(ring) for ring in rings)


def test_reproducible_per_seed_and_epoch():
    a, b = RingBuilder(IDENTITY, 4, seed=5), RingBuilder(IDENTITY, 4, seed=5)
    np.testing.assert_array_equal(a.epoch_rings(0), b.epoch_rings(0))
    assert not np.array_equal(a.epoch_rings(0), b.epoch_rings(1))
    np.testing.assert_array_equal(a.epoch_rings(1), b.epoch_rings(1))
    assert not np.array_equal(RingBuilder(IDENTITY, 4, seed=6).epoch_rings(0),
                              RingBuilder(IDENTITY, 4, seed=5).epoch_rings(0))


def test_small_identities_sample_with_replacement_and_warn():
    identity = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    with pytest.warns(UserWarning, match="2 identit.*fewer than R-1 = 5"):
        builder = RingBuilder(identity, ring_size=6, seed=0)
    rings = builder.epoch_rings(0)
    ids = identity[rings]
    assert (ids[:, :-1] == ids[:, :1]).all()
    assert {0, 2} <= set(ids[:, 0])


def test_single_image_identity_is_only_the_other_person_and_named():
    identity = np.array([0, 0, 0, 1, 2, 2, 2])
    with pytest.warns(UserWarning, match="single image.*bob"):
        builder = RingBuilder(identity, ring_size=3, names=["alice", "bob", "carol"])
    assert builder.others_only == ["bob"]
    for epoch in range(5):
        rings = builder.epoch_rings(epoch)
        assert 3 not in rings[:, :-1].ravel()  # never a same-identity member
        assert set(identity[rings[:, 0]]) == {0, 2}  # bob anchors no ring


def test_three_images_and_a_single_image_make_rings_with_the_single_one_last_and_one_warning():
    identity = np.array([0, 0, 0, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = RingBuilder(identity, ring_size=4, seed=0, names=["ann", "bob"])
        seen = [builder.epoch_rings(epoch) for epoch in range(20)]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages  # ONE warning, however many epochs are built
    assert "bob" in messages[0] and "single image" in messages[0] and "ann" not in messages[0]
    assert builder.others_only == ["bob"] and builder.small_identities == [] and builder.rings_per_epoch == 1
    for rings in seen:
        assert rings.shape == (1, 4)
        assert sorted(rings[0, :3]) == [0, 1, 2]  # ann's three images
        assert rings[0, 3] == 3  # bob's image, and only ever LAST


def test_too_few_identities_or_anchors_is_an_error_that_says_what_to_add():
    with pytest.raises(RingError, match="found 1 identity.*Add photos.*1 of someone else"):
        RingBuilder(np.zeros(10, dtype=int), ring_size=6)
    # Two people, one image each: someone can be the other person, nobody can be a ring's subject.
    with pytest.raises(RingError, match=r"0 with 2\+ images.*Add photos: at least 2 of one person \(better 3\)"):
        RingBuilder(np.array([0, 1]), ring_size=4)
    with pytest.raises(RingError, match="at least 2"):
        RingBuilder(IDENTITY, ring_size=1)
    assert issubclass(RingError, ValueError)


# ------------------------------------------------------------------ the batch sampler (RingBatchSampler)
def all_keys(sampler: RingBatchSampler) -> list[list[tuple[int, int]]]:
    return [list(keys) for keys in sampler]


def test_position_and_keys_cover_each_epoch_once():
    sampler = RingBatchSampler(rings_per_epoch=17, batch_size=4, seed=3, total_steps=12)
    assert sampler.batches_per_epoch == 4 and len(sampler) == 12  # 17 // 4: the incomplete batch is dropped
    assert [sampler.position(step) for step in (0, 3, 4, 11)] == [(0, 0), (0, 3), (1, 0), (2, 3)]
    steps = all_keys(sampler)
    assert len(steps) == 12 and all(len(keys) == 4 for keys in steps)
    for epoch in range(3):
        keys = [key for step in steps[4 * epoch:4 * epoch + 4] for key in step]
        assert {e for e, _ in keys} == {epoch}
        rings = [ring for _, ring in keys]
        assert len(set(rings)) == 16 and set(rings) <= set(range(17))  # no ring twice in an epoch
    assert [r for _, r in sum(steps[:4], [])] != [r for _, r in sum(steps[4:8], [])]  # reshuffled every epoch
    assert all_keys(RingBatchSampler(17, 4, seed=3, total_steps=12)) == steps  # from the step number alone
    assert all_keys(RingBatchSampler(17, 4, seed=4, total_steps=12)) != steps
    assert len(RingBatchSampler(17, 4)) == 4  # default: one epoch


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(world_size):
    builder = quiet_builder(IDENTITY, 3, seed=3)  # 17 rings per epoch
    batch_size = 6
    full = RingBatchSampler(builder.rings_per_epoch, batch_size, seed=3, total_steps=4)
    shards = [RingBatchSampler(builder.rings_per_epoch, batch_size, seed=3, rank=r, world_size=world_size,
                               total_steps=4) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # the same number of steps: DDP steps stay in lockstep
    for step in range(4):
        per_rank = [shard.keys(step) for shard in shards]
        assert {len(keys) for keys in per_rank} == {batch_size // world_size}
        union = [key for keys in per_rank for key in keys]
        assert len(set(union)) == len(union)  # no ring on two ranks
        assert set(union) == set(full.keys(step))
    # Per epoch, all ranks together read every ring but the incomplete last batch's.
    for epoch in range(2):
        read = {key for shard in shards for step in range(2 * epoch, 2 * epoch + 2) for key in shard.keys(step)}
        kept = builder.rings_per_epoch - builder.rings_per_epoch % batch_size
        assert len(read) == kept and {e for e, _ in read} == {epoch}
        assert {r for _, r in read} <= set(range(builder.rings_per_epoch))


def test_two_ranks_read_together_what_one_process_reads():
    one = RingBatchSampler(rings_per_epoch=23, batch_size=4, seed=7, total_steps=15)
    ranks = [RingBatchSampler(23, 4, seed=7, rank=r, world_size=2, total_steps=15) for r in range(2)]
    for step, (keys, rank0, rank1) in enumerate(zip(one, *ranks)):
        assert sorted(rank0 + rank1) == sorted(keys), step
        assert not set(rank0) & set(rank1)


@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1)])
@pytest.mark.parametrize("start", [1, 5, 7, 13])
def test_a_sampler_started_at_step_k_yields_what_the_uninterrupted_one_yields_from_k(start, world_size, rank):
    uninterrupted = all_keys(RingBatchSampler(22, 4, seed=2, rank=rank, world_size=world_size, total_steps=20))
    resumed = RingBatchSampler(22, 4, seed=2, rank=rank, world_size=world_size, start_step=start, total_steps=20)
    assert len(resumed) == 20 - start
    assert all_keys(resumed) == uninterrupted[start:]  # 5 batches an epoch: resumes inside and across epochs


def test_bad_batch_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="divisible by the number of processes 3"):
        RingBatchSampler(20, 4, world_size=3)
    with pytest.raises(ValueError, match="3 rings per epoch, fewer than one batch"):
        RingBatchSampler(3, 4)


# ------------------------------------------------------------------ the loader (ring_loader)
def rendered_rings():
    return SyntheticRingSet(n_identities=6, images_per_identity=4, ring_size=3, image_size=16, n_rings=10, seed=1)


def folder_rings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FolderRingSet(FaceDataset(SYNTHETIC_SAMPLE, image_size=16), ring_size=4, seed=2, flip_probability=0.5)


def assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("make_rings", [rendered_rings, folder_rings], ids=["render", "folder"])
def test_two_workers_give_exactly_the_batches_of_no_workers(make_rings):
    rings = make_rings()
    serial = list(ring_loader(rings, batch_size=2, seed=3, workers=0, total_steps=7))
    parallel = list(ring_loader(rings, batch_size=2, seed=3, workers=2, total_steps=7))
    assert len(serial) == 7 and {int(b["identity"].shape[0]) for b in serial} == {2}
    assert_same_batches(parallel, serial)


def test_a_loader_started_at_step_k_gives_the_rest_of_the_uninterrupted_run():
    rings = rendered_rings()  # 10 rings, batches of 4: 2 a epoch, so 7 steps span 4 epochs
    uninterrupted = list(ring_loader(rings, batch_size=4, seed=0, total_steps=7))
    resumed = list(ring_loader(rings, batch_size=4, seed=0, start_step=3, total_steps=7))
    assert_same_batches(resumed, uninterrupted[3:])
    sampler = RingBatchSampler(rings.rings_per_epoch, 4, seed=0, total_steps=7)
    for step, batch in enumerate(uninterrupted):  # each batch holds the rings its keys name
        expected = torch.stack([rings[key]["image_index"] for key in sampler.keys(step)])
        torch.testing.assert_close(batch["image_index"], expected, rtol=0, atol=0)
