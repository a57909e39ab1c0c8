"""Self-describing model artifacts.

Every checkpoint and every exported ONNX / TensorRT model carries a :class:`ModelMetadata`, so that a deployment
needs nothing but the model file: class names, palette, normalisation and input size travel with the weights.

In ONNX the metadata is stored in ``metadata_props`` under the key ``vlt_metadata`` as JSON, plus one
human-readable key per field (``class_names``, ``mean`` ...) for tools such as Netron.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from vlt_perception import __version__
from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

ONNX_METADATA_KEY = "vlt_metadata"
TASK_SEGMENTATION = "semantic_segmentation"
TASK_DETECTION = "detection"
TASK_PRETRAINING = "pretraining"  # checkpoints of vlt_training.pretrain: a tower, not a deployable model
# One graph, one backbone pass, both tasks: the segmentation outputs plus the detection outputs under det_* names.
TASK_MULTITASK = "segmentation_detection"
TASKS = (TASK_SEGMENTATION, TASK_DETECTION, TASK_PRETRAINING, TASK_MULTITASK)
# Output names of the multi-task graph's detection half (the segmentation half keeps ``labels`` / ``confidence``).
MULTITASK_DET_OUTPUTS = ("det_boxes", "det_scores", "det_labels", "det_masks")

# open_clip's normalisation for OpenAI / EVA CLIP towers, on RGB in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MetadataError(ValueError):
    """Raised when model metadata is missing or inconsistent."""


@dataclass
class ModelMetadata:
    """What a deployed model needs to know about itself.

    ``input_height`` / ``input_width`` are the network input size; images are resized to it and results mapped
    back to the camera resolution. ``mean`` / ``std`` apply to RGB scaled to [0, 1].
    Graph contract (ONNX / TensorRT): input ``images`` float32 (B, 3, H, W) normalised RGB; segmentation outputs
    ``labels`` uint8 (B, H, W) and optionally ``confidence`` float32 (B, H, W); detection outputs ``boxes``
    float32 (B, K, 4) as x1, y1, x2, y2 in network-input pixels, ``scores`` float32 (B, K) (0 for padding) and
    ``labels`` int64 (B, K) indexing ``class_names``; Mask R-CNN graphs add ``masks`` float32 (B, K, M, M), each
    slot's mask probabilities in its box's frame (the node and bag tools use boxes only).

    Multi-task graphs (``task`` = ``TASK_MULTITASK``, one backbone pass for both tasks) output ``labels`` uint8
    (B, H, W) and ``confidence`` float32 (B, H, W) exactly as a segmentation graph, plus ``det_boxes`` float32
    (B, K, 4), ``det_scores`` float32 (B, K), ``det_labels`` int64 (B, K) and optionally ``det_masks`` float32
    (B, K, M, M) with the detection contract's semantics. There ``class_names`` / ``palette`` describe the
    segmentation classes and ``det_labels`` index ``detection_class_names`` (required non-empty; empty for every
    other task and then left out of the serialised form, so models written before the field existed load
    unchanged and single-task metadata reads the same as before).
    """

    task: str = TASK_SEGMENTATION
    model_name: str = ""
    class_names: list[str] = field(default_factory=lambda: list(CITYSCAPES_CLASSES))
    palette: list[list[int]] = field(default_factory=lambda: [list(c) for c in CITYSCAPES_PALETTE])
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    input_height: int = 512
    input_width: int = 1024
    ignore_index: int = IGNORE_INDEX
    max_detections: int = 100
    # Multi-task graphs only: the detection head's classes (``class_names`` are the segmentation classes there).
    detection_class_names: list[str] = field(default_factory=list)
    package_version: str = __version__
    # Free-form provenance: training config name, step, datasets, precision of the export ...
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.task not in TASKS:
            raise MetadataError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if not self.class_names:
            raise MetadataError("class_names is empty")
        if len(self.class_names) >= 255 and self.task in (TASK_SEGMENTATION, TASK_MULTITASK):
            raise MetadataError("segmentation labels are uint8 with 255 = ignore: at most 254 classes")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise MetadataError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")
        if self.input_height <= 0 or self.input_width <= 0:
            raise MetadataError(f"bad input size {self.input_height}x{self.input_width}")
        if self.task in (TASK_SEGMENTATION, TASK_MULTITASK) and len(self.palette) < len(self.class_names):
            raise MetadataError("palette has fewer colours than classes")
        if self.task == TASK_MULTITASK and not self.detection_class_names:
            raise MetadataError(f"task {TASK_MULTITASK!r} needs detection_class_names (the detection head's classes)")
        if self.task != TASK_MULTITASK and self.detection_class_names:
            raise MetadataError(f"detection_class_names is only for task {TASK_MULTITASK!r}, not {self.task!r}")

    @property
    def is_multitask(self) -> bool:
        return self.task == TASK_MULTITASK

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not data["detection_class_names"]:
            # Single-task metadata serialises exactly as before the field existed (older readers reject unknown keys).
            del data["detection_class_names"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMetadata":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise MetadataError(f"unknown metadata fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"metadata is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def to_onnx_props(self) -> dict[str, str]:
        """Key/value strings for ``onnx.ModelProto.metadata_props``."""
        props = {ONNX_METADATA_KEY: self.to_json()}
        for key, value in self.to_dict().items():
            props[key] = value if isinstance(value, str) else json.dumps(value)
        return props

    @classmethod
    def from_onnx_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        if ONNX_METADATA_KEY not in props:
            raise MetadataError(f"{source}: no '{ONNX_METADATA_KEY}' metadata; was it exported by vlt_training?")
        return cls.from_json(props[ONNX_METADATA_KEY])
