"""Evaluate a model on every ``eval.datasets`` entry through its task hooks; add retention; write reports."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from torch import nn

from vlt_perception.atomic import atomic_write_text
from vlt_perception.metrics.segmentation import retention
from vlt_training.config import Config
from vlt_training.data.records import load_records
from vlt_training.tasks.registry import get_task


def evaluate(model: nn.Module, cfg: Config, device="cpu", amp: str = "none", mode: str | None = None) -> dict:
    """Run the task's ``evaluate`` hook on each eval dataset and compute retention against the source.

    Report: ``{"task", "mode", "primary_metric", "source", "datasets": {label: result},
    "retention": {label: {"overall": r, "conditions": {condition: r}}}}``; retention = target / source of the
    primary metric (mIoU or mAP).
    """
    hooks = get_task(cfg.task)
    if not cfg.eval.datasets:
        raise ValueError("no eval.datasets configured")
    if mode is not None:
        cfg.eval.mode = mode
    labels = [ds.display_name for ds in cfg.eval.datasets]
    if len(set(labels)) != len(labels):
        raise ValueError(f"eval dataset labels {labels} are not unique; give datasets distinct 'label's")
    source = cfg.eval.source or labels[0]
    if source not in labels:  # checked before hours of inference, not after
        raise ValueError(f"eval.source {source!r} is not one of the eval dataset labels {labels}")
    datasets: dict[str, Any] = {}
    for ds in cfg.eval.datasets:
        records = load_records(ds, cfg.data, hooks.record_filter)
        ds_cfg = cfg if ds.resize is None else dataclasses.replace(
            cfg, eval=dataclasses.replace(cfg.eval, resize=list(ds.resize)))  # this dataset's own test scale
        datasets[ds.display_name] = hooks.evaluate(model, records, ds_cfg, device, amp)
    metric = hooks.primary_metric
    source_score = datasets[source]["overall"][metric]
    ret = {}
    for label, result in datasets.items():
        if label == source:
            continue
        ret[label] = {
            "overall": retention(result["overall"][metric], source_score),
            "conditions": {c: retention(m[metric], source_score) for c, m in result["conditions"].items()},
        }
    return {"task": cfg.task, "mode": cfg.eval.mode, "primary_metric": metric, "source": source,
            "datasets": datasets, "retention": ret}


def _clean(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Write ``report`` as JSON atomically (temporary file + rename)."""
    atomic_write_text(path, json.dumps(_clean(report), indent=2, sort_keys=False))


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:6.2f}"


def format_table(report: dict) -> str:
    """Summary rows per dataset and condition, then per-class scores when the task reports them."""
    metric = report["primary_metric"]
    # Secondary summary columns, when the task reports them.
    extra = [k for k in ("pixel_accuracy", "AP50") if k in next(iter(report["datasets"].values()))["overall"]]
    lines = [f"{'dataset':<28} {'images':>6} {metric:>7}" + "".join(f" {k[:9]:>9}" for k in extra)
             + f" {'rPD':>9}"]  # rPD = 100 x target / source score (the report's "retention" fraction x 100)
    columns: list[tuple[str, dict]] = []

    def row(name: str, m: dict, ret: str) -> str:
        return (f"{name:<28} {m['num_images']:>6} {_fmt(m[metric]):>7}"
                + "".join(f" {_fmt(m.get(k)):>9}" for k in extra) + f" {ret:>9}")

    for label, result in report["datasets"].items():
        ret = report["retention"].get(label, {})
        lines.append(row(label, result["overall"], _fmt(ret.get("overall")) if ret else "(source)"))
        columns.append((label, result["overall"]))
        conds = result["conditions"]
        if len(conds) > 1 or (conds and next(iter(conds)) != "all"):
            for cond, m in conds.items():
                lines.append(row(f"  {cond}", m, _fmt(ret.get("conditions", {}).get(cond)) if ret else ""))
                columns.append((f"{label}/{cond}", m))
    # Segmentation reports per_class_iou, detection per_class_AP.
    key, title = ("per_class_AP", "AP per class") if any("per_class_AP" in m for _, m in columns) \
        else ("per_class_iou", "IoU per class")
    per_class = [c for c in columns if key in c[1]]
    if per_class:
        names = list(per_class[0][1][key])
        lines.append("")
        lines.append(f"{title:<16}" + "".join(f" {lab[-12:]:>12}" for lab, _ in per_class))
        for name in names:
            lines.append(f"{name:<16}" + "".join(f" {_fmt(m[key][name]):>12}" for _, m in per_class))
    return "\n".join(lines)
