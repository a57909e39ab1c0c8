"""What int8 costs in accuracy: mIoU of an int8 model against its fp32 graph, on every condition of a benchmark.

    python benchmarks/bench_int8_accuracy.py --fp32 model.onnx --int8 model.xml \
        --data data/synthetic_tiny [--out int8_accuracy.json]

Runs the fp32 ONNX on ONNX Runtime (CPU) and the int8 OpenVINO IR (``export --format openvino --precision int8``)
on the validation split of the synthetic benchmark rendered at ``--data`` (``vlt_training.cli.generate``: the
Cityscapes-layout source and the ACDC-layout conditions), both through the deployment preprocessing, the labels
resized to the ground truth's size with nearest neighbour, and prints per condition mIoU fp32, mIoU int8 and the
change in points (goal: a loss of at most 0.5 points on every condition).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import write_json  # noqa: E402


def condition_records(data: Path) -> dict[str, list[dict]]:
    """condition -> validation records: 'source' (cityscapes val) and each ACDC condition."""
    from vlt_perception.datasets import get_dataset

    groups = {"source": get_dataset("cityscapes", data / "cityscapes", "val")}
    for record in get_dataset("acdc", data / "acdc", "val"):
        groups.setdefault(record.get("condition", "unknown"), []).append(record)
    return groups


def miou(engine, records: list[dict]) -> float:
    import cv2

    from vlt_perception.datasets import read_image, read_sem_seg
    from vlt_perception.metrics.segmentation import ConfusionMatrix
    from vlt_perception.preprocess import Preprocessor

    pre = Preprocessor.from_metadata(engine.metadata)
    matrix = ConfusionMatrix(len(engine.metadata.class_names), engine.metadata.ignore_index)
    for record in records:
        target = read_sem_seg(record)  # H0, W0 train IDs
        labels = engine.infer(pre(read_image(record)))["labels"][0]  # H, W uint8
        labels = cv2.resize(labels, (target.shape[1], target.shape[0]), interpolation=cv2.INTER_NEAREST)
        matrix.update(labels, target)
    return 100.0 * matrix.miou()


def run(args) -> dict:
    from vlt_perception.engines import create_engine

    fp32 = create_engine(args.fp32, engine="onnxruntime", providers=["CPUExecutionProvider"])
    int8 = create_engine(args.int8, allow_parity_failure=True)  # measured here, whatever its gate said
    rows = []
    for condition, records in condition_records(Path(args.data)).items():
        a, b = miou(fp32, records), miou(int8, records)
        rows.append({"condition": condition, "images": len(records), "miou_fp32": a, "miou_int8": b,
                     "change_points": b - a})
    worst = min(r["change_points"] for r in rows)
    return {"fp32": str(args.fp32), "int8": str(args.int8), "data": str(args.data), "rows": rows,
            "worst_change_points": worst, "goal": "loss <= 0.5 mIoU points on every condition",
            "goal_met": worst >= -0.5, "load_avg_1m": os.getloadavg()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32", type=Path, required=True, help="the fp32 .onnx the int8 model was quantised from")
    p.add_argument("--int8", type=Path, required=True, help="the int8 OpenVINO model (.xml)")
    p.add_argument("--data", type=Path, required=True, help="the rendered synthetic benchmark's root")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args)
    print(f"{'condition':<10} {'images':>6} {'mIoU fp32':>9} {'mIoU int8':>9} {'change':>7}")
    for r in result["rows"]:
        print(f"{r['condition']:<10} {r['images']:>6} {r['miou_fp32']:>9.2f} {r['miou_int8']:>9.2f} "
              f"{r['change_points']:>+7.2f}")
    print(f"worst change {result['worst_change_points']:+.2f} points ({result['goal']}: "
          f"{'met' if result['goal_met'] else 'missed'})")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
