"""Detection inference on records and COCO mAP per dataset and per condition (the ``evaluate`` hook of the
detection task).

Metrics come from ``vlt_perception.metrics.detection.DetectionEvaluator`` (pycocotools), the same code as the
rosbag evaluator. Boxes are evaluated in the original image's pixels: the network sees the image resized
(keep-ratio) to ``eval.resize`` when set and padded (bottom / right) to a multiple of ``eval.size_divisor``;
its boxes are scaled back. Mask R-CNN models are also scored on instance masks (COCO mask AP, ``mask_*`` keys)
where the records carry masks: each detection's box-frame mask is pasted into the original image at its box
(torchvision's ``paste_masks_in_image``) and thresholded at 0.5, as torchvision's Mask R-CNN does.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchvision.models.detection.roi_heads import paste_masks_in_image

from vlt_perception.metrics.detection import DetectionEvaluator
from vlt_training.amp import autocast
from vlt_training.config import Config, EvalConfig
from vlt_training.data.detection import annotations_to_arrays, clip_boxes
from vlt_training.evaluation.segmentation import preprocess
from vlt_training.modeling.registry import model_norm

log = logging.getLogger(__name__)


MASK_THRESHOLD = 0.5  # torchvision / detectron2: a pasted mask probability above this is the object
MASK_METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR", "per_class_AP", "per_class_AP50")


@torch.no_grad()
def predict_boxes(model: nn.Module, image: np.ndarray, eval_cfg: EvalConfig, mean, std, device="cpu",
                  amp: str = "none") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections on one (H, W, 3) uint8 RGB image: boxes (N, 4) float32 xyxy in the image's pixels, scores (N,),
    labels (N,) int64. The model must be in eval mode."""
    det = predict_detections(model, image, eval_cfg, mean, std, device, amp, with_masks=False)
    return det["boxes"], det["scores"], det["labels"]


@torch.no_grad()
def predict_detections(model: nn.Module, image: np.ndarray, eval_cfg: EvalConfig, mean, std, device="cpu",
                       amp: str = "none", with_masks: bool = True) -> dict[str, np.ndarray]:
    """:func:`predict_boxes` as a dict (``boxes``, ``scores``, ``labels``), plus ``masks`` (N, H, W) uint8 in
    the image's pixels when the model predicts masks (Mask R-CNN) and ``with_masks``."""
    if eval_cfg.mode != "whole":
        raise ValueError(f"detection evaluation supports eval.mode=whole only, got {eval_cfg.mode!r}")
    if getattr(eval_cfg, "tta", False):
        raise ValueError("eval.tta (multi-scale + flip score averaging) is for segmentation; detection has no box TTA")
    h, w = image.shape[:2]
    images = preprocess(image, mean, std, eval_cfg.resize).to(device)  # 1, 3, h', w'
    rh, rw = images.shape[-2:]
    div = max(eval_cfg.size_divisor, 1)
    ph, pw = math.ceil(rh / div) * div - rh, math.ceil(rw / div) * div - rw
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))  # padding at the bottom / right leaves box coordinates unchanged
    with autocast(images.device, amp):
        det = model(images)["detections"][0]
    boxes = det["boxes"].float().cpu().numpy().reshape(-1, 4)
    boxes = boxes * np.array([w / rw, h / rh, w / rw, h / rh], dtype=np.float32)  # back to the original pixels
    out = {"boxes": clip_boxes(boxes, h, w), "scores": det["scores"].float().cpu().numpy(),
           "labels": det["labels"].cpu().numpy().astype(np.int64)}
    if with_masks and "masks" in det:
        out["masks"] = paste_masks(det["masks"].float().cpu(), boxes, (h, w))
    return out


