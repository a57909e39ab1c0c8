"""OpenVINO int8 models: NNCF quantisation of a tiny ONNX on calibration images, loaded through create_engine like
any other model, with its metadata, its precision and its parity record."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vlt_perception.engines import create_engine
from vlt_perception.engines.base import EngineError
from vlt_perception.engines.calibration import CalibrationBatches, calibration_items
from vlt_perception.engines.parity import ParityError, record_path
from vlt_perception.preprocess import Preprocessor

from .conftest import H, W, reference_seg, seg_metadata

pytest.importorskip("nncf")  # a training requirement (requirements/train.txt): the quantiser
ov = pytest.importorskip("openvino")
openvino_export = pytest.importorskip("vlt_training.export.openvino_export")


def _images(n: int, seed: int) -> list[np.ndarray]:
    """Smooth colour fields (H, W, 3) uint8: several classes per image, as camera frames have."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 3, 5, 3), dtype=np.uint8)
    return [cv2.resize(s, (W, H), interpolation=cv2.INTER_LINEAR) for s in small]


@pytest.fixture
def calib_folder(tmp_path):
    folder = tmp_path / "calib"
    for i, rgb in enumerate(_images(8, 0)):
        path = folder / f"seq{i % 2}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def calib_bag(tmp_path):
    from vlt_perception.bag.writer import write_records_bag

    frames = _images(8, 0)
    records = [{"file_name": str(i), "image_id": str(i), "height": H, "width": W} for i in range(len(frames))]
    write_records_bag(records, tmp_path / "drive", read_image=lambda r: frames[int(r["file_name"])])
    return tmp_path / "drive"


def _frames(metadata, seed: int = 1) -> np.ndarray:
    return next(iter(CalibrationBatches(_images(6, seed), Preprocessor.from_metadata(metadata), 6)))  # 6, 3, H, W


def _fake_quantize_count(path) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ops())


@pytest.mark.parametrize("source", ["calib_folder", "calib_bag"])
def test_int8_model_loads_like_any_other(seg_onnx, source, request, tmp_path):
    calib = request.getfixturevalue(source)
    out = tmp_path / "int8" / "model.xml"
    path, written = openvino_export.quantize_onnx(seg_onnx, seg_metadata(), calib, out,
                                                  openvino_export.Int8Options(max_images=8))
    assert path == out and out.with_suffix(".bin").is_file()
    assert _fake_quantize_count(out) > 0  # it was quantised, not copied
    engine = create_engine(out)  # auto: .xml -> OpenVINO
    assert (engine.info.engine, engine.info.precision) == ("openvino", "int8")
    original = seg_metadata().to_dict()
    loaded = engine.metadata.to_dict()
    assert {k: v for k, v in loaded.items() if k != "extra"} == {k: v for k, v in original.items() if k != "extra"}
    assert loaded["extra"]["precision"] == "int8"
    assert loaded["extra"]["quantization"]["calibration"] == {"source": source.split("_")[1], "images": 8}
    frames = _frames(engine.metadata)
    labels, confidence = reference_seg(frames)
    outputs = engine.infer(frames)
    assert outputs["labels"].dtype == np.uint8 and outputs["labels"].shape == labels.shape
    assert np.mean(outputs["labels"] == labels) >= 0.95
    assert np.abs(outputs["confidence"] - confidence).mean() < 0.05
    engine.close()


def test_export_records_parity_against_fp32(seg_onnx, calib_folder, tmp_path):
    out = tmp_path / "model.xml"
    result = openvino_export.export_int8(seg_onnx, seg_metadata(), calib_folder, out,
                                         openvino_export.Int8Options(max_images=8), num_verify=4)
    record = json.loads(record_path(out).read_text())["parity"]
    assert record == result["parity"]
    assert record["passed"] and record["precision"] == "int8" and record["frames"] == 4
    assert record["reference"] == "onnxruntime fp32 cpu" and record["frame_source"] == "folder"
    assert record["label_agreement"] >= 0.95
    # the gate's figures are the engine's real agreement with ONNX Runtime on those frames
    engine = create_engine(out)
    frames = next(iter(CalibrationBatches(calibration_items(calib_folder, 4), Preprocessor.from_metadata(
        engine.metadata), 4)))
    assert np.mean(engine.infer(frames)["labels"] == reference_seg(frames)[0]) == pytest.approx(
        record["label_agreement"])


def test_failed_record_is_refused(seg_onnx, calib_folder, tmp_path):
    out = tmp_path / "model.xml"
    openvino_export.export_int8(seg_onnx, seg_metadata(), calib_folder, out,
                                openvino_export.Int8Options(max_images=8), num_verify=2)
    data = json.loads(record_path(out).read_text())
    data["parity"].update(passed=False, failures=["label agreement 0.5 < 0.97"])
    record_path(out).write_text(json.dumps(data))
    with pytest.raises(ParityError, match="failed its parity gate"):
        create_engine(out)
    assert create_engine(out, allow_parity_failure=True).info.precision == "int8"


def test_ir_without_metadata_is_named(seg_onnx, tmp_path):
    bare = tmp_path / "bare.xml"
    ov.save_model(ov.convert_model(str(seg_onnx)), str(bare))
    with pytest.raises(EngineError, match="no 'vlt_perception_metadata'") as info:
        create_engine(bare)
    assert str(bare) in str(info.value)


def test_int8_precision_needs_an_int8_model(seg_onnx):
    with pytest.raises(EngineError, match="int8 needs an int8 model"):
        create_engine(seg_onnx, engine="openvino", precision="int8")
