"""Object-detection data for the trainer: records -> augmented images + box targets.

Records come from ``vlt_perception.datasets`` with ``annotations`` ``[{"bbox": [x1, y1, x2, y2], "category_id",
"iscrowd"}]`` (COCO json, Cityscapes / ACDC instance maps, BDD100K, the synthetic benchmark). Augmentation is the
segmentation pipeline's (``vlt_training.data.transforms``: random resize, random crop, flip, photometric, pad) with
the boxes (and, for Mask R-CNN, the instance masks) carried through each geometric step. Crowd regions are dropped
from training targets (FCOS has no "ignore" region) but kept for evaluation, where COCO ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlt_training.config import AugmentConfig, Config
from vlt_training.data import transforms as T
from vlt_training.data.sampler import SeededRecordsDataset

# Boxes thinner than this (in training-input pixels) after cropping are dropped: no FCOS cell can match them.
MIN_BOX_SIDE = 1.0


def annotations_to_arrays(record: dict, keep_crowd: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record's annotations as (boxes (N, 4) float32 xyxy, labels (N,) int64, iscrowd (N,) int64).

    Raises ``ValueError`` naming the image when an annotation is malformed.
    """
    anns = record.get("annotations")
    if anns is None:
        raise ValueError(f"{record.get('file_name')}: record has no 'annotations' (not a detection dataset?)")
    if not keep_crowd:
        anns = [a for a in anns if not a.get("iscrowd", 0)]
    try:
        boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray([a["category_id"] for a in anns], dtype=np.int64).reshape(-1)
        crowd = np.asarray([a.get("iscrowd", 0) for a in anns], dtype=np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{record.get('file_name')}: malformed annotation ({exc!r}); expected "
                         "{'bbox': [x1, y1, x2, y2], 'category_id': int, 'iscrowd': 0|1}") from exc
    return boxes, labels, crowd


def _read(record: dict, with_masks: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Image (H, W, 3) uint8 RGB and its non-crowd boxes (N, 4) / labels (N,), boxes clipped to the image, and
    with ``with_masks`` their (N, H, W) uint8 instance masks (else ``None``)."""
    from vlt_perception.datasets import instance_masks, read_image

    image = read_image(record)
    boxes, labels, _ = annotations_to_arrays(record, keep_crowd=False)
    h, w = image.shape[:2]
    boxes = clip_boxes(boxes, h, w)
    keep = _big_enough(boxes)
    masks = None
    if with_masks:
        anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        masks = instance_masks({**record, "height": h, "width": w}, anns)
        if masks is None:
            raise ValueError(f"{record.get('file_name')}: Mask R-CNN needs instance masks, but the record has neither "
                             "an instance map (instance_file_name + instance_id) nor COCO segmentations")
        masks = masks[keep]
    return image, boxes[keep], labels[keep], masks


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip (N, 4) xyxy boxes to [0, width] x [0, height]."""
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def _big_enough(boxes: np.ndarray, min_side: float = MIN_BOX_SIDE) -> np.ndarray:
    return ((boxes[:, 2] - boxes[:, 0]) >= min_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_side)


def _scaled(boxes: np.ndarray, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    return boxes * np.array([sx, sy, sx, sy], dtype=np.float32)


def augment(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            crop_size: Sequence[int], aug: AugmentConfig, masks: np.ndarray | None = None):
    """Random resize, random crop, flip, photometric distortion and padding to ``crop_size``, boxes (and the
    (N, H, W) uint8 ``masks``, if given) following.

    Returns the (crop_h, crop_w, 3) image, the boxes / labels that remain at least ``MIN_BOX_SIDE`` wide and
    high inside the crop (clipped to it) and their (N, crop_h, crop_w) masks (``None`` without ``masks``). The
    random draws do not depend on ``masks``. ``aug.cat_max_ratio`` is a segmentation setting and is not used.
    """
    h0, w0 = image.shape[:2]
    image, _ = T.random_resize(image, None, rng, aug.scale, aug.resize_ratio, aug.keep_ratio)
    boxes = _scaled(boxes, (h0, w0), image.shape[:2])
    h, w = image.shape[:2]
    if masks is not None and (h, w) != (h0, w0):
        masks = _resized_masks(masks, (h, w))
    # The crop draws its offsets exactly as the segmentation crop does (cat_max_ratio off: no labels to look at).
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = image[y0:y0 + ch, x0:x0 + cw]
    boxes = clip_boxes(boxes - np.array([x0, y0, x0, y0], dtype=np.float32), ch, cw)
    keep = _big_enough(boxes)
    boxes, labels = boxes[keep], labels[keep]
    if masks is not None:
        masks = masks[keep, y0:y0 + ch, x0:x0 + cw]
    if rng.random() < aug.flip_prob:
        image = image[:, ::-1]
        boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], axis=1).reshape(-1, 4)
        masks = masks[:, :, ::-1] if masks is not None else None
    if aug.photometric:
        image = T.photometric_distortion(np.ascontiguousarray(image), rng)
    image, _ = T.pad_to(image, None, crop_size)  # bottom / right: box coordinates are unchanged
    if masks is not None:
        masks = np.pad(masks, ((0, 0), (0, crop_size[0] - ch), (0, crop_size[1] - cw)))
        masks = np.ascontiguousarray(masks)
    return image, boxes.astype(np.float32), labels, masks


