"""The export command end to end on a real (tiny, random-weight) checkpoint."""

import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from vlt_perception.engines import create_engine
from vlt_training.cli.export import main
from vlt_training.training.checkpoint import save_checkpoint
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.modeling import create_model

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with one checkpoint whose config points at a tiny Cityscapes-layout val split."""
    root = tmp_path_factory.mktemp("export_cli")
    city = root / "data" / "leftImg8bit" / "val" / "town"
    city.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(city / f"town_{i:06d}_000019_leftImg8bit.png"),
                    rng.integers(0, 256, (96, 192, 3), dtype=np.uint8))
    config = ("eval:\n  datasets:\n  - name: cityscapes\n    root: data\n    split: val\n"
              "    options: {labels: false}\ndata:\n  root: " + str(root) + "\n")
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former")
    save_checkpoint(root / "run", 5, model, metadata_for_model(model, 64, 128), config)
    return root / "run"


@pytest.mark.cli
def test_export_onnx_from_checkpoint(run_dir, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["--checkpoint", str(run_dir), "--format", "onnx", "--out", str(out), "--num-verify", "2"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 dataset images: label agreement 1.00000 PASS" in printed  # the val split was found and used
    report = json.loads(out.with_suffix(".export.json").read_text())
    assert report["parity"][0]["passed"] and report["metadata"]["input_height"] == 64
    assert not out.with_name("tiny.unverified.onnx").exists()
    # The exported file runs in the torch-free runtime and agrees with the torch engine on the checkpoint.
    ort_engine = create_engine(out, engine="onnxruntime", providers=["CPUExecutionProvider"])
    torch_engine = create_engine(run_dir, engine="torch", precision="fp32")
    def without_extra(md):
        return {k: v for k, v in md.to_dict().items() if k != "extra"}

    assert without_extra(torch_engine.metadata) == without_extra(ort_engine.metadata)
    images = np.random.default_rng(1).standard_normal((1, 3, 64, 128)).astype(np.float32)
    assert np.mean(ort_engine.infer(images)["labels"] == torch_engine.infer(images)["labels"]) >= 0.999


@pytest.mark.cli
@pytest.mark.parametrize("argv, message", [
    (["--precision", "bf16"], "bf16 is for the torch engine only"),
    (["--precision", "int8"], "int8 is a TensorRT build flag"),
    (["--format", "tensorrt", "--precision", "int8"], "needs --calib-dir"),
    (["--height", "64"], "give both --height and --width"),
])
def test_impossible_requests_exit_2(run_dir, argv, message, capsys):
    assert main(["--checkpoint", str(run_dir), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.cli
def test_tensorrt_missing_exits_2_with_hint(run_dir, capsys):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here")
    assert main(["--checkpoint", str(run_dir), "--format", "tensorrt"]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err


def test_torch_engine_bf16_on_checkpoint(run_dir):
    engine = create_engine(run_dir, precision="bf16")  # auto: checkpoint folder -> torch
    assert engine.info.engine == "torch" and engine.info.precision == "bf16"
    out = engine.infer(np.zeros((1, 3, 64, 128), np.float32))
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (1, 64, 128)


@pytest.mark.cli
def test_export_command_logs_its_own_info_not_open_clips(tmp_path):
    """As a user runs it (a fresh process): the exporter's INFO lines, none of open_clip's root-logger progress."""
    out = tmp_path / "tiny.onnx"
    done = subprocess.run([sys.executable, "-m", "vlt_training.cli.export", "--model", "vltseg_tiny_mask2former",
                           "--height", "64", "--width", "128", "--num-verify", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INFO vlt_training.export.onnx_export: exported" in done.stderr
    assert "INFO root:" not in done.stderr and out.exists()
