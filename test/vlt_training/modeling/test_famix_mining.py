"""FAMix's style mining as the reference runs it: defaults, batch-independent PIN, pooling to the pre-training
grid, un-augmented crops, a progress bar, and the ResNet freezing rule mapped onto ViT blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlt_training.config import AugmentConfig, FAMixOptions
from vlt_training.modeling import create_model
from vlt_training.modeling.famix import SHORT_TEMPLATES, _crop_patches, default_templates, mine_styles
from vlt_training.modeling.modes import default_freeze_blocks

CLASSES = ["road", "car", "sky"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("vltseg_tiny_mask2former", class_names=CLASSES, mode="famix")


def _samples(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = torch.randint(0, len(CLASSES), (4, 8), generator=g).repeat_interleave(16, 0).repeat_interleave(16, 1)
        out.append((torch.randn(3, 64, 128, generator=g), labels))  # a 4x8 token grid, 2x2 patches of 2x4 tokens
    return out


def test_reference_mining_is_the_default():
    opts = FAMixOptions()
    assert opts.mine_images is None  # the whole training set
    assert (opts.pin_optimizer, opts.pin_lr, opts.pin_momentum, opts.pin_steps) == ("sgd", 1.0, 0.9, 100)
    assert opts.pin_pool and opts.templates == []  # empty: CLIP's 80 templates
    templates = default_templates()
    assert len(templates) == len(set(templates)) == 80 and all("{}" in t for t in templates)


def test_pin_results_do_not_depend_on_the_batch(model):
    kw = dict(style_block=0, grid=2, templates=SHORT_TEMPLATES[:2], pin_steps=3, seed=1)
    one = mine_styles(model, _samples(), CLASSES, pin_batch=64, **kw)
    small = mine_styles(model, _samples(), CLASSES, pin_batch=3, **kw)  # streamed: 8 patches as 3 + 3 + 2
    assert one.sizes() == small.sizes() and len(one) == 8
    for k in one.mean:
        assert torch.allclose(one.mean[k], small.mean[k], atol=1e-5), k
        assert torch.allclose(one.std[k], small.std[k], atol=1e-5), k


def test_patches_pooled_to_the_pretraining_grid(model):
    import random

    image, labels = _samples(1)[0]
    backbone = model.backbone
    plain = _crop_patches(backbone, image, labels, CLASSES, 0, 2, ["foggy"], random.Random(0), 255, None)
    pooled = _crop_patches(backbone, image, labels, CLASSES, 0, 2, ["foggy"], random.Random(0), 255, (1, 2))
    assert [s for s, _ in plain] == [(2, 4)] * 4 and [s for s, _ in pooled] == [(1, 2)] * 4
    npre = backbone.num_prefix_tokens
    tokens = plain[0][1][0][npre:].view(2, 4, -1)  # 2, 4, C
    expected = F.avg_pool2d(tokens.permute(2, 0, 1), 2).permute(1, 2, 0).reshape(2, -1)  # 1*2, C
    assert torch.allclose(pooled[0][1][0][npre:], expected, atol=1e-6)
    assert torch.equal(pooled[0][1][0][:npre], plain[0][1][0][:npre])  # prefix tokens untouched


def test_progress_bar(model, capsys):
    mine_styles(model, iter(_samples(1)), CLASSES, style_block=0, grid=2, templates=SHORT_TEMPLATES[:1],
                pin_steps=1, total=1, progress=True)
    assert "FAMix style mining" in capsys.readouterr().err


def test_mining_crops_are_unaugmented(tmp_path):
    import cv2

    from vlt_training.data.segmentation import SegmentationTrainDataset
    from vlt_training.training.mode_setup import mining_dataset

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "img.png"), rng.integers(0, 255, (32, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "seg.png"), rng.integers(0, 3, (32, 64), dtype=np.uint8))
    records = [{"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "seg.png")}]
    aug = AugmentConfig(scale=None, resize_ratio=[0.5, 2.0], flip_prob=1.0, photometric=True)
    train = SegmentationTrainDataset(records, (32, 64), aug, (0, 0, 0), (1, 1, 1))
    mining = mining_dataset(train)
    a, b = mining[(0, 1)][0], mining[(0, 2)][0]
    assert torch.equal(a, b)  # no jitter, flip or colour change: the crop is the image
    assert not torch.equal(train[(0, 1)][0], a)
    assert train.augment.photometric  # the training pipeline itself is left alone


@pytest.mark.parametrize("depth, source, frozen", [(24, "gta5", 22), (24, "cityscapes", 19), (12, "gta5", 11),
                                                   (12, "cityscapes", 9), (4, "gta5", 3)])
def test_resnet_freezing_rule_mapped_by_share_of_depth(depth, source, frozen):
    # reference: ResNet-50's 16 bottleneck blocks; GTA5 trains layer4[2] (1 block), Cityscapes layer4 (3 blocks)
    assert default_freeze_blocks(depth, source) == frozen
