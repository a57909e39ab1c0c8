"""The detection task: the trainer's hooks for detection data and evaluation."""

from __future__ import annotations

from vlt_perception.metadata import TASK_DETECTION
from vlt_training.data.detection import build_train_dataset, has_annotations
from vlt_training.evaluation.detection import evaluate_records
from vlt_training.tasks.registry import TaskHooks, register_task


DETECTION = register_task(TaskHooks(
    name="detection", metadata_task=TASK_DETECTION, primary_metric="mAP", record_filter=has_annotations,
    build_train_dataset=build_train_dataset, evaluate=evaluate_records))
