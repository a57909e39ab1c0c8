"""StepSampler: covers every index each epoch, shards ranks disjointly, resumes mid-stream exactly."""

from __future__ import annotations

import itertools

from vlt_training.data.sampler import StepSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    items = take(StepSampler(10, seed=1), 30)
    epochs = [[i for i, _ in items[k:k + 10]] for k in (0, 10, 20)]
    for e in epochs:
        assert sorted(e) == list(range(10))
    assert epochs[0] != epochs[1]
    assert len({seed for _, seed in items}) == 30  # every sample gets its own augmentation seed


def test_ranks_are_disjoint_and_cover_the_stream():
    single = take(StepSampler(12, seed=3), 12)
    r0 = take(StepSampler(12, seed=3, rank=0, world_size=2), 6)
    r1 = take(StepSampler(12, seed=3, rank=1, world_size=2), 6)
    assert sorted(r0 + r1) == sorted(single)
    assert not set(r0) & set(r1)


def test_resume_from_position_matches_uninterrupted_stream():
    full = take(StepSampler(7, seed=5, rank=1, world_size=2), 20)
    resumed = take(StepSampler(7, seed=5, rank=1, world_size=2, start=9), 11)
    assert resumed == full[9:]


def test_seed_changes_order():
    assert take(StepSampler(10, seed=0), 10) != take(StepSampler(10, seed=1), 10)
