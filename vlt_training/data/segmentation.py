"""Semantic-segmentation data for the trainer."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from vlt_training.config import AugmentConfig, Config
from vlt_training.data import transforms as T
from vlt_training.data.sampler import SeededRecordsDataset


def _read(record: dict) -> tuple[np.ndarray, np.ndarray]:
    from vlt_perception.datasets import read_image, read_sem_seg

    image, seg = read_image(record), read_sem_seg(record)
    if image.shape[:2] != seg.shape[:2]:
        # A few official GTA5 label PNGs differ in size from their frames: resize (nearest) like mmseg users do.
        seg = cv2.resize(seg, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return image, seg


class SegmentationTrainDataset(SeededRecordsDataset):
    """Records -> augmented ``(image (3, H, W), {"sem_seg": (H, W) long})`` of exactly ``crop_size``.

    Indexed with ``(index, sample_seed)`` (see ``StepSampler``); a plain index means seed 0.
    Pipeline (mmseg / VLTSeg): random resize, cat-max-ratio random crop, pad, flip, photometric distortion.
    """

    def __init__(self, records: list[dict], crop_size: Sequence[int], augment: AugmentConfig,
                 mean: Sequence[float], std: Sequence[float], ignore_index: int = 255) -> None:
        super().__init__(records, crop_size, augment, mean, std)
        self.ignore_index = ignore_index

    def __getitem__(self, item):
        record, rng = self.record_and_rng(item)
        image, seg = _read(record)
        aug = self.augment
        image, seg = T.random_resize(image, seg, rng, aug.scale, aug.resize_ratio, aug.keep_ratio)
        image, seg = T.random_crop(image, seg, rng, self.crop_size, aug.cat_max_ratio, self.ignore_index)
        image, seg = T.random_flip(image, seg, rng, aug.flip_prob)
        if aug.photometric:
            image = T.photometric_distortion(image, rng)
        image, seg = T.pad_to(image, seg, self.crop_size, self.ignore_index)
        target = {"sem_seg": torch.from_numpy(np.ascontiguousarray(seg)).long()}  # H, W
        return T.to_tensor(image, self.mean, self.std), target


def build_train_dataset(records: list[dict], cfg: Config, mean, std) -> SegmentationTrainDataset:
    return SegmentationTrainDataset(records, cfg.data.crop_size, cfg.data.augment, mean, std,
                                    cfg.data.ignore_index)


def has_sem_seg(record: dict) -> bool:
    return bool(record.get("sem_seg_file_name"))
