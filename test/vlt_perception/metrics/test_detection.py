"""COCO detection metrics: hand-computed AP values and agreement with pycocotools' own json workflow."""

import contextlib
import io
import json
import math

import numpy as np
import pytest

from vlt_perception.metrics.detection import DetectionEvaluator, retention

CLASSES = ["car", "person"]


def _coco_101_ap(precision_at_recall) -> float:
    """COCO AP by hand: mean over the 101 recall points r of the best precision at recall >= r."""
    points = np.linspace(0, 1, 101)
    values = []
    for r in points:
        candidates = [p for rec, p in precision_at_recall if rec >= r - 1e-12]
        values.append(max(candidates) if candidates else 0.0)
    return float(np.mean(values))


def test_hand_computed_ap_single_class():
    # Two cars. Detections by score: TP (exact), FP (IoU 0 with both), TP (IoU 0.6 with the second car).
    gt = [[0, 0, 10, 10], [20, 0, 30, 10]]
    # Second car shifted by 2.5 px in x: IoU = 7.5*10 / (12.5*10) = 0.6 -> a TP for thresholds 0.50..0.60 only.
    preds = [[0, 0, 10, 10], [50, 50, 60, 60], [22.5, 0, 32.5, 10]]
    scores = [0.9, 0.8, 0.7]
    ev = DetectionEvaluator(CLASSES)
    ev.add("a", gt, [0, 0], preds, scores, [0, 0, 0])
    out = ev.compute()

    # At IoU <= 0.6: PR points (R, P) = (.5, 1), (.5, .5), (1, 2/3).
    ap_low = _coco_101_ap([(0.5, 1.0), (0.5, 0.5), (1.0, 2 / 3)])
    # At IoU > 0.6 the third detection is an FP: (.5, 1), (.5, .5), (.5, 1/3).
    ap_high = _coco_101_ap([(0.5, 1.0), (0.5, 0.5), (0.5, 1 / 3)])
    assert ap_low == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert ap_high == pytest.approx(51 / 101)
    thresholds = np.linspace(0.5, 0.95, 10)
    expected_map = np.mean([ap_low if t <= 0.6 + 1e-9 else ap_high for t in thresholds])
    assert out["AP50"] == pytest.approx(ap_low)
    assert out["AP75"] == pytest.approx(ap_high)
    assert out["mAP"] == pytest.approx(expected_map)
    assert out["per_class_AP"]["car"] == pytest.approx(expected_map)
    assert out["per_class_AP"]["person"] is None  # no ground truth: left out of the mean
    assert out["per_class_AP50"]["car"] == pytest.approx(ap_low)
    assert out["per_class_AP50"]["person"] is None
    assert out["num_gt"] == 2 and out["num_detections"] == 3


