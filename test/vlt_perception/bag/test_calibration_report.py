"""Calibration in the offline bag report: ECE / AUROC / FPR95 per condition from the model's per-pixel confidence,
checked against scikit-learn and a numpy ECE on the same pixels; rPD and calibration columns in report.md."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.writer import write_records_bag
from vlt_perception.labels import CITYSCAPES_PALETTE

SHARPNESS = 20.0  # softmax temperature of the palette scores: confidences spread over (0, 1)


def confidence_palette_model(path, height, width):
    """ONNX: labels = nearest palette colour (as the bag fixtures' palette model), confidence = max softmax of
    ``SHARPNESS * (2 p_k . x - |p_k|^2)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vlt_perception.metadata import TASK_SEGMENTATION, ModelMetadata

    colours = np.asarray(CITYSCAPES_PALETTE, dtype=np.float32) / 255.0  # C, 3
    weight = (SHARPNESS * 2 * colours)[:, :, None, None]  # C, 3, 1, 1
    bias = SHARPNESS * -(colours ** 2).sum(axis=1)  # C
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["scores"]),  # B, C, H, W
             helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),  # B, H, W
             helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
             helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0)]  # B, H, W
    graph = helper.make_graph(
        nodes, "palette_seg_conf",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, height, width])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", height, width]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["B", height, width])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    metadata = ModelMetadata(task=TASK_SEGMENTATION, model_name="palette_seg_conf", mean=[0.0] * 3, std=[1.0] * 3,
                             input_height=height, input_width=width)
    for key, value in metadata.to_onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _expected(frames):
    """Confidence and correctness per labelled pixel, computed here in numpy from the images."""
    colours = np.asarray(CITYSCAPES_PALETTE, dtype=np.float64) / 255.0
    confs, correct = [], []
    for image, labels in frames:
        x = image.astype(np.float64) / 255.0  # H, W, 3
        scores = SHARPNESS * (2 * x @ colours.T - (colours ** 2).sum(1))  # H, W, C
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        keep = labels != 255
        confs.append(probs.max(-1)[keep])
        correct.append((scores.argmax(-1) == labels)[keep])
    return np.concatenate(confs), np.concatenate(correct).astype(int)


def _numpy_ece(conf, correct, bins=15):
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    return sum((idx == b).sum() / len(conf) * abs(correct[idx == b].mean() - conf[idx == b].mean())
               for b in range(bins) if (idx == b).any())


def test_offline_report_calibration_per_condition(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    kw = dict(read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    write_records_bag([r for r in records if r["condition"] == "clear"], tmp_path / "source", **kw)
    write_records_bag(records, tmp_path / "target", **kw)
    model = confidence_palette_model(tmp_path / "m.onnx", fx.HEIGHT, fx.WIDTH)
    report = evaluate_bags([tmp_path / "target"], model, tmp_path / "report", engine="onnxruntime",
                           reference=tmp_path / "source")
    fog = [(r["expected_image"], r["expected_labels"]) for r in records if r["condition"] == "fog"]
    conf, correct = _expected(fog)
    assert 0 < correct.mean() < 1  # both correct and misclassified pixels: AUROC is defined
    cal = report["conditions"]["fog"]["calibration"]
    assert cal["pixels"] == len(conf)
    assert cal["ece"] == pytest.approx(_numpy_ece(conf, correct), abs=1e-4)
    assert cal["auroc"] == pytest.approx(roc_auc_score(correct, conf), abs=1e-3)
    fpr, tpr, _ = roc_curve(correct, conf, drop_intermediate=False)
    assert cal["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-2)
    assert report["bags"]["source"]["calibration"]["pixels"] > 0

    md = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| condition |"))
    assert "rPD mIoU" in header and "ECE" in header and "AUROC" in header and "FPR95" in header
    assert "retention" not in md  # one name for one number
    fog_row = next(line for line in md.splitlines() if line.startswith("| fog |"))
    rpd = 100 * report["conditions"]["fog"]["segmentation"]["mIoU"] / report["bags"]["source"]["segmentation"]["mIoU"]
    assert f"| {rpd:.1f} |" in fog_row and f"| {100 * cal['ece']:.1f} |" in fog_row
    assert (tmp_path / "report" / "figures" / "reliability.png").stat().st_size > 0
    assert "figures/reliability.png" in md


def test_no_confidence_output_no_calibration(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    write_records_bag(records, tmp_path / "target", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    model = fx.palette_model(tmp_path / "no_confidence.onnx", confidence=False)
    report = evaluate_bags([tmp_path / "target"], model, tmp_path / "report", engine="onnxruntime", figures=False)
    assert "calibration" not in report["conditions"]["fog"]
