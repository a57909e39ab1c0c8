"""CLI smoke test of the README's main job: a miniature demo through every stage, ROS replay included."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.ros_graph import process_env

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.cli
@pytest.mark.ros
def test_miniature_demo_runs_every_stage(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "vlt_training.cli.demo", "--quick", "--workdir", str(work)],
                          cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    summary = json.loads((work / "report" / "summary.json").read_text())
    rows = {row["condition"]: row for row in summary["rows"]}
    assert set(rows) == {"source", "fog", "night", "rain", "snow", "real_style"}
    for name, row in rows.items():
        # Three evaluators score the same frames: offline bag_eval, the ROS graph replay and the trainer's.
        assert 0.0 <= row["mIoU"] <= 1.0, name
        assert abs(row["online_mIoU"] - row["mIoU"]) <= 0.005, name
        assert abs(row["train_eval_mIoU"] - row["mIoU"]) <= 0.005, name
        assert row["dropped"] == 0, name
        assert not math.isnan(row["end_to_end_ms_p50"]), name
    assert rows["source"]["retention"] == pytest.approx(1.0)

    report = work / "report"
    assert (work / "model.onnx").is_file()
    figures = {p.name for p in (report / "offline" / "figures").iterdir()}
    assert {"conditions.png", "confusion.png", "latency.png"} <= figures
    assert "source" in (report / "README.md").read_text()
    assert "condition" in proc.stdout and "report:" in proc.stdout

    # The multi-task model starts from the demo's VLTSeg (model.init_from), frozen, and gives both tasks per condition
    mt_config = (work / "mt_run" / "config.yaml").read_text()
    assert f"init_from: {work / 'run'}" in mt_config and "task: multitask" in mt_config
    assert "model.init_from:" in (work / "logs" / "mt_train.log").read_text()
    conditions = summary["multitask"]["datasets"]["acdc"]["conditions"]
    assert {"fog", "night", "rain", "snow", "real_style"} <= set(conditions)
    for name, entry in conditions.items():
        assert 0.0 <= entry["mIoU"] <= 1.0 and 0.0 <= entry["AP50"] <= 1.0, name
    assert (work / "multitask.onnx").is_file()
    assert "AP50 per class" in (report / "README.md").read_text()  # the detection table is in the report too
    assert "VLTMT" in proc.stdout and "AP50" in proc.stdout


def test_multitask_table_gives_both_tasks_per_condition():
    from vlt_training.cli.demo import format_multitask

    report = {"datasets": {"acdc": {"conditions": {
        "clear": {"mIoU": 0.5, "mAP": 0.2, "AP50": 0.4},
        "fog": {"mIoU": 0.25, "mAP": float("nan"), "AP50": 0.1},
    }}}}
    lines = format_multitask(report).splitlines()
    assert lines[0].split() == ["condition", "mIoU", "AP50", "mAP"]
    assert lines[1].split() == ["source", "50.0", "40.0", "20.0"]
    assert lines[2].split() == ["fog", "25.0", "10.0", "n/a"]

def test_detection_table_shows_per_class_ap():
    from vlt_training.cli.demo import format_detection

    report = {"datasets": {"acdc": {"conditions": {
        "clear": {"mAP": 0.5, "AP50": 0.8, "per_class_AP": {"car": 0.61, "person": 0.4, "train": None}},
        "fog": {"mAP": 0.25, "AP50": 0.5, "per_class_AP": {"car": 0.3, "person": None, "train": None}},
    }}}}
    lines = format_detection(report).splitlines()
    assert lines[0].split() == ["condition", "mAP", "AP50", "car", "person"]  # no column for a class never seen
    assert lines[1].split() == ["source", "50.0", "80.0", "61.0", "40.0"]
    assert lines[2].split() == ["fog", "25.0", "50.0", "30.0", "-"]
    assert len(lines) == 3  # a report without per-class AP50 gets no AP50 block


def test_detection_table_shows_per_class_ap50_where_the_report_has_it():
    from vlt_training.cli.demo import format_detection

    report = {"datasets": {"acdc": {"conditions": {
        "clear": {"mAP": 0.5, "AP50": 0.8, "per_class_AP": {"car": 0.61, "person": 0.4},
                  "per_class_AP50": {"car": 0.9, "person": 0.7}},
        "fog": {"mAP": 0.25, "AP50": 0.5, "per_class_AP": {"car": 0.3, "person": None},
                "per_class_AP50": {"car": 0.45, "person": None}},
    }}}}
    lines = format_detection(report).splitlines()
    assert lines[3].split() == ["AP50", "per", "class", "car", "person"]
    assert lines[4].split() == ["source", "90.0", "70.0"]
    assert lines[5].split() == ["fog", "45.0", "-"]


def test_detection_iterations_scale_with_iters_unless_given():
    from vlt_training.cli.demo import DEFAULT, build_parser, size_from_args

    def size(*argv):
        return size_from_args(build_parser().parse_args(list(argv)))

    assert (size().iters, size().det_iters) == (DEFAULT.iters, DEFAULT.det_iters)
    assert size("--iters", str(2 * DEFAULT.iters)).det_iters == 2 * DEFAULT.det_iters
    assert size("--iters", "3400", "--det-iters", "50").det_iters == 50
    assert size("--quick").det_iters == 10
    assert size().det_num_val == DEFAULT.det_num_val and size("--det-num-val", "5").det_num_val == 5
