"""Segmentation training data over records of the synthetic benchmark (Cityscapes layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny_bench import tiny_bench

from vlt_training.config import AugmentConfig, DataConfig, DatasetConfig
from vlt_training.data.records import DataError, load_records, load_train_records
from vlt_training.data.segmentation import SegmentationTrainDataset, has_sem_seg
from vlt_training.data.sampler import StepSampler
from vlt_training.tasks.registry import collate_batch, get_task

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tiny_bench(tmp_path_factory.mktemp("bench"), num_train=3, num_val=2, conditions=("fog", "night"))


def data_cfg(bench) -> DataConfig:
    return DataConfig(root=str(bench), train=[DatasetConfig(name="cityscapes", root="cityscapes", split="train")])


def test_load_records_filters_sorts_and_limits(bench):
    cfg = data_cfg(bench)
    records = load_train_records(cfg, has_sem_seg)
    assert len(records) == 3 and all(r["sem_seg_file_name"] for r in records)
    acdc = DatasetConfig(name="acdc", root="acdc", split="val", conditions=["night"])
    night = load_records(acdc, cfg)
    assert len(night) == 2 and {r["condition"] for r in night} == {"night"}
    assert len(load_records(DatasetConfig(name="acdc", root="acdc", split="val", limit=3), cfg)) == 3


def test_load_records_errors_name_dataset_and_root(bench):
    cfg = data_cfg(bench)
    with pytest.raises(DataError, match=r"'cityscapes' split 'train' at '.*nowhere'"):
        load_records(DatasetConfig(name="cityscapes", root="nowhere", split="train"), cfg)
    with pytest.raises(DataError, match="unknown dataset"):
        load_records(DatasetConfig(name="kitti360", root="cityscapes", split="train"), cfg)
    with pytest.raises(DataError, match="no usable records for conditions"):
        load_records(DatasetConfig(name="acdc", root="acdc", split="val", conditions=["sandstorm"]), cfg)


def test_items_have_crop_size_valid_labels_and_are_reproducible(bench):
    records = load_train_records(data_cfg(bench))
    ds = SegmentationTrainDataset(records, (24, 40), AugmentConfig(resize_ratio=[0.5, 2.0]), MEAN, STD)
    for index, seed in [(0, 1), (1, 2), (2, 3), (0, 4)]:
        image, target = ds[(index, seed)]
        assert image.shape == (3, 24, 40) and image.dtype == torch.float32
        assert target["sem_seg"].shape == (24, 40) and target["sem_seg"].dtype == torch.long
        labels = set(target["sem_seg"].unique().tolist())
        assert labels <= set(range(19)) | {255}
    a, b = ds[(1, 7)], ds[(1, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["sem_seg"], b[1]["sem_seg"])
    c = ds[(1, 8)]
    assert not torch.equal(a[0], c[0])  # another seed, another augmentation


def test_without_augmentation_item_is_the_normalised_image(bench):
    from vlt_perception.datasets import read_image, read_sem_seg

    records = load_train_records(data_cfg(bench))
    aug = AugmentConfig(resize_ratio=[1.0, 1.0], flip_prob=0.0, photometric=False, cat_max_ratio=1.0)
    ds = SegmentationTrainDataset(records, (32, 64), aug, MEAN, STD)
    image, target = ds[(0, 0)]
    raw = torch.from_numpy(read_image(records[0])).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(image, expected, atol=1e-6)
    assert np.array_equal(target["sem_seg"].numpy(), read_sem_seg(records[0]))


def test_collate_and_task_registry(bench):
    records = load_train_records(data_cfg(bench))
    ds = SegmentationTrainDataset(records, (16, 16), AugmentConfig(), MEAN, STD)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=StepSampler(len(ds)), collate_fn=collate_batch)
    images, targets = next(iter(loader))
    assert images.shape == (2, 3, 16, 16) and len(targets) == 2 and targets[0]["sem_seg"].shape == (16, 16)
    hooks = get_task("segmentation")
    assert hooks.metadata_task == "semantic_segmentation" and hooks.primary_metric == "mIoU"
    with pytest.raises(KeyError, match="unknown task"):
        get_task("depth")
