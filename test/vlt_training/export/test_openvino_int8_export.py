"""``export --format openvino --precision int8`` end to end on a tiny random-weight VLTSeg checkpoint."""

import json

import cv2
import numpy as np
import pytest
import torch

from vlt_perception.engines import create_engine
from vlt_training.cli.export import main
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.modeling import create_model
from vlt_training.training.checkpoint import save_checkpoint

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def run_and_calib(tmp_path_factory):
    """A checkpoint (tiny VLTSeg with its deformable-attention pixel decoder, 64x128) and a nested image folder."""
    root = tmp_path_factory.mktemp("ov_int8")
    rng = np.random.default_rng(0)
    for i in range(4):
        path = root / "calib" / f"drive{i % 2}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (6, 12, 3), dtype=np.uint8)
        cv2.imwrite(str(path), cv2.resize(small, (128, 64), interpolation=cv2.INTER_LINEAR))
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former")
    save_checkpoint(root / "run", 5, model, metadata_for_model(model, 64, 128), "data: {}\n")
    return root / "run", root / "calib"


@pytest.mark.cli
def test_int8_export_writes_a_gated_self_describing_model(run_and_calib, tmp_path, capsys):
    run_dir, calib = run_and_calib
    out = tmp_path / "tiny.xml"
    assert main(["--checkpoint", str(run_dir), "--format", "openvino", "--precision", "int8", "--calib", str(calib),
                 "--out", str(out), "--num-verify", "2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    for name in ("tiny.xml", "tiny.bin", "tiny.onnx", "tiny.xml.parity.json", "tiny.export.json"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "tiny.export.json").read_text())
    gate = json.loads((tmp_path / "tiny.xml.parity.json").read_text())["parity"]
    assert report["parity_int8"] == gate and gate["passed"] and gate["frame_source"] == "folder"
    assert gate["label_agreement"] >= 0.97 and report["quantization"]["calibration"] == {"source": "folder",
                                                                                        "images": 4}
    engine = create_engine(out)
    assert engine.info.precision == "int8" and engine.metadata.input_height == 64
    # against the fp32 graph on ONNX Runtime, on images the gate did not see
    reference = create_engine(tmp_path / "tiny.onnx", engine="onnxruntime", providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).uniform(-1.5, 1.5, (1, 3, 64, 128)).astype(np.float32)
    assert np.mean(engine.infer(images)["labels"] == reference.infer(images)["labels"]) >= 0.9
    # Only the value and output projections of the pixel decoder's deformable attention are quantised: its gather
    # form computes indices from float positions (Floor / Cast), which int8 would shift.
    quantised = set()
    for op in ov.Core().read_model(str(out)).get_ops():
        if op.get_type_name() == "FakeQuantize":
            quantised |= {t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs()}
    deform = {name for name in quantised if "pixel_decoder/layers." in name and "/self_attn/" in name}
    assert deform, "the deformable attention's projections should be quantised"
    assert all("/value_proj/" in name or "/output_proj/" in name for name in deform), sorted(deform)


@pytest.mark.cli
@pytest.mark.parametrize("argv, message", [
    (["--format", "openvino", "--precision", "fp32"], "--format openvino writes int8 models"),
    (["--format", "openvino"], "needs --calib-dir / --calib"),
    (["--format", "openvino", "--calib", "CALIB", "--out", "model.onnx"], "written as .xml"),
])
def test_impossible_openvino_requests_exit_2(run_and_calib, argv, message, capsys):
    run_dir, calib = run_and_calib
    argv = [str(calib) if a == "CALIB" else a for a in argv]
    assert main(["--checkpoint", str(run_dir), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.cli
def test_missing_calibration_source_exits_2_naming_it(run_and_calib, tmp_path, capsys):
    run_dir, _ = run_and_calib
    missing = tmp_path / "nowhere"
    assert main(["--checkpoint", str(run_dir), "--format", "openvino", "--calib", str(missing),
                 "--out", str(tmp_path / "m.xml")]) == 2
    assert f"{missing}: calibration source not found" in capsys.readouterr().err
