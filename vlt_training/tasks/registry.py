"""Task hooks: what differs between segmentation and detection training is a small registry, not an if-chain.

A task registers a :class:`TaskHooks` under its config name (``task: segmentation`` / ``task: detection``). The
trainer and the evaluate CLI only call these hooks:

- ``build_train_dataset(records, cfg, pixel_mean, pixel_std) -> torch Dataset``. Items are requested as
  ``(index, sample_seed)`` pairs (see :class:`vlt_training.data.sampler.StepSampler`); an item is
  ``(image (3, H, W) float32 normalised, target dict)`` with the target of the model contract
  (segmentation ``{"sem_seg": (H, W) long}``, detection ``{"boxes": (N, 4) float, "labels": (N,) long}``).
  Augmentation randomness must come from ``np.random.default_rng(sample_seed)`` so training is exactly
  reproducible and resumable regardless of worker count.
- ``collate(items) -> (images (B, 3, H, W), targets list)``.
- ``evaluate(model, records, cfg, device, amp) -> {"overall": metrics, "conditions": {condition: metrics},
  "num_images": int}`` for the records of ONE dataset; ``metrics[primary_metric]`` is what retention uses.
- ``record_filter(record) -> bool`` keeps records the task can use (e.g. with a label map / with boxes).
- ``load_records(cfg) -> list`` (optional) replaces reading ``data.train`` datasets, for tasks whose training data
  is not a dataset on disk (the pretraining corpus is rendered on the fly).

Tasks listed in ``_TASK_MODULES`` are imported on first use, so their modules register themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_TASKS: dict[str, "TaskHooks"] = {}
# Each task module registers itself on import and imports this module, so this module names them by string and
# imports one on first use: a training run loads only its own task (pretraining and multi-task pull in more
# of the tree). Every module listed here is in vlt_training.tasks, so the lazy import stays inside the layer.
_TASK_MODULES = {
    "segmentation": "vlt_training.tasks.segmentation",
    "detection": "vlt_training.tasks.detection",
    "multitask": "vlt_training.tasks.multitask",
    "clip_pretrain": "vlt_training.tasks.pretraining",
    "vision_pretrain": "vlt_training.tasks.pretraining",
}


def collate_batch(items: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack equally sized images (B, 3, H, W); targets stay a list of per-image dicts."""
    images = torch.stack([image for image, _ in items])
    return images, [target for _, target in items]


@dataclass(frozen=True)
class TaskHooks:
    name: str
    metadata_task: str  # ModelMetadata.task written into checkpoints ("semantic_segmentation" | "detection" ...)
    build_train_dataset: Callable[..., Any]
    evaluate: Callable[..., dict]
    primary_metric: str
    collate: Callable[[list], tuple[torch.Tensor, list[dict]]] = collate_batch
    record_filter: Callable[[dict], bool] | None = None
    load_records: Callable[[Any], list] | None = None


def register_task(hooks: TaskHooks) -> TaskHooks:
    """Register (or replace) the hooks of one task."""
    _TASKS[hooks.name] = hooks
    return hooks


def get_task(name: str) -> TaskHooks:
    if name not in _TASKS and name in _TASK_MODULES:
        try:
            importlib.import_module(_TASK_MODULES[name])
        except ModuleNotFoundError as exc:
            raise KeyError(f"task {name!r}: its hooks module {_TASK_MODULES[name]} is not available ({exc})") from exc
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {sorted(set(_TASKS) | set(_TASK_MODULES))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    return sorted(set(_TASKS) | set(_TASK_MODULES))
