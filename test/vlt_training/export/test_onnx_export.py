"""The exporter on tiny contract-following models (conftest.py): graph contract, metadata, batch, precision."""

import numpy as np
import onnx
import pytest

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from vlt_perception.metadata import ModelMetadata
from vlt_training.export import ExportError, export_onnx, verify_onnx
from vlt_training.export.verify import verification_batch

CPU = ["CPUExecutionProvider"]


def test_segmentation_export_contract(toy_seg, tmp_path):
    model, metadata = toy_seg
    path, stored = export_onnx(model, metadata, tmp_path / "seg.onnx")
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}
    assert [o.name for o in graph.graph.output] == ["labels", "confidence"]
    engine = OnnxRuntimeEngine(path, providers=CPU)
    out = engine.infer(np.zeros((3, 3, 32, 64), np.float32))  # dynamic batch
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (3, 32, 64)
    assert out["confidence"].dtype == np.float32 and out["confidence"].shape == (3, 32, 64)
    assert stored.extra["precision"] == "fp32"


def test_metadata_round_trip(toy_seg, tmp_path):
    model, metadata = toy_seg
    metadata.extra["config"] = "toy.yaml"
    path, stored = export_onnx(model, metadata, tmp_path / "seg.onnx", height=16, width=48)
    engine = OnnxRuntimeEngine(path, providers=CPU)
    assert engine.metadata == stored
    assert (stored.input_height, stored.input_width) == (16, 48)
    assert stored.class_names == metadata.class_names and stored.palette == metadata.palette
    assert stored.mean == metadata.mean and stored.std == metadata.std
    assert stored.extra["config"] == "toy.yaml" and stored.extra["opset"] == 17
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert ModelMetadata.from_onnx_props(props) == stored
    assert props["model_name"] == "toy_seg"  # human-readable keys for Netron & co.


def test_fp32_parity_passes(toy_seg, tmp_path):
    model, metadata = toy_seg
    path, stored = export_onnx(model, metadata, tmp_path / "seg.onnx")
    images, source = verification_batch(stored, count=2)
    report = verify_onnx(path, model, stored, images, source)
    assert report.passed and report.label_agreement >= 0.999 and report.threshold == 0.999
    assert report.max_abs_diff["confidence"] < 1e-4 and source == "noise"


def test_fp16_export_reports_agreement(toy_seg, tmp_path):
    model, metadata = toy_seg
    path, stored = export_onnx(model, metadata, tmp_path / "seg.fp16.onnx", precision="fp16")
    graph = onnx.load(str(path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io stays float32
    images, source = verification_batch(stored, count=2)
    report = verify_onnx(path, model, stored, images, source)
    assert report.precision == "fp16" and report.threshold is None and report.passed
    assert 0.9 < report.label_agreement <= 1.0


def test_detection_export(toy_det, tmp_path):
    model, metadata = toy_det
    path, stored = export_onnx(model, metadata, tmp_path / "det.onnx")
    engine = OnnxRuntimeEngine(path, providers=CPU)
    assert engine.metadata.task == "detection"
    out = engine.infer(np.zeros((2, 3, 32, 64), np.float32))
    assert out["boxes"].shape == (2, 6, 4) and out["scores"].shape == (2, 6)
    assert out["labels"].dtype == np.int64
    images, source = verification_batch(stored, count=2)
    assert verify_onnx(path, model, stored, images, source).label_agreement == 1.0


def test_tampered_export_fails_verification(toy_seg, tmp_path):
    """The check can fail: flip the sign of the classifier weights in the ONNX file and the labels change."""
    model, metadata = toy_seg
    path, stored = export_onnx(model, metadata, tmp_path / "seg.onnx")
    graph = onnx.load(str(path))
    head = next(t for t in graph.graph.initializer if t.name.endswith("head.weight"))
    weights = onnx.numpy_helper.to_array(head)
    head.CopyFrom(onnx.numpy_helper.from_array(-weights, head.name))
    onnx.save(graph, str(path))
    images, source = verification_batch(stored, count=2)
    report = verify_onnx(path, model, stored, images, source)
    assert not report.passed and report.label_agreement < 0.999 and "FAIL" in report.summary()


def test_bad_requests(toy_seg, tmp_path):
    model, metadata = toy_seg
    with pytest.raises(ExportError, match="bf16: torch engine"):
        export_onnx(model, metadata, tmp_path / "x.onnx", precision="bf16")
    with pytest.raises(ExportError, match="opset 16 < 17"):
        export_onnx(model, metadata, tmp_path / "x.onnx", opset=16)
    with pytest.raises(ExportError, match="exporter must be one of"):
        export_onnx(model, metadata, tmp_path / "x.onnx", exporter="jit")


def test_outputs_outside_the_contract_are_rejected(toy_seg, tmp_path):
    import torch

    model, metadata = toy_seg

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return {"logits": self.model(images)["sem_seg"]}

    model.export_module = Logits
    with pytest.raises(ExportError, match=r"returned \['logits'\], not in the semantic_segmentation contract"):
        export_onnx(model, metadata, tmp_path / "x.onnx")

    class Int64Labels(Logits):
        def forward(self, images):
            return self.model(images)["sem_seg"].argmax(1)  # int64, contract says uint8

    model.export_module = Int64Labels
    with pytest.raises(ExportError, match="output 'labels' has type INT64"):
        export_onnx(model, metadata, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
