"""Evaluation reports: ``report.json`` (atomic) and ``report.md`` with figures (matplotlib, Agg backend).

Tables: per condition and per bag, mIoU / mAP, rPD (``100 * target / source`` score against the reference bag) and,
where the model publishes a per-pixel confidence, ECE / AUROC / FPR95 (``vlt_perception.metrics.calibration``).
Figures: mIoU / mAP per condition (with the reference bag), the row-normalised confusion matrix over all target
frames, a reliability diagram per condition, sample overlays (image | ground truth | prediction) per condition,
and a latency histogram.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from vlt_perception.atomic import atomic_write_bytes  # noqa: F401 - re-exported
from vlt_perception.bag.matching import REFERENCE, EvaluationAccumulator
from vlt_perception.labels import CITYSCAPES_PALETTE, IGNORE_INDEX, colorize


def _clean(value):
    """NaN / inf -> None and numpy scalars -> Python, so that report.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(acc: EvaluationAccumulator, out_dir: str | Path, extra: dict | None = None,
                 palette=CITYSCAPES_PALETTE, figures: bool = True) -> dict:
    """Write report.json, report.md and figures/ under ``out_dir``; returns the report dict."""
    out = Path(out_dir)
    report = _clean({**(extra or {}), **acc.summary()})
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2, sort_keys=True).encode())
    pictures = _figures(acc, report, out / "figures", palette) if figures else {}
    atomic_write_bytes(out / "report.md", markdown(report, pictures).encode())
    return report


# ------------------------------------------------------------------------------------------------- markdown
def _fmt(value, scale: float = 100.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


MAX_TEXT = 200  # characters of one bag-supplied string shown in report.md (report.json keeps it whole)
# Markdown punctuation that can matter mid-line (the strings never start a line: "-", "+", "." stay as they are)
_MD_SPECIAL = set("\\`*_{}[]#!|~")
_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;"}


def md_text(value) -> str:
    """A string from a bag, a model or the command line as inert Markdown text: one line (control characters and
    newlines become spaces, so nothing can start a heading or end a table row), at most MAX_TEXT characters, every
    Markdown punctuation character backslash-escaped and HTML's ``<>&"`` as entities (no links, images, raw
    HTML or table cells can be injected)."""
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in str(value))
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 1] + "…"
    return "".join(_HTML.get(c) or ("\\" + c if c in _MD_SPECIAL else c) for c in text)


def plot_text(value) -> str:
    """A string for a matplotlib label: ``$`` escaped, so that it is never parsed as mathtext (a crafted
    condition name would otherwise fail the whole figure), newlines kept out, cut at MAX_TEXT characters."""
    text = " ".join(str(value).split())
    return (text[:MAX_TEXT - 1] + "…" if len(text) > MAX_TEXT else text).replace("$", r"\$")


