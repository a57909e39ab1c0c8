"""The multi-task graph: one ONNX file with the segmentation and the detection outputs (det_* names), metadata
with both class lists, and a parity check that holds both halves to the fp32 threshold."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from vlt_perception.metadata import TASK_MULTITASK
from vlt_training.export import export_onnx, verify_onnx
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.export.onnx_export import ExportError, check_graph
from vlt_training.export.verify import FP32_MIN_AGREEMENT, torch_reference, verification_batch, verify_engine
from vlt_training.modeling import create_model

H, W = 64, 128


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vltmt_tiny_mask2former_fasterrcnn", detection_class_names=["car", "person", "bus"]).eval()
    metadata = metadata_for_model(model, H, W)
    path, metadata = export_onnx(model, metadata, tmp_path_factory.mktemp("mt") / "mt.onnx")
    return model, metadata, path


def test_one_graph_carries_both_contracts(exported):
    _, metadata, path = exported
    graph = onnx.load(str(path))
    outputs = {o.name: o.type.tensor_type.elem_type for o in graph.graph.output}
    assert outputs == {"labels": onnx.TensorProto.UINT8, "confidence": onnx.TensorProto.FLOAT,
                       "det_boxes": onnx.TensorProto.FLOAT, "det_scores": onnx.TensorProto.FLOAT,
                       "det_labels": onnx.TensorProto.INT64}
    engine = OnnxRuntimeEngine(path)
    assert engine.metadata.task == TASK_MULTITASK
    assert engine.metadata.detection_class_names == ["car", "person", "bus"]
    assert len(engine.metadata.class_names) == 19  # the segmentation classes (Cityscapes by default)
    out = engine.infer(np.zeros((2, 3, H, W), np.float32))  # dynamic batch
    assert out["labels"].shape == (2, H, W) and out["det_boxes"].shape == (2, metadata.max_detections, 4)


def test_parity_holds_for_both_outputs(exported):
    model, metadata, path = exported
    images, source = verification_batch(metadata, count=2)
    report = verify_onnx(path, model, metadata, images, source)
    assert report.passed, report.summary()
    assert report.label_agreement >= FP32_MIN_AGREEMENT
    assert report.detection_agreement is not None and report.detection_agreement >= FP32_MIN_AGREEMENT
    assert report.compared_detections and report.compared_detections > 0  # the boxes were really compared
    assert {"confidence", "det_boxes", "det_scores"} <= set(report.max_abs_diff)


class _ShiftedBoxes:
    """The engine with its detection boxes moved by 20 px: segmentation intact, detection broken."""

    def __init__(self, inner):
        self.inner, self.metadata, self.info = inner, inner.metadata, inner.info

    def infer(self, images):
        out = dict(self.inner.infer(images))
        out["det_boxes"] = out["det_boxes"] + 20.0
        return out


def test_parity_fails_when_only_the_detection_half_is_wrong(exported):
    model, metadata, path = exported
    images, source = verification_batch(metadata, count=1)
    engine = OnnxRuntimeEngine(path)
    reference = torch_reference(model, images, engine.metadata)
    good = verify_engine(engine, reference, images, source, engine.metadata)
    bad = verify_engine(_ShiftedBoxes(engine), reference, images, source, engine.metadata)
    assert good.passed and bad.label_agreement == good.label_agreement
    assert not bad.passed and bad.detection_agreement < 0.5


def test_a_multitask_graph_without_its_detection_outputs_is_rejected(exported):
    _, metadata, path = exported
    graph = onnx.load(str(path))
    keep = [o for o in graph.graph.output if not o.name.startswith("det_")]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    with pytest.raises(ExportError, match="lacks outputs"):
        check_graph(graph, metadata, "cut.onnx")
