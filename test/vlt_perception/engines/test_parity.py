"""The parity gate with real engines: OpenVINO against the ONNX Runtime reference passes; a damaged copy of the
graph fails, its record is written, and create_engine refuses it (or loads it with a warning when allowed)."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from vlt_perception.engines import create_engine
from vlt_perception.engines import parity
from vlt_perception.metadata import TASK_DETECTION, TASK_SEGMENTATION, ModelMetadata


def _damaged_copy(src, dst, *, weight_scale=None, softmax_to_sigmoid=False):
    """A copy of the tiny graph with its 1x1 conv weights changed or its Softmax replaced (metadata kept)."""
    model = onnx.load(str(src))
    if weight_scale is not None:
        (init,) = [i for i in model.graph.initializer if i.name == "w"]
        w = numpy_helper.to_array(init).copy()
        w[3] *= weight_scale  # the "dark" class: changes which class wins on many pixels
        init.CopyFrom(numpy_helper.from_array(w, "w"))
    if softmax_to_sigmoid:
        for node in model.graph.node:
            if node.op_type == "Softmax":
                del node.attribute[:]
                node.op_type = "Sigmoid"  # same ranking, so the labels agree; the confidences do not
    onnx.save(model, str(dst))
    return dst


def _frames(n=4, h=8, w=16):
    return np.random.default_rng(1).standard_normal((n, 3, h, w)).astype(np.float32)


def test_openvino_passes_against_onnxruntime(seg_onnx):
    engine = create_engine(seg_onnx, engine="openvino", precision="fp32")
    report = parity.check_engine_parity(engine, seg_onnx, _frames())
    assert report.passed, report.summary()
    assert report.label_agreement == 1.0 and report.mean_confidence_diff < 1e-5
    assert (report.engine, report.precision, report.reference) == ("openvino", "fp32", "onnxruntime fp32 cpu")
    assert report.frames == 4


def test_damaged_graph_fails_and_create_engine_refuses_it(seg_onnx, tmp_path, caplog):
    damaged = _damaged_copy(seg_onnx, tmp_path / "damaged.onnx", weight_scale=-8.0)
    engine = create_engine(damaged, engine="openvino", precision="fp32")
    report = parity.check_engine_parity(engine, seg_onnx, _frames())
    assert not report.passed and report.label_agreement < 0.999
    assert any(f.startswith("label agreement") for f in report.failures)
    record = parity.write_record(damaged, report)
    assert json.loads(record.read_text())["parity"]["passed"] is False
    for kind in ("openvino", "onnxruntime", "auto"):
        with pytest.raises(parity.ParityError, match="damaged.onnx: failed its parity gate.*label agreement"):
            create_engine(damaged, engine=kind)
    with caplog.at_level(logging.WARNING):
        kept = create_engine(damaged, engine="openvino", allow_parity_failure=True)
    assert kept.info.engine == "openvino"
    assert "failed its parity gate" in caplog.text and "allow_parity_failure" in caplog.text
    create_engine(seg_onnx, engine="openvino")  # the undamaged original has no failed record: loads


def test_replaced_softmax_fails_on_confidence(seg_onnx, tmp_path):
    damaged = _damaged_copy(seg_onnx, tmp_path / "sigmoid.onnx", softmax_to_sigmoid=True)
    engine = create_engine(damaged, engine="onnxruntime")
    report = parity.check_engine_parity(engine, seg_onnx, _frames())
    assert report.label_agreement == 1.0  # the argmax does not see the change ...
    assert not report.passed and report.failures[0].startswith("mean confidence diff")  # ... the gate does


def test_openvino_reports_contract_output_names(tmp_path, seg_metadata):
    """An output produced through an op OpenVINO folds away (Identity here, as torch exports leave them) still
    comes back under the graph's name, not the folded node's, so the gate can compare it."""
    nodes = [helper.make_node("Conv", ["images", "w"], ["/module/logits"]),
             helper.make_node("ArgMax", ["/module/logits"], ["/module/argmax"], axis=1, keepdims=0),
             helper.make_node("Cast", ["/module/argmax"], ["labels"], to=onnx.TensorProto.UINT8),
             helper.make_node("Softmax", ["/module/logits"], ["/module/probs"], axis=1),
             helper.make_node("ReduceMax", ["/module/probs"], ["/module/Div_output_0"], axes=[1], keepdims=0),
             helper.make_node("Identity", ["/module/Div_output_0"], ["confidence"])]
    weight = np.eye(4, 3, dtype=np.float32)[:, :, None, None]
    graph = helper.make_graph(
        nodes, "named", [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["B", 3, 8, 16])],
        [helper.make_tensor_value_info("labels", onnx.TensorProto.UINT8, ["B", 8, 16]),
         helper.make_tensor_value_info("confidence", onnx.TensorProto.FLOAT, ["B", 8, 16])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in seg_metadata().to_onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path / "named.onnx"
    onnx.save(model, str(path))
    engine = create_engine(path, engine="openvino", precision="fp32")
    assert sorted(engine.infer(_frames(1))) == ["confidence", "labels"]
    assert parity.check_engine_parity(engine, path, _frames(2)).passed


def test_record_in_signed_sidecar_keeps_it_signed(tmp_path, seg_onnx):
    """A TensorRT engine's sidecar is signed: the gate's figures go in and the signature still holds (a cache hit
    stays a hit), and a failed record in it is refused."""
    from vlt_perception.engines import cache as engine_cache

    sidecar = tmp_path / "model.fp16.abc.json"
    entry = {"key": "abc", "engine_sha256": "00"}
    entry["signature"] = engine_cache.sign(entry)
    sidecar.write_text(json.dumps(entry))
    engine = create_engine(_damaged_copy(seg_onnx, tmp_path / "d.onnx", weight_scale=-8.0), engine="onnxruntime")
    report = parity.check_engine_parity(engine, seg_onnx, _frames())
    parity.record_in_sidecar(sidecar, report)
    data = json.loads(sidecar.read_text())
    assert data["parity"]["passed"] is False and data["key"] == "abc"
    assert engine_cache.signed_by_this_user(data)
    model = tmp_path / "model.fp16.abc.engine"
    with pytest.raises(parity.ParityError, match="model.fp16.abc.engine: failed its parity gate"):
        parity.enforce_record(model, sidecar=sidecar)
    assert not parity.enforce_record(model, sidecar=sidecar, allow_parity_failure=True).passed


def test_unreadable_record_is_an_error(seg_onnx):
    parity.record_path(seg_onnx).write_text("{not json")
    with pytest.raises(parity.ParityError, match="unreadable parity record"):
        create_engine(seg_onnx, engine="onnxruntime")


def test_detection_gate_matches_boxes():
    metadata = ModelMetadata(task=TASK_DETECTION, model_name="det", class_names=["a", "b"], palette=[[0, 0, 0]] * 2,
                             mean=[0.5] * 3, std=[0.25] * 3, input_height=8, input_width=16)
    ref = {"boxes": np.array([[[0, 0, 10, 10], [20, 20, 40, 30]]], np.float32),
           "scores": np.array([[0.9, 0.8]], np.float32), "labels": np.array([[0, 1]], np.int64)}
    same = {k: v[:, ::-1].copy() for k, v in ref.items()}  # reordered: still matched
    shifted = {**ref, "boxes": ref["boxes"] + np.array([0, 0, 0, 0, 6, 6, 6, 6], np.float32).reshape(1, 2, 4)}
    thresholds = parity.ParityThresholds.for_precision("fp32")
    fields = dict(engine="x", precision="fp32", model="m", reference="r", frames=1, frame_source="given")
    good = parity.compare_to_reference(ref, same, metadata, thresholds, **fields)
    assert good.passed and good.detection_agreement == 1.0 and good.compared_detections == 2
    bad = parity.compare_to_reference(ref, shifted, metadata, thresholds, **fields)
    assert not bad.passed and bad.detection_agreement == 0.5 and bad.label_agreement is None


def test_frames_from_a_folder_are_preprocessed_as_deployed(tmp_path, seg_metadata):
    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    rgb = np.full((16, 32, 3), (200, 100, 50), np.uint8)
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    frames, source = parity.load_frames(tmp_path / "imgs", seg_metadata(), count=3)
    assert source == "folder" and frames.shape == (1, 3, 8, 16)
    np.testing.assert_allclose(frames[0, :, 0, 0], (np.array([200, 100, 50]) / 255 - 0.5) / 0.25, atol=1e-5)
    noise, source = parity.load_frames(None, seg_metadata(), count=2)
    assert source == "noise" and noise.shape == (2, 3, 8, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no images"):
        parity.load_frames(tmp_path / "empty", seg_metadata())


def test_tensorrt_provider_cache_is_gated_once_per_onnx(seg_onnx, monkeypatch):
    """ONNX Runtime with the TensorRT execution provider (stood in by a CPU session that reports the provider and
    returns damaged confidences, as a miscompiled engine cache would): gated on first use, the result recorded in the
    cache folder and enforced on later loads without running the gate again; a changed ONNX file is gated anew."""
    from vlt_perception.engines import onnxruntime_engine

    class MiscompiledTrtProvider(onnxruntime_engine.OnnxRuntimeEngine):
        damage = 0.5

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # default providers (TensorRT first) as the node asks; the gate's reference asks for the CPU alone
            self.trt = kwargs.get("providers") is None
            if self.trt:
                self.info.providers = ["TensorrtExecutionProvider", *self.info.providers]

        def infer(self, images):
            out = super().infer(images)
            return {**out, "confidence": out["confidence"] * self.damage} if self.trt else out

    monkeypatch.setattr(onnxruntime_engine, "OnnxRuntimeEngine", MiscompiledTrtProvider)
    checks = []
    real_check = parity.check_engine_parity
    monkeypatch.setattr(parity, "check_engine_parity", lambda *a, **k: checks.append(1) or real_check(*a, **k))
    with pytest.raises(parity.ParityError, match="TensorRT execution provider.*mean confidence diff"):
        create_engine(seg_onnx, engine="onnxruntime")
    record = seg_onnx.parent / "tiny_seg.ort_trt_cache" / "tiny_seg.fp32.parity.json"
    assert json.loads(record.read_text())["parity"]["passed"] is False
    with pytest.raises(parity.ParityError):
        create_engine(seg_onnx, engine="onnxruntime")
    assert len(checks) == 1  # the second load read the record
    assert create_engine(seg_onnx, engine="onnxruntime", allow_parity_failure=True).info.engine == "onnxruntime"
    MiscompiledTrtProvider.damage = 1.0  # a rebuilt, correct cache for a changed ONNX file: gated again, passes
    with pytest.raises(parity.ParityError):  # same bytes: still the recorded failure
        create_engine(seg_onnx, engine="onnxruntime")
    model = onnx.load(str(seg_onnx))
    model.doc_string = "re-exported"
    onnx.save(model, str(seg_onnx))
    assert create_engine(seg_onnx, engine="onnxruntime").info.engine == "onnxruntime"
    assert len(checks) == 2 and json.loads(record.read_text())["parity"]["passed"] is True


def test_tensorrt_engine_is_gated_after_its_build(seg_onnx, tmp_path, monkeypatch):
    """create_engine(onnx, engine="tensorrt") with the cache logic real and the TensorRT parts stood in (no
    TensorRT here): the "built engine" computes a damaged graph, so the gate fails, its figures go into the signed
    sidecar, and the engine is refused now and on every later load, unless allowed."""
    from vlt_perception.engines import cache as engine_cache
    from vlt_perception.engines import onnxruntime_engine
    from vlt_perception.engines import tensorrt_engine as trt_engine

    damaged = _damaged_copy(seg_onnx, tmp_path / "damaged.onnx", weight_scale=-8.0)

    class EngineFromDamagedGraph(onnxruntime_engine.OnnxRuntimeEngine):  # what a miscompiled engine computes
        def __init__(self, engine_path):
            super().__init__(damaged, providers=["CPUExecutionProvider"])
            self.info.engine, self.info.precision, self.info.model_path = "tensorrt", "fp16", str(engine_path)

    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: None)
    monkeypatch.setattr(trt_engine, "TensorRTEngine", EngineFromDamagedGraph)
    real_ensure = trt_engine.ensure_engine
    monkeypatch.setattr(trt_engine, "ensure_engine", lambda onnx_path, settings, cache_dir=None: real_ensure(
        onnx_path, settings, cache_dir=cache_dir, build_fn=lambda *_: b"serialized", trt_version="10.14", gpu="test"))
    cache = tmp_path / "cache"
    with pytest.raises(parity.ParityError, match=r"\.engine: failed its parity gate.*label agreement"):
        create_engine(seg_onnx, engine="tensorrt", cache_dir=cache)
    (engine_path,) = cache.glob("*.engine")
    sidecar = json.loads(trt_engine.sidecar_path(engine_path).read_text())
    assert sidecar["parity"]["passed"] is False and sidecar["parity"]["reference"] == "onnxruntime fp32 cpu"
    assert engine_cache.signed_by_this_user(sidecar)  # still a cache hit: not rebuilt, but refused
    checks = []
    monkeypatch.setattr(parity, "check_engine_parity", lambda *a, **k: checks.append(1))
    for source in (seg_onnx, engine_path):  # from the ONNX (cache hit) and the engine file itself
        with pytest.raises(parity.ParityError):
            create_engine(source, engine="tensorrt", cache_dir=cache)
    assert checks == []
    assert create_engine(engine_path, engine="tensorrt", allow_parity_failure=True).info.engine == "tensorrt"


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_a_confidence_that_is_not_finite_fails_the_gate(bad_value):
    """NaN compares False with every threshold: a candidate whose confidence output is NaN (as plain PTQ int8 gave
    on a trained tiny model) must fail, not slip through."""
    metadata = ModelMetadata(task=TASK_SEGMENTATION, model_name="seg", class_names=["a", "b"],
                             palette=[[0, 0, 0]] * 2, mean=[0.5] * 3, std=[0.25] * 3, input_height=2, input_width=4)
    ref = {"labels": np.zeros((1, 2, 4), np.uint8), "confidence": np.full((1, 2, 4), 0.9, np.float32)}
    out = {**ref, "confidence": ref["confidence"].copy()}
    out["confidence"][0, 0, 0] = bad_value  # labels identical: only the confidence is broken
    fields = dict(engine="x", precision="int8", model="m", reference="r", frames=1, frame_source="given")
    report = parity.compare_to_reference(ref, out, metadata, parity.ParityThresholds.for_precision("int8"), **fields)
    assert report.label_agreement == 1.0
    assert not report.passed and report.failures[0].startswith("mean confidence diff is")