def markdown(report: dict, pictures: dict[str, str] | None = None) -> str:
    """The Markdown report; ``pictures`` maps figure keys to paths relative to the report."""
    pictures = pictures or {}
    lines = ["# Rosbag evaluation under domain shift", ""]
    model = report.get("model") or {}
    if model:
        lines += [f"Model: {md_text(model.get('path', ''))} ({md_text(model.get('task', ''))}), engine: "
                  f"{md_text(model.get('engine', ''))} {md_text(model.get('precision', ''))} on "
                  f"{md_text(model.get('device', ''))}"
                  + (", test-time augmentation (multi-scale 0.5-1.75 + flip)" if model.get("tta") else ""), ""]
    if report.get("mode"):
        lines += [f"Mode: {md_text(report['mode'])}", ""]
    if report.get("complete") is False:  # an online evaluation stopped before the bag finished
        lines += ["**Incomplete**: the evaluation stopped before the bag finished "
                  f"({md_text(report.get('finished_by'))}); "
                  "the scores cover only the frames seen until then.", ""]
    ref = report.get("reference")
    lines += [f"Reference (source) bag: {md_text(ref)}" if ref else "No reference bag: rPD not computed.", ""]
    lines += ["## Per condition", "", "rPD = 100 x target score / source score. Calibration of the per-pixel "
              "confidence (%): ECE (15 bins), AUROC correct vs misclassified pixels, FPR at 95% TPR.", "",
              "| condition | frames | mIoU | mAP | rPD mIoU | rPD mAP | ECE | AUROC | FPR95 |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = [(md_text(name), g) for name, g in report.get("conditions", {}).items()]  # names come from the bags
    for name, g in rows + [("**all targets**", report.get("overall", {}))]:
        lines.append(_row(name, g))
    lines += ["", "## Per bag", "", "| bag | frames | mIoU | mAP | rPD mIoU | ECE | latency p50 / p90 ms | issues |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, g in report.get("bags", {}).items():
        lat = g.get("latency_ms") or {}
        issues = {**(g.get("counts") or {})}
        issue_text = ", ".join(f"{md_text(k)}: {md_text(v)}" for k, v in sorted(issues.items())
                               if v and k != "matched") or "none"
        if g.get("error"):  # may quote topic names and text from the bag
            issue_text = f"**error**: {md_text(g['error'])}; " + issue_text
        lines.append(f"| {md_text(name)}{' (reference)' if name == ref else ''} | {g.get('frames', 0)} | "
                     f"{_fmt((g.get('segmentation') or {}).get('mIoU'))} | "
                     f"{_fmt((g.get('detection') or {}).get('mAP'))} | "
                     f"{_fmt((g.get('retention') or {}).get('mIoU'))} | "
                     f"{_fmt((g.get('calibration') or {}).get('ece'))} | "
                     f"{_fmt(lat.get('p50'), 1)} / {_fmt(lat.get('p90'), 1)} | {issue_text} |")
    per_class = ((report.get("overall") or {}).get("segmentation") or {}).get("per_class_iou")
    if per_class:
        lines += ["", "## Per-class IoU (all target frames)", "", "| class | IoU |", "| --- | ---: |"]
        lines += [f"| {md_text(k)} | {_fmt(v)} |" for k, v in per_class.items()]
    for key, title in (("conditions", "mIoU per condition"), ("confusion", "Confusion matrix (row-normalised)"),
                       ("reliability", "Reliability diagram"), ("latency", "Latency")):
        if key in pictures:
            lines += ["", f"## {title}", "", f"![{title}]({pictures[key]})"]
    samples = [(k, v) for k, v in pictures.items() if k.startswith("sample:")]
    if samples:
        lines += ["", "## Samples (image | ground truth | prediction | errors)", ""]
        lines += [f"![{md_text(k[7:])}]({v})" for k, v in samples]  # v: figures/<_safe name>.png
    lines += ["", "Issue counts are frames or messages that were skipped or left unmatched; see report.json for "
              "examples.", ""]
    return "\n".join(lines)


def _row(name: str, g: dict) -> str:
    # report.json keeps rPD as its fraction under "retention" (the key older reports and tools read): rPD = 100x it
    ret, cal = g.get("retention") or {}, g.get("calibration") or {}
    return (f"| {name} | {g.get('frames', 0)} | {_fmt((g.get('segmentation') or {}).get('mIoU'))} | "
            f"{_fmt((g.get('detection') or {}).get('mAP'))} | {_fmt(ret.get('mIoU'))} | {_fmt(ret.get('mAP'))} | "
            f"{_fmt(cal.get('ece'))} | {_fmt(cal.get('auroc'))} | {_fmt(cal.get('fpr95'))} |")


# -------------------------------------------------------------------------------------------------- figures
def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("report figures need matplotlib: pip install -r requirements/train.txt "
                          "(or pass figures=False / --no-figures)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _figures(acc: EvaluationAccumulator, report: dict, folder: Path, palette) -> dict[str, str]:
    plt = _pyplot()
    pictures: dict[str, str] = {}
    try:
        if _condition_chart(plt, report, folder / "conditions.png"):
            pictures["conditions"] = "figures/conditions.png"
        if acc.overall.confusion is not None and acc.overall.confusion.matrix.sum():
            _confusion(plt, acc.overall.confusion.matrix, acc.class_names, folder / "confusion.png")
            pictures["confusion"] = "figures/confusion.png"
        if reliability_diagram(plt, report, folder / "reliability.png"):
            pictures["reliability"] = "figures/reliability.png"
        latencies = [v for s in acc.bags.values() for v in s.latencies_ms]
        if latencies:
            _latency(plt, acc, folder / "latency.png")
            pictures["latency"] = "figures/latency.png"
        for condition, matches in acc.samples.items():
            for i, match in enumerate(matches):
                if "labels" in match.gt and "labels" in match.pred:
                    name = f"sample_{_safe(condition)}_{i}.png"
                    _sample(plt, match, palette, folder / name, f"{plot_text(condition)}, frame {i}")
                    pictures[f"sample:{condition}, frame {i}"] = f"figures/{name}"
    finally:
        plt.close("all")
    return pictures


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _condition_chart(plt, report: dict, path: Path) -> bool:
    names, values = [], []
    ref = report.get("reference")
    if ref and (report["bags"].get(ref, {}).get("segmentation") or {}).get("mIoU") is not None:
        names.append(f"{REFERENCE}\n({plot_text(ref)})")
        values.append(report["bags"][ref]["segmentation"]["mIoU"])
    for name, g in report.get("conditions", {}).items():
        miou = (g.get("segmentation") or {}).get("mIoU")
        metric = miou if miou is not None else (g.get("detection") or {}).get("mAP")
        if metric is not None:
            names.append(plot_text(name))
            values.append(metric)
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.2))
    bars = ax.bar(range(len(names)), [100 * v for v in values], color="#4c72b0")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("mIoU (mAP for detection) %")
    ax.set_ylim(0, 100)
    for bar, v in zip(bars, values):
        ax.annotate(f"{100 * v:.1f}", (bar.get_x() + bar.get_width() / 2, 100 * v), ha="center", va="bottom")
    _save(fig, path)
    return True


def reliability_diagram(plt, report: dict, path: Path) -> bool:
    """Accuracy against mean confidence per calibration bin, one line per condition (and the reference bag);
    the diagonal is perfect calibration. False when no group has calibration statistics."""
    groups = []
    ref = report.get("reference")
    if ref and (report.get("bags", {}).get(ref) or {}).get("calibration"):
        groups.append((f"{REFERENCE} ({plot_text(ref)})", report["bags"][ref]["calibration"]))
    groups += [(plot_text(name), g["calibration"]) for name, g in report.get("conditions", {}).items()
               if g.get("calibration")]
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, cal in groups:
        rel = cal["reliability"]
        points = [(c, a) for c, a in zip(rel["confidence"], rel["accuracy"]) if c is not None and a is not None]
        if points:
            ece = cal.get("ece")
            label = f"{name} (ECE {100 * ece:.1f})" if ece is not None else name
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (bin mean)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _confusion(plt, matrix: np.ndarray, class_names, path: Path) -> None:
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    size = max(4, 0.35 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    class_names = [plot_text(name) for name in class_names]
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    _save(fig, path)


def _latency(plt, acc: EvaluationAccumulator, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, stats in acc.bags.items():
        if stats.latencies_ms:
            ax.hist(stats.latencies_ms, bins=20, alpha=0.6, label=plot_text(name))
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=7)
    _save(fig, path)


SAMPLE_WIDTH = 480  # pixels per panel: full-resolution panels cost seconds in matplotlib and say no more


def _small(array: np.ndarray) -> np.ndarray:
    if array.shape[1] <= SAMPLE_WIDTH:
        return array
    import cv2

    height = max(1, round(array.shape[0] * SAMPLE_WIDTH / array.shape[1]))
    return cv2.resize(array, (SAMPLE_WIDTH, height), interpolation=cv2.INTER_NEAREST)


def _sample(plt, match, palette, path: Path, heading: str) -> None:
    gt, pred = match.gt["labels"], match.pred["labels"]
    panels = [] if match.image is None else [("image", _small(match.image))]
    panels += [("ground truth", colorize(_small(gt), palette)), ("prediction", colorize(_small(pred), palette))]
    if pred.shape == gt.shape:  # where the prediction is wrong (white), ignored pixels grey
        errors = np.where(gt == IGNORE_INDEX, 128, np.where(pred != gt, 255, 0)).astype(np.uint8)
        panels.append(("errors", _small(errors)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 2.2))
    for ax, (title, panel) in zip(np.atleast_1d(axes), panels):
        ax.imshow(panel, interpolation="nearest", cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(heading, fontsize=8)
    _save(fig, path)
