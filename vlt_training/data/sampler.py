"""A deterministic, resumable, rank-sharded infinite sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class StepSampler(Sampler):
    """Yields ``(index, sample_seed)`` forever; a pure function of ``(seed, position)``.

    The global stream is epoch after epoch of ``randperm(size)`` seeded with ``seed + epoch``; rank ``r`` of
    ``world_size`` takes every ``world_size``-th element (DistributedSampler's sharding). ``start`` is the number
    of samples this rank has already consumed, so resuming at step ``s`` with ``start = s * samples_per_step``
    gives exactly the batches (and, through ``sample_seed``, exactly the augmentations) of an uninterrupted run.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0,
                 shuffle: bool = True) -> None:
        if size <= 0:
            raise ValueError("StepSampler needs a non-empty dataset")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.start, self.shuffle = start, shuffle

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch, perm = -1, None
        while True:
            global_pos = position * self.world_size + self.rank
            e, offset = divmod(global_pos, self.size)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            # The per-sample seed mixes the run seed and the global position: unique per sample, per epoch.
            yield int(perm[offset]), (self.seed << 32) + global_pos
            position += 1


class SeededRecordsDataset(Dataset):
    """Training records indexed with ``(index, sample_seed)`` (what :class:`StepSampler` yields): the state every
    training dataset holds (records, crop size, augmentation config, normalisation) and each item's generator.

    Augmentation randomness comes only from ``np.random.default_rng(sample_seed)``, so an item is the same for any
    worker count and after a resume. A plain index draws with seed 0.
    """

    def __init__(self, records: list[dict], crop_size: Sequence[int], augment, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.records = records
        self.crop_size = tuple(int(v) for v in crop_size)
        self.augment = augment  # AugmentConfig
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.records)

    def record_and_rng(self, item) -> tuple[dict, np.random.Generator]:
        """The record of ``item`` (an index or ``(index, sample_seed)``) and the generator of its augmentation."""
        index, seed = item if isinstance(item, tuple) else (item, 0)
        return self.records[index], np.random.default_rng(seed)