def test_wrong_class_is_a_miss_and_crowd_is_ignored():
    ev = DetectionEvaluator(CLASSES)
    # The person is detected as a car: AP(person) = 0, AP(car) has one FP above nothing -> 0 as well.
    ev.add(1, [[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [0.9], [0])
    # A crowd region: detections inside it are neither TP nor FP; the real car is found.
    ev.add(2, [[0, 0, 40, 40], [50, 50, 70, 70]], [0, 0], [[1, 1, 39, 39], [50, 50, 70, 70]], [0.95, 0.9], [0, 0],
           gt_iscrowd=[1, 0])
    out = ev.compute()
    assert out["per_class_AP"]["person"] == 0.0
    # Car: the only car GT is found at rank 1 among car detections that count (the crowd match is ignored).
    # The person-as-car FP from image 1 (score 0.9) ties with the TP (0.9); pycocotools' stable sort by score
    # keeps image order, so the FP comes first: PR points (0, 0), (1, 0.5) -> AP = 0.5 at every IoU.
    assert out["per_class_AP"]["car"] == pytest.approx(0.5)
    assert out["mAP"] == pytest.approx(0.25)
    assert out["num_gt"] == 2


def test_matches_pycocotools_json_workflow(tmp_path):
    """Random boxes, evaluated once through our class and once through pycocotools' documented file workflow."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    ev = DetectionEvaluator(CLASSES)
    images, gts, dts = [], [], []
    for image in range(6):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 80, (n, 2))
        wh = rng.uniform(5, 40, (n, 2))
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        gt_labels = rng.integers(0, 2, n)
        noisy = gt_boxes + rng.normal(0, 3, gt_boxes.shape)
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        extra = np.concatenate([rng.uniform(0, 80, (2, 2)), rng.uniform(0, 80, (2, 2)) + 90], 1)
        pred_boxes = np.concatenate([noisy, extra])
        pred_labels = np.concatenate([gt_labels, rng.integers(0, 2, 2)])
        pred_scores = rng.uniform(0.1, 1, len(pred_boxes))
        ev.add(f"img{image}", gt_boxes, gt_labels, pred_boxes, pred_scores, pred_labels)
        images.append({"id": image + 10, "width": 200, "height": 200, "file_name": f"{image}.png"})
        for b, l in zip(gt_boxes, gt_labels):
            w, h = b[2] - b[0], b[3] - b[1]
            gts.append({"id": len(gts) + 1, "image_id": image + 10, "category_id": int(l) + 7,
                        "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, l in zip(pred_boxes, pred_scores, pred_labels):
            dts.append({"image_id": image + 10, "category_id": int(l) + 7,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": gts,
                                   "categories": [{"id": 7, "name": "car"}, {"id": 8, "name": "person"}]},
                                  default=float))
    dt_file.write_text(json.dumps(dts, default=float))
    coco_gt = COCO(str(gt_file))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(dt_file)), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    ours = ev.compute()
    assert 0.0 < ours["mAP"] < 1.0
    assert ours["mAP"] == pytest.approx(coco_eval.stats[0])
    assert ours["AP50"] == pytest.approx(coco_eval.stats[1])
    assert ours["AP75"] == pytest.approx(coco_eval.stats[2])
    assert ours["AR"] == pytest.approx(coco_eval.stats[8])


def test_empty_cases():
    ev = DetectionEvaluator(CLASSES)
    assert math.isnan(ev.compute()["mAP"])
    ev.add("no-preds", [[0, 0, 5, 5]], [0], np.zeros((0, 4)), [], [])
    out = ev.compute()
    assert out["mAP"] == 0.0 and out["num_detections"] == 0
    only_bg = DetectionEvaluator(CLASSES)
    only_bg.add("bg", np.zeros((0, 4)), [], [[0, 0, 5, 5]], [0.5], [1])
    assert math.isnan(only_bg.compute()["mAP"])


def test_merge_equals_single_pass():
    a, b, both = (DetectionEvaluator(CLASSES) for _ in range(3))
    a.add(1, [[0, 0, 10, 10]], [0], [[0, 0, 10, 9]], [0.8], [0])
    b.add(2, [[5, 5, 20, 20]], [1], [[5, 5, 20, 20], [0, 0, 3, 3]], [0.9, 0.95], [1, 1])
    both.add(1, [[0, 0, 10, 10]], [0], [[0, 0, 10, 9]], [0.8], [0])
    both.add(2, [[5, 5, 20, 20]], [1], [[5, 5, 20, 20], [0, 0, 3, 3]], [0.9, 0.95], [1, 1])
    a.merge(b)
    assert a.compute()["mAP"] == pytest.approx(both.compute()["mAP"])
    with pytest.raises(ValueError, match="added twice"):
        a.merge(b)


@pytest.mark.parametrize(
    "gt, labels, preds, match",
    [
        ([[0, 0, 10]], [0], [], "must be \\(N, 4\\)"),
        ([[10, 0, 0, 10]], [0], [], "x2 >= x1"),
        ([[0, 0, 10, 10]], [5], [], "outside 0..1"),
        ([[0, 0, 10, 10]], [0, 1], [], "1 boxes but 2"),
    ],
)
def test_bad_input_names_the_image(gt, labels, preds, match):
    ev = DetectionEvaluator(CLASSES)
    with pytest.raises(ValueError, match=match) as info:
        ev.add("frame_7", gt, labels, np.zeros((0, 4)), [], [])
    assert "frame_7" in str(info.value)


def test_retention():
    assert retention(0.3, 0.6) == pytest.approx(0.5)
    assert math.isnan(retention(0.3, 0.0))


def test_min_area_ignores_small_ground_truth_and_small_false_positives():
    # A 2 x 2 car that is missed, a 20 x 20 car found, and a 3 x 3 false positive.
    gt = [[0, 0, 2, 2], [30, 30, 50, 50]]
    preds, scores = [[30, 30, 50, 50], [70, 70, 73, 73]], [0.9, 0.95]
    full = DetectionEvaluator(CLASSES)
    full.add("a", gt, [0, 0], preds, scores, [0, 0])
    # All objects: PR points (0, 0) [the FP first], (0.5, 0.5) -> AP = 0.5 * 51 / 101 at every IoU.
    assert full.compute()["mAP"] == pytest.approx(0.5 * 51 / 101)
    big = DetectionEvaluator(CLASSES, min_area=16)
    big.add("a", gt, [0, 0], preds, scores, [0, 0])
    out = big.compute()
    assert out["mAP"] == pytest.approx(1.0)  # the tiny object and the tiny false positive are both ignored
    assert out["num_gt"] == 2  # counts report what was given
    with pytest.raises(ValueError, match="min_area"):
        DetectionEvaluator(CLASSES, min_area=-1)


def test_mask_ap_scores_masks_not_boxes_and_matches_pycocotools_json():
    """iou_type='segm': two cars whose predicted boxes are exact, one mask right and one mostly wrong. Box AP is
    1; mask AP50 counts only the right mask. The figures equal pycocotools' own json workflow (loadRes + RLE)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    h, w = 40, 60
    gt = np.zeros((2, h, w), np.uint8)
    gt[0, 5:25, 5:25] = 1
    gt[1, 10:30, 30:50] = 1
    pred = gt.copy()
    pred[1] = 0
    pred[1, 10:14, 30:50] = 1  # same box extent in x, a fifth of the object: mask IoU 0.2
    pred[1, 29, 30:50] = 1  # and the bottom row, so its box is the ground truth's box
    boxes = np.array([[5, 5, 25, 25], [30, 10, 50, 30]], np.float64)
    scores, labels = [0.9, 0.8], [0, 0]
    box_ev = DetectionEvaluator(CLASSES)
    box_ev.add("a", boxes, labels, boxes, scores, labels)
    assert box_ev.compute()["AP50"] == pytest.approx(1.0)
    mask_ev = DetectionEvaluator(CLASSES, iou_type="segm")
    mask_ev.add("a", boxes, labels, boxes, scores, labels, gt_masks=gt, pred_masks=pred)
    ours = mask_ev.compute()
    assert ours["AP50"] == pytest.approx(0.5, abs=0.01)  # one of two found at the top score: 101-point AP 0.50
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        DetectionEvaluator(CLASSES, iou_type="segm").add("b", boxes, labels, boxes, scores, labels)
    with pytest.raises(ValueError, match="iou_type"):
        DetectionEvaluator(CLASSES, iou_type="keypoints")
    with pytest.raises(ValueError, match=r"predicted masks must be \(2, H, W\)"):
        DetectionEvaluator(CLASSES, iou_type="segm").add("c", boxes, labels, boxes, scores, labels, gt_masks=gt,
                                                         pred_masks=np.zeros((0, h, w), np.uint8))
    with pytest.raises(ValueError, match="uncompressed RLE"):
        DetectionEvaluator(CLASSES, iou_type="segm").add("d", boxes[:1], labels[:1], [], [], [], gt_masks=[
            {"size": [h, w], "counts": [h * w]}], pred_masks=[])

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1, "name": "car"}],
                    "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": rle(m),
                                     "area": float(m.sum()), "bbox": list(mask_utils.toBbox(rle(m))), "iscrowd": 0}
                                    for i, m in enumerate(gt)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes([{"image_id": 1, "category_id": 1, "segmentation": rle(m), "score": s}
                             for m, s in zip(pred, scores)])
        reference = COCOeval(coco, dets, iouType="segm")
        reference.evaluate(), reference.accumulate(), reference.summarize()
    assert ours["mAP"] == pytest.approx(reference.stats[0], abs=1e-12)
    assert ours["AP50"] == pytest.approx(reference.stats[1], abs=1e-12)
