"""A tiny multi-task ONNX model (segmentation + detection from one graph, dynamic batch), built with onnx.helper.

- Segmentation (``labels``, ``confidence``): the dominant colour channel of each pixel, as
  ``tiny_onnx.segmentation_model`` (classes ``red``, ``green``, ``blue``).
- Detection (``det_boxes``, ``det_scores``, ``det_labels``): three fixed boxes in network pixels, one per
  detection class (``red_thing``, ``green_thing``, ``blue_thing``); box k's score is the mean of colour channel k
  over the image, in [0, 1]. So each frame's detections say which colour it is: a batch whose outputs got mixed
  up between cameras shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tiny_onnx import _save, _slow_chain
from vlt_perception.metadata import TASK_MULTITASK, ModelMetadata

SEG_CLASSES = ["red", "green", "blue"]
DET_CLASSES = ["red_thing", "green_thing", "blue_thing"]
# x1, y1, x2, y2 in network pixels, one per detection class (for a network input of 16x32).
DET_BOXES = np.array([[2, 2, 10, 8], [12, 4, 20, 12], [22, 6, 30, 14]], dtype=np.float32)


def multitask_model(path: Path, height: int = 16, width: int = 32, slow_layers: int = 0) -> Path:
    metadata = ModelMetadata(task=TASK_MULTITASK, model_name="tiny_multitask", class_names=list(SEG_CLASSES),
                             palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], mean=[0.5, 0.5, 0.5],
                             std=[0.5, 0.5, 0.5], input_height=height, input_width=width,
                             max_detections=len(DET_CLASSES), detection_class_names=list(DET_CLASSES))
    boxes = DET_BOXES * np.array([width / 32, height / 16] * 2, dtype=np.float32)
    inits = [numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w"),
             numpy_helper.from_array(boxes[None], "boxes_c"),  # 1, 3, 4
             numpy_helper.from_array(np.arange(3, dtype=np.int64)[None], "labels_c"),  # 1, 3
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["logits"])]  # B, 3, H, W
    slow = _slow_chain(nodes, inits, slow_layers, height, width)
    if slow:
        nodes.append(helper.make_node("Add", ["logits", slow], ["logits_slow"]))
    logits = "logits_slow" if slow else "logits"
    nodes += [
        helper.make_node("ArgMax", [logits], ["argmax"], axis=1, keepdims=0),  # B, H, W int64
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
        helper.make_node("Softmax", [logits], ["probs"], axis=1),
        helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0),  # B, H, W
        # Normalised x = (v / 255 - 0.5) / 0.5, so (x + 1) / 2 = v / 255: the channel means in [0, 1].
        helper.make_node("ReduceMean", ["images"], ["channel_mean"], axes=[2, 3], keepdims=0),  # B, 3
        helper.make_node("Add", ["channel_mean", "one"], ["mean_plus"]),
        helper.make_node("Mul", ["mean_plus", "half"], ["det_scores"]),  # B, 3
        helper.make_node("Mul", ["det_scores", "zero"], ["zeros"]),  # B, 3: the batch axis for the constants
        helper.make_node("Unsqueeze", ["zeros", "last_axis"], ["zeros3"]),  # B, 3, 1
        helper.make_node("Add", ["boxes_c", "zeros3"], ["det_boxes"]),  # B, 3, 4
        helper.make_node("Cast", ["zeros"], ["zeros_int"], to=TensorProto.INT64),
        helper.make_node("Add", ["labels_c", "zeros_int"], ["det_labels"]),  # B, 3
    ]
    graph = helper.make_graph(
        nodes, "tiny_multitask",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, height, width])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", height, width]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["B", height, width]),
         helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["B", 3, 4]),
         helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["B", 3]),
         helper.make_tensor_value_info("det_labels", TensorProto.INT64, ["B", 3])],
        inits)
    return _save(graph, metadata, path)
