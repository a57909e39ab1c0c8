"""ModelMetadata for a freshly built model (no checkpoint): benchmarks and smoke tests export random weights."""

from __future__ import annotations

from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK, TASK_SEGMENTATION, ModelMetadata


def task_of(model) -> str:
    """The model's task: its ``task`` attribute if any, else from the registry name (``vltdet_*`` = detection;
    the multi-task VLTMT says ``segmentation_detection``)."""
    task = getattr(model, "task", None)
    if task in ("multitask", TASK_MULTITASK):
        return TASK_MULTITASK
    if task in ("detection", TASK_DETECTION):
        return TASK_DETECTION
    if task in ("segmentation", TASK_SEGMENTATION):
        return TASK_SEGMENTATION
    return TASK_DETECTION if getattr(model, "model_name", "").startswith("vltdet") else TASK_SEGMENTATION


def metadata_for_model(model, height: int, width: int) -> ModelMetadata:
    names = list(getattr(model, "class_names", CITYSCAPES_CLASSES))
    palette = [list(c) for c in CITYSCAPES_PALETTE]
    palette += [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(len(palette), len(names))]
    task = task_of(model)
    det_names = list(getattr(model, "detection_class_names", None) or CITYSCAPES_THING_CLASSES) \
        if task == TASK_MULTITASK else []
    return ModelMetadata(task=task, model_name=getattr(model, "model_name", ""), class_names=names,
                         detection_class_names=det_names,
                         palette=palette, mean=[float(v) for v in model.pixel_mean],
                         std=[float(v) for v in model.pixel_std], input_height=height, input_width=width,
                         max_detections=int(getattr(model, "max_detections", 100)))