def paste_masks(box_masks: torch.Tensor, boxes: np.ndarray, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """(N, M, M) box-frame mask probabilities -> (N, H, W) uint8 masks in the image, thresholded at
    :data:`MASK_THRESHOLD`. ``boxes`` (N, 4) in the image's pixels, before clipping (as torchvision pastes them).
    Pasted ``chunk`` masks at a time: a float (N, H, W) at 1024 x 2048 would take 8 MB per detection."""
    out = np.zeros((len(boxes), *size), np.uint8)
    for start in range(0, len(boxes), chunk):
        probs = box_masks[start:start + chunk, None]  # n, 1, M, M
        pasted = paste_masks_in_image(probs, torch.from_numpy(boxes[start:start + chunk]), size)  # n, 1, H, W
        out[start:start + chunk] = (pasted[:, 0] > MASK_THRESHOLD).numpy()
    return out


def evaluate_records(model: nn.Module, records: list[dict], cfg: Config, device="cpu", amp: str = "none",
                     progress: bool | None = None, min_area: float | None = None) -> dict:
    """COCO box metrics of ``model`` on ``records`` overall and per ``condition``.

    Returns ``{"overall": metrics, "conditions": {condition: metrics}, "num_images": N}`` where metrics is
    ``DetectionEvaluator.compute()`` (``mAP``, ``AP50``, ``AP75``, ``APs/m/l``, ``AR``, ``per_class_AP``,
    ``num_images``, ``num_gt``, ``num_detections``). ``min_area`` (default ``cfg.eval.min_box_area``): ground
    truth below this area in image pixels is ignored, see :class:`DetectionEvaluator`.
    """
    from tqdm import tqdm

    from vlt_perception.datasets import instance_masks, read_image

    if min_area is None:
        min_area = float(getattr(cfg.eval, "min_box_area", 0.0))
    class_names = list(model.class_names)
    max_dets = max(100, int(getattr(model, "max_detections", 100)))
    mean, std = model_norm(model)
    was_training = model.training
    model.eval()

    def new_evaluator(iou_type: str = "bbox") -> DetectionEvaluator:
        return DetectionEvaluator(class_names, max_detections=max_dets, min_area=min_area, iou_type=iou_type)

    overall, per_condition = new_evaluator(), {}
    # Mask AP where the model predicts masks and every record has them (else boxes only, as before).
    with_masks = bool(getattr(model, "predicts_masks", False)) and all(
        instance_masks_available(r) for r in records)
    if getattr(model, "predicts_masks", False) and not with_masks:
        missing = sum(not instance_masks_available(r) for r in records)
        log.warning("mask AP not computed: %d of %d records have no instance masks (instance map or COCO "
                    "segmentation for every annotation); box metrics only", missing, len(records))
    mask_overall, mask_per_condition = new_evaluator("segm"), {}
    try:
        for record in tqdm(records, desc="eval", disable=None if progress is None else not progress, leave=False):
            gt_boxes, gt_labels, crowd = annotations_to_arrays(record)
            if gt_labels.size and gt_labels.max() >= len(class_names):
                raise ValueError(f"{record.get('file_name')}: category_id {int(gt_labels.max())} but the model has "
                                 f"{len(class_names)} classes {class_names}")
            image = read_image(record)
            det = predict_detections(model, image, cfg.eval, mean, std, device, amp, with_masks=with_masks)
            boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
            key = f"{record.get('dataset', '')}/{record['image_id']}"
            cond = str(record.get("condition") or "all")
            for evaluator in (overall, per_condition.setdefault(cond, new_evaluator())):
                evaluator.add(key, gt_boxes, gt_labels, boxes, scores, labels, gt_iscrowd=crowd)
            if with_masks:
                gt_masks = instance_masks({**record, "height": image.shape[0], "width": image.shape[1]})
                for evaluator in (mask_overall, mask_per_condition.setdefault(cond, new_evaluator("segm"))):
                    evaluator.add(key, gt_boxes, gt_labels, boxes, scores, labels, gt_iscrowd=crowd,
                                  gt_masks=gt_masks, pred_masks=det["masks"])
    finally:
        model.train(was_training)
    result = {"overall": overall.compute(), "conditions": {}, "num_images": len(records)}
    for cond, evaluator in sorted(per_condition.items()):
        result["conditions"][cond] = evaluator.compute()
    if with_masks:
        _add_mask_metrics(result["overall"], mask_overall)
        for cond, evaluator in mask_per_condition.items():
            _add_mask_metrics(result["conditions"][cond], evaluator)
    return result


def instance_masks_available(record: dict) -> bool:
    """The record can give a mask for every annotation (instance map with ids, or COCO segmentations)."""
    anns = record.get("annotations") or []
    if not anns:
        return True  # a background image: no masks to read
    return (bool(record.get("instance_file_name")) and all("instance_id" in a for a in anns)) or (
        bool(anns) and all("segmentation" in a for a in anns))


def _add_mask_metrics(metrics: dict, evaluator: DetectionEvaluator) -> None:
    """COCO mask AP of ``evaluator`` into ``metrics`` under ``mask_`` names (``mask_mAP``, ``mask_AP50`` ...)."""
    segm = evaluator.compute()
    metrics.update({f"mask_{name}": segm[name] for name in MASK_METRICS})
