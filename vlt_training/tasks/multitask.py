"""The multi-task task (``task: multitask``): segmentation and detection trained together on one model (VLTMT).

Records need both labels: a label map and a list of objects (the synthetic benchmark's label maps and COCO boxes /
masks, Cityscapes and ACDC with their instance maps). One augmentation draw moves the image, the label map, the
boxes and (Mask R-CNN) the instance masks together: random resize, a random crop of ``data.crop_size`` (offsets
drawn as the detection crop draws them: ``cat_max_ratio`` is a label-map-only setting and is not used), flip,
photometric distortion, padding (label map: ignore; masks: 0).

Evaluation runs the existing evaluators on the model's two task views (each runs only its head) and merges their
metrics per dataset and condition: the segmentation metrics (``mIoU`` ...) plus the detection metrics (``mAP``,
``AP50`` ...; their per-class lists under ``per_class_AP``), with ``segmentation`` / ``detection`` holding each
evaluator's full result. The primary metric (retention, checkpoint reports) is ``mIoU``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlt_perception.metadata import TASK_MULTITASK
from vlt_training.config import AugmentConfig, Config
from vlt_training.data import transforms as T
from vlt_training.data.detection import _big_enough, _resized_masks, _scaled, clip_boxes, has_annotations
from vlt_training.data.detection import _read as read_detection
from vlt_training.data.sampler import SeededRecordsDataset
from vlt_training.data.segmentation import has_sem_seg
from vlt_training.modeling.meta_arch.vltmt import VLTMultiTask
from vlt_training.tasks.registry import TaskHooks, register_task


def has_both(record: dict) -> bool:
    """A record the multi-task model can train on: a label map and a list of objects."""
    return has_sem_seg(record) and has_annotations(record)


def augment(image: np.ndarray, seg: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            crop_size: Sequence[int], aug: AugmentConfig, ignore_index: int, masks: np.ndarray | None = None):
    """One geometric draw for all targets: (image (h, w, 3), seg (h, w), boxes (N, 4), labels (N,), masks
    (N, h, w) or None) of exactly ``crop_size``; boxes thinner than ``MIN_BOX_SIDE`` after the crop are dropped.

    The steps are those of :func:`vlt_training.data.detection.augment` with the label map carried along (resized
    nearest, padded with the ignore label), which that function has no place for; the random draws are the same.
    """
    h0, w0 = image.shape[:2]
    image, seg = T.random_resize(image, seg, rng, aug.scale, aug.resize_ratio, aug.keep_ratio)
    h, w = image.shape[:2]
    boxes = _scaled(boxes, (h0, w0), (h, w))
    if masks is not None and (h, w) != (h0, w0):
        masks = _resized_masks(masks, (h, w))
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image, seg = image[y0:y0 + ch, x0:x0 + cw], seg[y0:y0 + ch, x0:x0 + cw]
    boxes = clip_boxes(boxes - np.array([x0, y0, x0, y0], dtype=np.float32), ch, cw)
    keep = _big_enough(boxes)
    boxes, labels = boxes[keep], labels[keep]
    if masks is not None:
        masks = masks[keep, y0:y0 + ch, x0:x0 + cw]
    if rng.random() < aug.flip_prob:
        image, seg = image[:, ::-1], seg[:, ::-1]
        boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], axis=1).reshape(-1, 4)
        masks = masks[:, :, ::-1] if masks is not None else None
    if aug.photometric:
        image = T.photometric_distortion(np.ascontiguousarray(image), rng)
    image, seg = T.pad_to(image, seg, crop_size, ignore_index)  # bottom / right: boxes unchanged
    if masks is not None:
        masks = np.ascontiguousarray(np.pad(masks, ((0, 0), (0, crop_size[0] - ch), (0, crop_size[1] - cw))))
    return image, seg, boxes.astype(np.float32), labels, masks


class MultiTaskTrainDataset(SeededRecordsDataset):
    """Records -> ``(image (3, H, W) normalised, {"sem_seg": (H, W) long, "boxes": (N, 4) float32, "labels": (N,)
    long [, "masks": (N, H, W) uint8]})`` of exactly ``crop_size``; indexed with ``(index, sample_seed)``."""

    def __init__(self, records: list[dict], crop_size: Sequence[int], augment_cfg: AugmentConfig,
                 mean: Sequence[float], std: Sequence[float], ignore_index: int = 255,
                 with_masks: bool = False) -> None:
        super().__init__(records, crop_size, augment_cfg, mean, std)
        self.ignore_index = ignore_index
        self.with_masks = with_masks

    def __getitem__(self, item):
        from vlt_perception.datasets import read_sem_seg

        record, rng = self.record_and_rng(item)
        image, boxes, labels, masks = read_detection(record, self.with_masks)
        seg = read_sem_seg(record)
        if seg.shape[:2] != image.shape[:2]:
            raise ValueError(f"{record.get('sem_seg_file_name')}: label map {seg.shape[:2]} does not match its image "
                             f"{image.shape[:2]}")
        image, seg, boxes, labels, masks = augment(image, seg, boxes, labels, rng, self.crop_size, self.augment,
                                                   self.ignore_index, masks)
        target = {"sem_seg": torch.from_numpy(np.ascontiguousarray(seg)).long(),
                  "boxes": torch.from_numpy(boxes).reshape(-1, 4), "labels": torch.from_numpy(labels).long()}
        if masks is not None:
            target["masks"] = torch.from_numpy(masks)
        return T.to_tensor(image, self.mean, self.std), target


def model_predicts_masks(cfg: Config) -> bool:
    """Whether the configured multi-task model has a mask branch (``*_maskrcnn`` or ``det_head.mask_convs``)."""
    head = (cfg.model.overrides.get("det_head") or {})
    if "mask_convs" in head:
        return head["mask_convs"] is not None
    return cfg.model.name.endswith("_maskrcnn")


def build_train_dataset(records: list[dict], cfg: Config, mean, std) -> MultiTaskTrainDataset:
    return MultiTaskTrainDataset(records, cfg.data.crop_size, cfg.data.augment, mean, std, cfg.data.ignore_index,
                                 with_masks=model_predicts_masks(cfg))


def evaluate(model, records, cfg, device, amp="none") -> dict:
    """Both evaluators on their task's view of the model, merged per condition (see the module docstring)."""
    from vlt_training.evaluation.detection import evaluate_records as evaluate_detection
    from vlt_training.evaluation.segmentation import evaluate_records as evaluate_segmentation

    if not isinstance(model, VLTMultiTask):
        raise ValueError(f"task multitask needs a multi-task model (vltmt_*), got {type(model).__name__}")
    seg = evaluate_segmentation(model.task_view("segmentation"), [r for r in records if has_sem_seg(r)], cfg,
                                device=device, amp=amp)
    det = evaluate_detection(model.task_view("detection"), [r for r in records if has_annotations(r)], cfg,
                             device=device, amp=amp)
    result = {"overall": merge_metrics(seg["overall"], det["overall"]), "conditions": {},
              "num_images": max(seg["num_images"], det["num_images"])}
    for cond in sorted(set(seg["conditions"]) | set(det["conditions"])):
        result["conditions"][cond] = merge_metrics(seg["conditions"].get(cond, {}), det["conditions"].get(cond, {}))
    return result


def merge_metrics(seg: dict, det: dict) -> dict:
    """One condition's segmentation and detection metrics in one dict; both full results kept under their task."""
    merged = {**det, **seg, "segmentation": seg, "detection": det}  # shared keys (num_images): segmentation's
    merged.setdefault("mIoU", float("nan"))
    for key in ("mAP", "AP50"):
        merged[key] = det.get(key, float("nan"))
    return merged


MULTITASK = register_task(TaskHooks(
    name="multitask",
    metadata_task=TASK_MULTITASK,
    build_train_dataset=build_train_dataset,
    evaluate=evaluate,
    primary_metric="mIoU",
    record_filter=has_both,
))
