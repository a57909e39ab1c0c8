"""Tiny ONNX models that follow the graph contract of ``ModelMetadata``, built with the onnx helper API.

Used by the pipeline tests and the ROS-graph tests (the node processes load the files these functions write).

- Segmentation: a 1x1 convolution with weights = identity on (R, G, B) -> class = the dominant colour channel
  (0 red, 1 green, 2 blue) of each normalised pixel; ``confidence`` = max softmax probability.
- Detection: fixed boxes in network pixels (given by the test) whose scores do not depend on the image.
- ``slow_layers`` adds a chain of input-dependent matrix products (their result is multiplied by 0 and added to
  the outputs) so that the model is slower than a 30 Hz camera, for overload tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlt_perception.metadata import TASK_DETECTION, TASK_SEGMENTATION, ModelMetadata

OPSET = 17


def _slow_chain(nodes: list, inits: list, n_layers: int, h: int, w: int) -> str | None:
    """Appends ``n_layers`` (rows, 512) x (512, 512) MatMuls on the input; returns a scalar 0 tensor's name."""
    if n_layers <= 0:
        return None
    total = 3 * h * w
    if total % 512:
        raise ValueError("slow_layers needs 3*H*W divisible by 512")
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((512, 512)) / np.sqrt(512) * 0.5).astype(np.float32)
    inits += [numpy_helper.from_array(weight, "slow_w"),
              numpy_helper.from_array(np.array([total // 512, 512], dtype=np.int64), "slow_shape"),
              numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")]
    nodes.append(helper.make_node("Reshape", ["images", "slow_shape"], ["slow_0"]))
    for i in range(n_layers):
        nodes.append(helper.make_node("MatMul", [f"slow_{i}", "slow_w"], [f"slow_{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"slow_{n_layers}"], ["slow_mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["slow_mean", "zero"], ["slow_zero"]))
    return "slow_zero"


def _save(graph, metadata: ModelMetadata, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in metadata.to_onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def segmentation_model(path: Path, height: int = 16, width: int = 32, num_classes: int = 3,
                       slow_layers: int = 0, confidence: bool = True) -> Path:
    """Writes the dominant-colour segmentation model; class names ``red``, ``green``, ``blue`` (+ extras)."""
    names = ["red", "green", "blue"] + [f"class{i}" for i in range(3, num_classes)]
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]] + [[i, i, i] for i in range(3, num_classes)]
    metadata = ModelMetadata(task=TASK_SEGMENTATION, model_name="tiny_seg", class_names=names, palette=palette,
                             mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], input_height=height, input_width=width)
    weight = np.zeros((num_classes, 3, 1, 1), dtype=np.float32)  # C, 3, 1, 1
    for c in range(3):
        weight[c, c] = 1.0
    weight[3:] = -10.0  # extra classes never win
    nodes = [helper.make_node("Conv", ["images", "w"], ["logits"])]  # B, C, H, W
    inits = [numpy_helper.from_array(weight, "w")]
    slow = _slow_chain(nodes, inits, slow_layers, height, width)
    if slow:
        nodes.append(helper.make_node("Add", ["logits", slow], ["logits2"]))
    logits = "logits2" if slow else "logits"
    nodes += [helper.make_node("ArgMax", [logits], ["argmax"], axis=1, keepdims=0),  # B, H, W int64
              helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8)]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", height, width])]
    if confidence:
        nodes += [helper.make_node("Softmax", [logits], ["probs"], axis=1),
                  helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0)]  # B, H, W
        outputs.append(helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["B", height, width]))
    graph = helper.make_graph(
        nodes, "tiny_seg", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, height, width])],
        outputs, inits)
    return _save(graph, metadata, path)


def detection_model(path: Path, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: list[str], height: int = 32, width: int = 64, slow_layers: int = 0) -> Path:
    """Writes a detector that always outputs ``boxes`` (K, 4) xyxy network pixels, ``scores`` (K,), ``labels``."""
    metadata = ModelMetadata(task=TASK_DETECTION, model_name="tiny_det", class_names=list(class_names),
                             palette=[[255, 0, 0]] * len(class_names), input_height=height, input_width=width,
                             max_detections=len(scores))
    inits = [numpy_helper.from_array(np.asarray(boxes, np.float32)[None], "boxes_c"),  # 1, K, 4
             numpy_helper.from_array(np.asarray(scores, np.float32)[None], "scores_c"),  # 1, K
             numpy_helper.from_array(np.asarray(labels, np.int64)[None], "labels_c")]
    # The outputs must depend on the input (else ONNX Runtime folds the graph and ignores it): + 0 * mean(images).
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero_c"], ["zero_in"])]
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_c"))
    slow = _slow_chain(nodes, inits, slow_layers, height, width)
    zero = "zero_in"
    if slow:
        nodes.append(helper.make_node("Add", ["zero_in", slow], ["zero_all"]))
        zero = "zero_all"
    nodes += [helper.make_node("Add", ["boxes_c", zero], ["boxes"]),
              helper.make_node("Add", ["scores_c", zero], ["scores"]),
              helper.make_node("Identity", ["labels_c"], ["labels"])]
    k = len(scores)
    graph = helper.make_graph(
        nodes, "tiny_det", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, k]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, k])],
        inits)
    return _save(graph, metadata, path)
