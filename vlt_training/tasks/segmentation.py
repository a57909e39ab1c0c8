"""The segmentation task: the trainer's hooks for segmentation data and evaluation."""

from __future__ import annotations

from vlt_perception.metadata import TASK_SEGMENTATION
from vlt_training.data.segmentation import build_train_dataset, has_sem_seg
from vlt_training.evaluation.segmentation import evaluate_records
from vlt_training.tasks.registry import TaskHooks, register_task


SEGMENTATION = register_task(TaskHooks(
    name="segmentation", metadata_task=TASK_SEGMENTATION, primary_metric="mIoU", record_filter=has_sem_seg,
    build_train_dataset=build_train_dataset, evaluate=evaluate_records))
