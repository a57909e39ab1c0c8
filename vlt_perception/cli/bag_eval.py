"""Offline evaluation of a model on rosbags (no ROS needed).

    python -m vlt_perception.cli.bag_eval --bag bags/acdc_fog --bag bags/acdc_night --model model.onnx \
        --reference bags/cityscapes_val --out reports/acdc [--engine onnxruntime|torch|tensorrt]

Writes ``report.json`` and ``report.md`` (+ figures/) to ``--out``. Exit status 1 when a bag could not be evaluated
(the report still holds every other bag and the error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vlt_perception.bag import BagError, BagTopics
from vlt_perception.cli_logging import configure_cli_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bag_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--bag", action="append", required=True, help="bag to evaluate (repeat for several)")
    p.add_argument("--model", required=True, help=".onnx, TensorRT .engine/.plan or a training checkpoint folder")
    p.add_argument("--engine", choices=("auto", "onnxruntime", "openvino", "torch", "tensorrt"), default="auto")
    p.add_argument("--precision", default=None, help="torch: fp32|bf16|fp16; TensorRT: fp32|fp16|int8 "
                   "(default: the engine's own choice; ONNX Runtime runs what the file holds)")
    p.add_argument("--tta", action="store_true", help="segmentation, torch engine: multi-scale (0.5-1.75) + flip "
                   "test-time augmentation, as leaderboard figures use (about 12x slower)")
    p.add_argument("--reference", default=None, help="source-domain bag: rPD = 100 x target / reference score")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--max-frames", type=int, default=None, help="per bag")
    p.add_argument("--score-threshold", type=float, default=0.0, help="detection models: keep scores >= this")
    p.add_argument("--samples", type=int, default=2, help="sample overlays per condition")
    p.add_argument("--no-figures", action="store_true", help="skip matplotlib figures")
    p.add_argument("--image-topic", default=BagTopics.image)
    p.add_argument("--labels-topic", default=BagTopics.labels)
    p.add_argument("--detections-topic", default=BagTopics.detections)
    p.add_argument("--condition-topic", default=BagTopics.condition)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    from vlt_perception.bag.offline import evaluate_bags
    from vlt_perception.engines.base import EngineError

    topics = BagTopics(args.image_topic, args.labels_topic, args.detections_topic, args.condition_topic)
    try:
        report = evaluate_bags(args.bag, args.model, args.out, engine=args.engine, precision=args.precision,
                               reference=args.reference, topics=topics, max_frames=args.max_frames,
                               score_threshold=args.score_threshold,
                               samples_per_condition=args.samples, figures=not args.no_figures, tta=args.tta)
    except (BagError, EngineError, OSError, ValueError) as exc:
        print(f"bag_eval: error: {exc}", file=sys.stderr)
        return 1
    for name, bag in report["bags"].items():
        seg, det = bag.get("segmentation") or {}, bag.get("detection") or {}
        print(f"{name}: frames={bag.get('frames', 0)} mIoU={_pct(seg.get('mIoU'))} mAP={_pct(det.get('mAP'))} "
              f"rPD={_pct((bag.get('retention') or {}).get('mIoU'))}"
              + (f" ERROR: {bag['error']}" if bag.get("error") else ""))
    for name, group in report["conditions"].items():
        seg, det = group.get("segmentation") or {}, group.get("detection") or {}
        print(f"  condition {name}: frames={group.get('frames', 0)} mIoU={_pct(seg.get('mIoU'))} "
              f"mAP={_pct(det.get('mAP'))} rPD={_pct((group.get('retention') or {}).get('mIoU'))} "
              f"ECE={_pct((group.get('calibration') or {}).get('ece'))}")
    print(f"report: {args.out}/report.md")
    return 1 if any(b.get("error") for b in report["bags"].values()) else 0


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
