"""Fixtures for the bag tests: tiny Cityscapes-layout data and a tiny ONNX model that segments by colour.

The data is built so that the right answer is known without running the code under test: every pixel of a
clear image has exactly the Cityscapes palette colour of its class, and the model assigns each pixel the class whose
palette colour is nearest, so clear frames score mIoU 1.0; fog (a blend towards grey) confuses dark classes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CITYSCAPES_TRAIN_ID_TO_LABEL_ID

HEIGHT, WIDTH, BLOCK = 16, 24, 4
FOG_GREY, FOG_ALPHA = 200, 0.4


def synthetic_frame(seed: int, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB image and (H, W) uint8 train IDs (255 = ignore) of blocks of random classes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(CITYSCAPES_CLASSES), (HEIGHT // BLOCK, WIDTH // BLOCK))
    labels = np.kron(blocks, np.ones((BLOCK, BLOCK), dtype=np.int64)).astype(np.uint8)  # H, W
    labels[0, :3] = 255  # a few void pixels
    palette = np.asarray(CITYSCAPES_PALETTE + ((0, 0, 0),) * (256 - len(CITYSCAPES_PALETTE)), dtype=np.float64)
    image = palette[labels]  # H, W, 3
    if condition == "fog":
        image = (1 - FOG_ALPHA) * image + FOG_ALPHA * FOG_GREY
    return image.round().astype(np.uint8), labels


def _label_ids(labels: np.ndarray) -> np.ndarray:
    """Train IDs -> Cityscapes labelIds (255 -> 0 'unlabeled')."""
    to_label_id = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in CITYSCAPES_TRAIN_ID_TO_LABEL_ID.items():
        to_label_id[train_id] = label_id
    return to_label_id[labels]


def _instance_ids(labels: np.ndarray) -> np.ndarray:
    """Cityscapes instanceIds (uint16): each block of a thing class is instance labelId * 1000 + block index."""
    label_ids = _label_ids(labels).astype(np.uint16)
    blocks = np.arange((HEIGHT // BLOCK) * (WIDTH // BLOCK), dtype=np.uint16).reshape(HEIGHT // BLOCK, -1)
    block_index = np.kron(blocks, np.ones((BLOCK, BLOCK), dtype=np.uint16))
    things = labels >= 11  # person ... bicycle (train IDs 11-18)
    return np.where(things & (labels != 255), label_ids * 1000 + block_index, label_ids).astype(np.uint16)


def write_acdc(root: Path, conditions: dict[str, int], split: str = "val") -> list[dict]:
    """Writes rgb_anon/gt PNGs in the ACDC layout (one sequence per condition); returns expected arrays."""
    out = []
    for condition, count in conditions.items():
        for i in range(count):
            stem = f"GOPR{i:04d}_frame_{i:06d}"
            image, labels = synthetic_frame(100 + len(out), condition)
            img_path = root / "rgb_anon" / condition / split / "GOPR0001" / f"{stem}_rgb_anon.png"
            gt_dir = root / "gt" / condition / split / "GOPR0001"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_path), image[..., ::-1])
            cv2.imwrite(str(gt_dir / f"{stem}_gt_labelIds.png"), _label_ids(labels))
            out.append({"condition": condition, "expected_image": image, "expected_labels": labels})
    return out


def write_cityscapes(root: Path, conditions: dict[str, int], split: str = "val") -> list[dict]:
    """Writes leftImg8bit/gtFine PNGs in the Cityscapes layout (one city per condition); returns records."""
    records = []
    for condition, count in conditions.items():
        for i in range(count):
            city = f"{condition}city"
            stem = f"{city}_{i:06d}_000019"
            image, labels = synthetic_frame(len(records), condition)
            img_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            gt_dir = root / "gtFine" / split / city
            img_path.parent.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_path), image[..., ::-1])
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), _label_ids(labels))
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_instanceIds.png"), _instance_ids(labels))
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelTrainIds.png"), labels)
            records.append({
                "file_name": str(img_path), "image_id": stem, "height": HEIGHT, "width": WIDTH,
                "dataset": "synthetic", "condition": condition,
                "sem_seg_file_name": str(gt_dir / f"{stem}_gtFine_labelTrainIds.png"), "sem_seg_format": "train_ids",
                "annotations": [{"bbox": [0.0, 0.0, 4.0, 4.0], "category_id": 2, "iscrowd": 0}],
                "expected_image": image, "expected_labels": labels,
            })
    return records


def read_png_rgb(record: dict) -> np.ndarray:
    return cv2.imread(record["file_name"], cv2.IMREAD_COLOR)[..., ::-1].copy()


def read_png_train_ids(record: dict) -> np.ndarray:
    return cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)


def palette_model(path: Path, height: int = HEIGHT, width: int = WIDTH, confidence: bool = True) -> Path:
    """ONNX: labels = argmax_k (2 p_k . x - |p_k|^2) = nearest palette colour, x = RGB / 255 (mean 0, std 1);
    ``confidence`` = the largest softmax probability of those scores (as exported models give it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vlt_perception.metadata import TASK_SEGMENTATION, ModelMetadata

    colours = np.asarray(CITYSCAPES_PALETTE, dtype=np.float32) / 255.0  # C, 3
    weight = (2 * colours)[:, :, None, None]  # C, 3, 1, 1
    bias = -(colours**2).sum(axis=1)  # C
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["scores"]),  # B, C, H, W
             helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),  # B, H, W int64
             helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8)]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["B", height, width])]
    if confidence:  # scores x 20: sharp enough that the confidences spread over the calibration bins
        nodes += [helper.make_node("Mul", ["scores", "sharpness"], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
                  helper.make_node("ReduceMax", ["probs"], ["confidence"], axes=[1], keepdims=0)]  # B, H, W
        outputs.append(helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["B", height, width]))
    graph = helper.make_graph(
        nodes, "palette_seg",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, height, width])], outputs,
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(np.asarray(20.0, np.float32), "sharpness")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    metadata = ModelMetadata(task=TASK_SEGMENTATION, model_name="palette_seg", mean=[0.0] * 3, std=[1.0] * 3,
                             input_height=height, input_width=width)
    for key, value in metadata.to_onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def box_model(path: Path, boxes, labels, scores, class_names, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """ONNX detection model whose outputs are constants (boxes in network pixels), whatever the image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vlt_perception.metadata import TASK_DETECTION, ModelMetadata

    consts = {"boxes": np.asarray(boxes, np.float32)[None], "scores": np.asarray(scores, np.float32)[None],
              "labels": np.asarray(labels, np.int64)[None]}  # 1, K, 4 / 1, K / 1, K
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, f"{name}_value"))
             for name, value in consts.items()]
    types = {"boxes": TensorProto.FLOAT, "scores": TensorProto.FLOAT, "labels": TensorProto.INT64}
    graph = helper.make_graph(
        nodes, "const_det",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(name, types[name], list(value.shape)) for name, value in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    metadata = ModelMetadata(task=TASK_DETECTION, model_name="const_det", class_names=list(class_names),
                             mean=[0.0] * 3, std=[1.0] * 3, input_height=height, input_width=width)
    for key, value in metadata.to_onnx_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
