"""Export + ONNX Runtime parity for the registry's tiny models (the real architectures, random weights)."""

import numpy as np
import onnx
import pytest
import torch

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from vlt_perception.metadata import ModelMetadata
from vlt_training.export import export_onnx, verify_onnx
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.export.onnx_export import atomic_save_onnx, to_fp16
from vlt_training.export.verify import verification_batch
from vlt_training.modeling import create_model, list_models

# The deployable families; the registry also holds pretraining models (a tower and a loss, nothing to deploy).
TINY = sorted(name for name in list_models() if "tiny" in name and name.startswith(("vltseg_", "vltdet_")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (model, fp32 ONNX path, stored metadata), exported once per module (an export costs seconds)."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = create_model(name).eval()
            folder = tmp_path_factory.mktemp(name)
            path, stored = export_onnx(model, metadata_for_model(model, 64, 128), folder / f"{name}.onnx")
            cache[name] = (model, path, stored)
        return cache[name]

    return get


def test_registry_has_tiny_models():
    assert "vltseg_tiny_mask2former" in TINY


def test_vltdet_tiny_is_registered():
    """Detection export parity below runs on the tiny VLTDet: it must be in the registry."""
    assert [name for name in TINY if name.startswith("vltdet")], "no vltdet_* tiny model registered"


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_export_parity(name, exported):
    model, path, stored = exported(name)
    assert stored.model_name == name
    images, source = verification_batch(stored, count=2)
    report = verify_onnx(path, model, stored, images, source)
    assert report.passed, report.summary()
    # Deformable attention is exported as gathers: no GridSample, which TensorRT 10.14 / 11.1 miscompile.
    assert "GridSample" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    engine = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"])
    assert engine.metadata == stored
    out = engine.infer(images)  # batch of 2 through the dynamic batch axis
    expected = {"labels", "confidence"} if stored.task == "semantic_segmentation" else {"boxes", "scores", "labels"}
    if getattr(model, "predicts_masks", False):
        expected.add("masks")  # Mask R-CNN: (B, K, 28, 28) probabilities in each box's frame
        assert out["masks"].shape == (2, stored.max_detections, 28, 28) and out["masks"].dtype == np.float32
        assert "masks" in report.max_abs_diff  # compared slot by slot (test_vltdet matches them by detection)
    assert set(out) == expected
    if stored.task == "semantic_segmentation":
        assert out["labels"].shape == (2, 64, 128) and out["labels"].max() < len(stored.class_names)
        assert np.all((out["confidence"] >= 0) & (out["confidence"] <= 1 + 1e-6))
    else:
        assert out["boxes"].shape[0] == 2 and out["boxes"].shape[2] == 4 and out["labels"].dtype == np.int64


def test_text_guidance_is_exported_as_constant_embeddings(exported):
    """DenseCLIP's prompt embeddings do not depend on the image: the graph holds them, not the text tower (whose
    token table alone is 49408 x width) run again on every frame."""
    model, path, _ = exported("vltseg_tiny_mask2former")
    tower = model.pixel_text.prompts.text_tower
    stored = {onnx.numpy_helper.to_array(t).tobytes() for t in onnx.load(str(path)).graph.initializer}
    matrices = {"token_embedding": tower.token_embedding.weight, "positional_embedding": tower.positional_embedding}
    matrices.update((n, p) for n, p in tower.transformer.named_parameters() if p.dim() == 2)
    in_graph = [name for name, weight in matrices.items()  # by value, as stored or transposed (MatMul weights)
                if {(w := weight.detach().float().numpy()).tobytes(), np.ascontiguousarray(w.T).tobytes()} & stored]
    assert not in_graph, f"the text tower's weights are in the exported graph: {in_graph}"


def test_vltseg_fp16_conversion_loads_and_agrees(exported, tmp_path):
    """fp16 conversion of the real Mask2Former graph (Cast next to float32-only Resize used to break it)."""
    model, fp32_path, _ = exported("vltseg_tiny_mask2former")
    path = tmp_path / "fp16.onnx"
    atomic_save_onnx(to_fp16(onnx.load(str(fp32_path))), path)
    graph = onnx.load(str(path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    stored = ModelMetadata.from_onnx_props({p.key: p.value for p in graph.metadata_props})
    images, source = verification_batch(stored, count=1)
    report = verify_onnx(path, model, stored, images, source)
    assert report.label_agreement > 0.95, report.summary()
