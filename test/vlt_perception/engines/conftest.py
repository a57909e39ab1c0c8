"""Tiny ONNX graphs following the graph contract, written with the onnx helper API (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vlt_perception.metadata import TASK_SEGMENTATION, ModelMetadata

H, W = 8, 16
# Class scores = a fixed 1x1 convolution of the normalised image; tests recompute it with numpy.
WEIGHT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-0.5, -0.5, -0.5]], dtype=np.float32)


def seg_metadata() -> ModelMetadata:
    return ModelMetadata(task=TASK_SEGMENTATION, model_name="onnx_tiny_seg", class_names=["r", "g", "b", "dark"],
                         palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], mean=[0.5, 0.5, 0.5],
                         std=[0.25, 0.25, 0.25], input_height=H, input_width=W, extra={"precision": "fp32"})


def write_seg_onnx(path: Path, metadata: ModelMetadata | None = None) -> Path:
    nodes = [helper.make_node("Conv", ["images", "w"], ["logits"]),  # B, 4, H, W
             helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),  # B, H, W int64
             helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "tiny_seg", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, H, W])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", H, W]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["B", H, W])],
        [numpy_helper.from_array(WEIGHT[:, :, None, None], "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata is not None:
        for key, value in metadata.to_onnx_props().items():
            model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference_seg(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy version of the tiny graph: (labels uint8 (B, H, W), confidence float32 (B, H, W))."""
    logits = np.einsum("kc,bchw->bkhw", WEIGHT, images)  # B, 4, H, W
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return logits.argmax(1).astype(np.uint8), probs.max(1).astype(np.float32)


@pytest.fixture
def seg_onnx(tmp_path) -> Path:
    return write_seg_onnx(tmp_path / "tiny_seg.onnx", seg_metadata())


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, H, W)).astype(np.float32)


# Helpers as fixtures: with --import-mode=importlib test modules cannot import this conftest by name.
@pytest.fixture(name="seg_metadata")
def _seg_metadata_fixture():
    return seg_metadata


@pytest.fixture(name="write_seg_onnx")
def _write_seg_onnx_fixture():
    return write_seg_onnx


@pytest.fixture(name="reference_seg")
def _reference_seg_fixture():
    return reference_seg
