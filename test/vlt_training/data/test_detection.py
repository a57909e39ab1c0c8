"""Detection training data: boxes follow every geometric augmentation; crowd / tiny boxes; the task hooks."""

import cv2
import numpy as np
import pytest
import torch

from vlt_training.config import AugmentConfig
from vlt_training.data.detection import (
    DetectionTrainDataset,
    annotations_to_arrays,
    augment,
    has_annotations,
)
from vlt_training.tasks.registry import get_task

RED = (255, 0, 0)


def _scene(h=96, w=160):
    """Black image with two filled rectangles; their boxes (x2, y2 exclusive) and labels."""
    image = np.zeros((h, w, 3), np.uint8)
    boxes = np.array([[10, 20, 50, 60], [100, 8, 150, 40]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        image[y1:y2, x1:x2] = RED
    return image, boxes, np.array([2, 0])


def _red_box(image: np.ndarray) -> np.ndarray:
    """Bounding box of the red pixels of one connected rectangle (x2, y2 exclusive)."""
    ys, xs = np.nonzero((image[..., 0] > 128) & (image[..., 1] < 100))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_resize_crop_and_flip(seed):
    image, boxes, labels = _scene()
    aug = AugmentConfig(scale=None, resize_ratio=[0.6, 1.4], flip_prob=0.5, photometric=False)
    out, out_boxes, out_labels, _ = augment(image, boxes, labels, np.random.default_rng(seed), (64, 96), aug)
    assert out.shape == (64, 96, 3)
    assert len(out_boxes) == len(out_labels) and len(out_boxes) >= 1
    # Every kept box covers red pixels only along its outline: compare with the red region inside it.
    for box in out_boxes:
        x1, y1, x2, y2 = np.round(box).astype(int)
        window = np.zeros_like(out)
        window[y1:y2, x1:x2] = out[y1:y2, x1:x2]
        np.testing.assert_allclose(_red_box(window), box, atol=1.5)
    # No red object is visible without a box (objects cut below MIN_BOX_SIDE are allowed to vanish).
    red = (out[..., 0] > 128) & (out[..., 1] < 100)
    covered = np.zeros_like(red)
    for x1, y1, x2, y2 in np.round(out_boxes).astype(int):
        covered[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
    assert not (red & ~covered).any()


def test_large_scale_jitter_recipe():
    """ViTDet's LSJ (detectron2 ResizeScale(0.1, 2.0) to a square target + FixedSizeCrop) is this augmentation
    with ``scale: [S, S]``, ``resize_ratio: [0.1, 2.0]`` and ``crop_size: [S, S]``: the long side lands uniformly
    in [0.1 S, 2 S], then a random S x S crop (padded where smaller), boxes following."""
    from vlt_training.data import transforms as T

    image, boxes, labels = _scene()  # 96 x 160: fitting S = 64 scales by 0.4
    long_sides = [max(T.random_resize(image, None, np.random.default_rng(s), [64, 64], [0.1, 2.0])[0].shape[:2])
                  for s in range(60)]
    assert 6 <= min(long_sides) < 0.3 * 64 and 1.7 * 64 < max(long_sides) <= 128
    aug = AugmentConfig(scale=[64, 64], resize_ratio=[0.1, 2.0], flip_prob=0.5, photometric=False)
    kept = 0
    for seed in range(12):
        out, out_boxes, _, _ = augment(image, boxes, labels, np.random.default_rng(seed), (64, 64), aug)
        assert out.shape == (64, 64, 3)
        for box in out_boxes:
            x1, y1, x2, y2 = np.round(box).astype(int)
            window = np.zeros_like(out)
            window[y1:y2, x1:x2] = out[y1:y2, x1:x2]
            np.testing.assert_allclose(_red_box(window), box, atol=1.5)
            kept += 1
    assert kept >= 6


def test_crop_clips_and_drops_boxes_outside():
    image, boxes, labels = _scene()
    aug = AugmentConfig(scale=None, resize_ratio=[1.0, 1.0], flip_prob=0.0, photometric=False)
    # A 40 x 60 crop cannot hold both objects; across seeds we must see clipping and dropping, never a box
    # outside the crop.
    seen_dropped = seen_clipped = False
    for seed in range(20):
        _, out_boxes, out_labels, _ = augment(image, boxes, labels, np.random.default_rng(seed), (40, 60), aug)
        assert (out_boxes[:, [0, 1]] >= 0).all() and (out_boxes[:, 2] <= 60).all() and (out_boxes[:, 3] <= 40).all()
        assert ((out_boxes[:, 2:] - out_boxes[:, :2]) >= 1).all()
        seen_dropped |= len(out_boxes) < 2
        seen_clipped |= bool(((out_boxes[:, 2] - out_boxes[:, 0]) < 40).any())
    assert seen_dropped and seen_clipped


def test_pad_keeps_box_coordinates():
    image = np.full((48, 80, 3), 200, np.uint8)
    boxes = np.array([[10, 12, 50, 40]], np.float32)
    aug = AugmentConfig(scale=None, resize_ratio=[1.0, 1.0], flip_prob=0.0, photometric=False)
    out, out_boxes, _, _ = augment(image, boxes, np.array([1]), np.random.default_rng(0), (64, 96), aug)
    assert out.shape == (64, 96, 3) and (out[48:] == 0).all() and (out[:, 80:] == 0).all()
    np.testing.assert_array_equal(out_boxes, boxes)


def _record(tmp_path, annotations):
    image, _, _ = _scene()
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image[..., ::-1])
    return {"file_name": str(path), "image_id": "img", "height": 96, "width": 160, "dataset": "t",
            "condition": "clear", "annotations": annotations}


def test_dataset_items_are_deterministic_and_skip_crowd(tmp_path):
    record = _record(tmp_path, [
        {"bbox": [10, 20, 50, 60], "category_id": 2, "iscrowd": 0},
        {"bbox": [100, 8, 150, 40], "category_id": 0, "iscrowd": 1},  # crowd: not a training target
        {"bbox": [0, 0, 160, 0.5], "category_id": 1, "iscrowd": 0},  # thinner than MIN_BOX_SIDE
    ])
    aug = AugmentConfig(scale=None, resize_ratio=[0.8, 1.2], flip_prob=0.5, photometric=True)
    ds = DetectionTrainDataset([record], (96, 160), aug, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    a_img, a_t = ds[(0, 123)]
    b_img, b_t = ds[(0, 123)]
    assert a_img.shape == (3, 96, 160) and a_img.dtype == torch.float32
    assert torch.equal(a_img, b_img) and torch.equal(a_t["boxes"], b_t["boxes"])
    assert a_t["labels"].tolist() == [2] and a_t["labels"].dtype == torch.int64
    assert a_t["boxes"].shape == (1, 4) and a_t["boxes"].dtype == torch.float32


def test_background_images_and_errors(tmp_path):
    assert has_annotations({"annotations": []}) and not has_annotations({"sem_seg_file_name": "x.png"})
    boxes, labels, crowd = annotations_to_arrays({"annotations": []})
    assert boxes.shape == (0, 4) and labels.shape == (0,) and crowd.shape == (0,)
    with pytest.raises(ValueError, match="bad.png.*malformed annotation"):
        annotations_to_arrays({"file_name": "bad.png", "annotations": [{"box": [1, 2, 3, 4]}]})
    with pytest.raises(ValueError, match="no 'annotations'"):
        annotations_to_arrays({"file_name": "seg_only.png"})
    record = _record(tmp_path, [])
    ds = DetectionTrainDataset([record], (96, 160), AugmentConfig(photometric=False), (0.5,) * 3, (0.25,) * 3)
    _, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_detection_task_hooks_are_registered():
    hooks = get_task("detection")
    assert hooks.metadata_task == "detection" and hooks.primary_metric == "mAP"
    assert hooks.record_filter({"annotations": []})


def _scene_masks(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, H, W) masks of the scene's rectangles, each with a hole in its middle (so a mask is not its box)."""
    masks = np.zeros((len(boxes), *image.shape[:2]), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[i, y1:y2, x1:x2] = 1
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        masks[i, cy - 4:cy + 4, cx - 4:cx + 4] = 0
        image[cy - 4:cy + 4, cx - 4:cx + 4] = 0  # the hole is black in the image too
    return masks


@pytest.mark.parametrize("seed", range(6))
def test_masks_follow_resize_crop_flip_and_pad(seed):
    """Mask R-CNN targets: every kept mask covers its object's red pixels (up to edge pixels) after each geometric
    step, and the random draws are the same with or without masks."""
    image, boxes, labels = _scene()
    masks = _scene_masks(image, boxes)
    aug = AugmentConfig(scale=None, resize_ratio=[0.6, 1.4], flip_prob=0.5, photometric=False)
    out, out_boxes, out_labels, out_masks = augment(image, boxes, labels, np.random.default_rng(seed), (80, 128),
                                                    aug, masks)
    plain, plain_boxes, _, none = augment(image, boxes, labels, np.random.default_rng(seed), (80, 128), aug)
    assert none is None and np.array_equal(out, plain) and np.array_equal(out_boxes, plain_boxes)
    assert out_masks.shape == (len(out_boxes), 80, 128) and out_masks.dtype == np.uint8
    red = (out[..., 0] > 128) & (out[..., 1] < 100)
    for box, mask in zip(out_boxes, out_masks):
        x1, y1, x2, y2 = np.round(box).astype(int)
        inside = np.zeros_like(red)  # the box, one pixel wider (rounding of the resized box and mask)
        inside[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1] = True
        # nearest-neighbour masks and bilinear images differ by at most a pixel along edges
        # edges: the bilinear image and the nearest-neighbour mask may disagree by a pixel along the outline and
        # the hole's; a mask shifted or flipped the wrong way misses by far more
        assert (mask.astype(bool) ^ (red & inside)).sum() <= 2 * ((x2 - x1) + (y2 - y1)) + 40
        assert not mask[~inside].any()  # nothing outside its own box


def test_dataset_reads_masks_from_the_instance_map(tmp_path):
    """``with_masks`` (Mask R-CNN models) reads each annotation's mask through its ``instance_id``; crowd regions
    are dropped from masks as from boxes; a record without a mask source is a clear error."""
    from vlt_training.data.detection import build_train_dataset, model_predicts_masks
    from vlt_training.config import Config

    image, boxes, _ = _scene()
    ids = np.zeros((96, 160), np.uint16)
    ids[20:60, 10:50] = 26001  # car 1
    ids[8:40, 100:150] = 24  # a crowd of persons
    instance_path = tmp_path / "inst.png"
    cv2.imwrite(str(instance_path), ids)
    record = _record(tmp_path, [{"bbox": [10, 20, 50, 60], "category_id": 2, "iscrowd": 0, "instance_id": 26001},
                                {"bbox": [100, 8, 150, 40], "category_id": 0, "iscrowd": 1, "instance_id": 24}])
    record["instance_file_name"] = str(instance_path)
    aug = AugmentConfig(scale=None, resize_ratio=[1.0, 1.0], flip_prob=0.0, photometric=False)
    ds = DetectionTrainDataset([record], (96, 160), aug, (0.5,) * 3, (0.25,) * 3, with_masks=True)
    _, target = ds[0]
    assert target["masks"].shape == (1, 96, 160) and target["masks"].dtype == torch.uint8
    assert torch.equal(target["masks"][0].bool(), torch.from_numpy(ids == 26001))
    assert "masks" not in DetectionTrainDataset([record], (96, 160), aug, (0.5,) * 3, (0.25,) * 3)[0][1]
    assert model_predicts_masks("vltdet_tiny_maskrcnn") and not model_predicts_masks("vltdet_tiny_fasterrcnn")
    assert model_predicts_masks("vltdet_tiny_fasterrcnn", {"mask_convs": 2})  # a mask branch by override
    cfg = Config(task="detection")
    cfg.model.name = "vltdet_vit_b16_maskrcnn"
    assert build_train_dataset([record], cfg, (0.5,) * 3, (0.25,) * 3).with_masks
    no_source = _record(tmp_path, [{"bbox": [10, 20, 50, 60], "category_id": 2, "iscrowd": 0}])
    with pytest.raises(ValueError, match="img.png: Mask R-CNN needs instance masks"):
        DetectionTrainDataset([no_source], (96, 160), aug, (0.5,) * 3, (0.25,) * 3, with_masks=True)[0]