def _resized_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) uint8 masks resized (nearest, as labels are) to (N, *size)."""
    import cv2

    out = np.zeros((masks.shape[0], *size), np.uint8)
    for i, mask in enumerate(masks):
        out[i] = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return out


class DetectionTrainDataset(SeededRecordsDataset):
    """Records -> augmented ``(image (3, H, W) normalised, {"boxes": (N, 4) float32, "labels": (N,) long})``
    of exactly ``crop_size``; with ``with_masks`` the target also has ``"masks"`` (N, H, W) uint8 (Mask R-CNN).

    Indexed with ``(index, sample_seed)`` (see ``StepSampler``); a plain index means seed 0.
    """

    def __init__(self, records: list[dict], crop_size: Sequence[int], augment_cfg: AugmentConfig,
                 mean: Sequence[float], std: Sequence[float], with_masks: bool = False) -> None:
        super().__init__(records, crop_size, augment_cfg, mean, std)
        self.with_masks = with_masks

    def __getitem__(self, item):
        record, rng = self.record_and_rng(item)
        image, boxes, labels, masks = _read(record, self.with_masks)
        image, boxes, labels, masks = augment(image, boxes, labels, rng, self.crop_size, self.augment, masks)
        target = {"boxes": torch.from_numpy(boxes).reshape(-1, 4), "labels": torch.from_numpy(labels).long()}
        if masks is not None:
            target["masks"] = torch.from_numpy(masks)
        return T.to_tensor(image, self.mean, self.std), target


def model_predicts_masks(model_name: str, overrides: dict | None = None) -> bool:
    """Whether a registered detector needs instance masks to train: registry names say the head (``*_maskrcnn``
    models have a mask branch), and a ``mask_convs`` override adds one to a ``*_fasterrcnn`` model."""
    overrides = overrides or {}
    if "mask_convs" in overrides:
        return overrides["mask_convs"] is not None
    return model_name.endswith("_maskrcnn")


def build_train_dataset(records: list[dict], cfg: Config, mean, std) -> DetectionTrainDataset:
    with_masks = model_predicts_masks(cfg.model.name, cfg.model.overrides)
    return DetectionTrainDataset(records, cfg.data.crop_size, cfg.data.augment, mean, std, with_masks=with_masks)


def has_annotations(record: dict) -> bool:
    """Detection can use a record that lists its objects (an empty list is a valid background image)."""
    return record.get("annotations") is not None
