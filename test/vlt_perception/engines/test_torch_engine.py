import numpy as np
import pytest

import torch

from vlt_perception.engines._common import cpu_bf16_flags  # noqa: E402
from vlt_perception.engines.base import EngineError  # noqa: E402
from vlt_perception.engines.torch_engine import TorchEngine, default_precision, outputs_to_numpy  # noqa: E402
from vlt_perception.metadata import ModelMetadata  # noqa: E402

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2\n"


class ArgmaxSeg(torch.nn.Module):
    """labels = argmax over a 1x1 convolution, confidence = max softmax (dict outputs, as export modules return)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, images):
        confidence, labels = self.conv(images).softmax(1).max(1)  # B, H, W
        return {"labels": labels.to(torch.uint8), "confidence": confidence}


METADATA = ModelMetadata(class_names=["a", "b", "c", "d"], input_height=8, input_width=16)


def test_cpu_flag_detection():
    assert cpu_bf16_flags(AMX_CPU) == {"avx512_bf16", "amx_bf16"}
    assert cpu_bf16_flags(OLD_CPU) == set()
    assert default_precision("cpu", AMX_CPU) == "bf16"
    assert default_precision("cpu", OLD_CPU) == "fp32"
    assert default_precision("cuda", AMX_CPU) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_infer_matches_module(precision):
    module = ArgmaxSeg()
    engine = TorchEngine(module, METADATA, precision=precision, device="cpu")
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 16)).astype(np.float32)
    out = engine.infer(images)
    with torch.no_grad():
        ref = module(torch.from_numpy(images))
    assert out["labels"].dtype == np.uint8 and out["confidence"].dtype == np.float32
    assert engine.info.precision == precision and engine.info.device == "cpu"
    agreement = np.mean(out["labels"] == ref["labels"].numpy())
    assert agreement >= (1.0 if precision == "fp32" else 0.9)
    np.testing.assert_allclose(out["confidence"], ref["confidence"].numpy(), atol=1e-6 if precision == "fp32" else 2e-2)


def test_precision_errors():
    with pytest.raises(EngineError, match="fp16 runs on CUDA only"):
        TorchEngine(ArgmaxSeg(), METADATA, precision="fp16", device="cpu")
    with pytest.raises(EngineError, match="precision must be one of"):
        TorchEngine(ArgmaxSeg(), METADATA, precision="int8", device="cpu")


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(EngineError, match=f"{tmp_path / 'run'}: checkpoint not found"):
        TorchEngine.from_checkpoint(tmp_path / "run")


def test_corrupt_checkpoint_names_the_file(tmp_path):
    ckpt = tmp_path / "step_00000001"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text("{not json")
    with pytest.raises(EngineError, match=f"{ckpt}: cannot load checkpoint: .*meta.json: corrupt JSON"):
        TorchEngine.from_checkpoint(ckpt)


def test_tuple_outputs_follow_the_contract_order():
    det = ModelMetadata(task="detection", class_names=["car"])
    out = outputs_to_numpy((torch.zeros(1, 2, 4), torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.int32)), det)
    assert list(out) == ["boxes", "scores", "labels"] and out["labels"].dtype == np.int64
    seg = outputs_to_numpy((torch.zeros(1, 2, 2, dtype=torch.int64),), METADATA)
    assert list(seg) == ["labels"] and seg["labels"].dtype == np.uint8


def test_checkpoint_with_tta(tmp_path):
    """--tta in the bag evaluation: the engine's labels come from the multi-scale + flip averaged scores."""
    from vlt_perception.engines.factory import create_engine
    from vlt_training.training.checkpoint import save_checkpoint
    from vlt_training.evaluation.tta import TTASemantic
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former", class_names=["a", "b", "c"]).eval()
    checkpoint = save_checkpoint(tmp_path / "run", 1, model, metadata_for_model(model, 64, 128), "task: segmentation\n")
    engine = create_engine(checkpoint, "torch", precision="fp32", tta=True)
    plain = TorchEngine.from_checkpoint(checkpoint, precision="fp32", device="cpu")
    assert engine.tta and not plain.tta
    images = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    out = engine.infer(images)
    with torch.no_grad():
        want = TTASemantic(model).semantic_inference(torch.from_numpy(images)).argmax(1)
    np.testing.assert_array_equal(out["labels"], want.numpy().astype(np.uint8))
    (tmp_path / "model.onnx").write_bytes(b"")  # never opened: refused before loading
    with pytest.raises(EngineError, match="torch engine only"):
        create_engine(tmp_path / "model.onnx", "onnxruntime", tta=True)
