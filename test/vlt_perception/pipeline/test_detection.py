"""DetectionPipeline with a real ONNX model that outputs known boxes (see nodes/tiny_onnx.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from vlt_perception.pipeline.detection import DetectionPipeline, draw_detections
from vlt_perception.pipeline.segmentation import PipelineError

_spec = importlib.util.spec_from_file_location("tiny_onnx", Path(__file__).parents[1] / "nodes" / "tiny_onnx.py")
tiny_onnx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_onnx)

CLASSES = ["person", "car", "bus"]
# Network input 32x64; boxes x1, y1, x2, y2 in network pixels.
BOXES = np.array([[4, 4, 20, 16], [30, 10, 60, 30], [0, 0, 10, 10], [0, 0, 0, 0]], dtype=np.float32)
SCORES = np.array([0.9, 0.5, 0.2, 0.0], dtype=np.float32)  # the last row is padding
LABELS = np.array([1, 0, 1, 0])
IMAGE_H, IMAGE_W = 64, 256  # 2x taller, 4x wider than the network input


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tiny_onnx.detection_model(tmp_path_factory.mktemp("det") / "det.onnx", BOXES, SCORES, LABELS, CLASSES,
                                     height=32, width=64)
    return OnnxRuntimeEngine(path)


def _image():
    return np.zeros((IMAGE_H, IMAGE_W, 3), dtype=np.uint8)


def test_boxes_in_input_pixels_above_threshold(engine):
    dets = DetectionPipeline(engine, score_threshold=0.3).process(_image())
    assert len(dets) == 2
    np.testing.assert_allclose(dets.boxes, BOXES[:2] * [4, 2, 4, 2])
    np.testing.assert_allclose(dets.scores, [0.9, 0.5])
    assert dets.class_names == ["car", "person"] and dets.class_ids.tolist() == [1, 0]
    # Threshold 0 keeps every real detection but never the zero-score padding row.
    assert len(DetectionPipeline(engine, score_threshold=0.0).process(_image())) == 3


def test_filters_change_at_run_time(engine):
    pipeline = DetectionPipeline(engine, score_threshold=0.1, classes=["person"])
    assert pipeline.process(_image()).class_names == ["person"]
    pipeline.configure(classes=["car"])
    assert pipeline.process(_image()).class_names == ["car", "car"]
    pipeline.configure(score_threshold=0.6, keep_classes=True)
    assert pipeline.process(_image()).class_names == ["car"]
    pipeline.configure(classes=[])  # empty = every class
    assert sorted(pipeline.process(_image()).class_names) == ["car"]  # threshold 0.6 kept
    pipeline.configure(score_threshold=0.0, classes=None)
    assert len(pipeline.process(_image())) == 3


def test_bad_filters_are_rejected_and_keep_the_old_one(engine):
    pipeline = DetectionPipeline(engine, score_threshold=0.3)
    before = pipeline.filter
    with pytest.raises(ValueError, match="unknown classes"):
        pipeline.configure(classes=["tractor"])
    with pytest.raises(ValueError, match="score_threshold"):
        pipeline.configure(score_threshold=1.5)
    assert pipeline.filter == before


def test_class_id_outside_metadata_is_an_error(tmp_path):
    path = tiny_onnx.detection_model(tmp_path / "bad.onnx", BOXES[:1], SCORES[:1], np.array([7]), CLASSES)
    with pytest.raises(PipelineError, match="class ids"):
        DetectionPipeline(OnnxRuntimeEngine(path)).process(_image())


def test_draw_detections(engine):
    image = _image()
    dets = DetectionPipeline(engine, score_threshold=0.3).process(image)
    drawn = draw_detections(image, dets, palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], thickness=1)
    assert image.max() == 0  # the input is not modified
    x1, y1, x2, y2 = (int(v) for v in dets.boxes[0])  # car -> green
    assert drawn[y2, (x1 + x2) // 2].tolist() == [0, 255, 0]
    assert drawn[(y1 + y2) // 2, x1].tolist() == [0, 255, 0]
    assert drawn[(y1 + y2) // 2, (x1 + x2) // 2].tolist() == [0, 0, 0]  # inside stays untouched
