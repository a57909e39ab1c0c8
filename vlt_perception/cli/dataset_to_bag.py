"""Convert a dataset split into a rosbag2 evaluation bag (no ROS needed).

    python -m vlt_perception.cli.dataset_to_bag --dataset acdc --root DATA/acdc --split val \
        --conditions fog night --out bags/acdc_fog_night [--storage mcap|sqlite3] [--compressed jpeg] [--rate 10]

Records come from ``vlt_perception.datasets.get_dataset``; see ``vlt_perception.bag.writer`` for the bag layout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vlt_perception.bag import BagError, BagTopics
from vlt_perception.bag.writer import STORAGES, write_records_bag


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataset_to_bag", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="dataset name (cityscapes, acdc, coco, ...; see list_datasets())")
    p.add_argument("--root", required=True, help="dataset root folder in the official layout")
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    p.add_argument("--storage", choices=STORAGES, default="mcap")
    p.add_argument("--compressed", nargs="?", const="jpeg", choices=("jpeg", "png"), default=None,
                   help="write sensor_msgs/CompressedImage on <image>/compressed (jpeg unless png is given)")
    p.add_argument("--conditions", nargs="+", default=None, help="keep only these conditions (e.g. fog night)")
    p.add_argument("--rate", type=float, default=10.0, help="frame rate of the stamps in Hz")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many records")
    p.add_argument("--image-topic", default=BagTopics.image)
    p.add_argument("--labels-topic", default=BagTopics.labels)
    p.add_argument("--detections-topic", default=BagTopics.detections)
    p.add_argument("--condition-topic", default=BagTopics.condition)
    return p


def load_records(dataset: str, root: str, split: str, conditions: Sequence[str] | None) -> list[dict]:
    """Records of the split, filtered to ``conditions``; raises BagError naming the dataset when none remain."""
    from vlt_perception import datasets

    kwargs = {"conditions": list(conditions)} if conditions and dataset == "acdc" else {}
    records = datasets.get_dataset(dataset, root, split, **kwargs)
    if conditions:
        records = [r for r in records if r.get("condition") in conditions]
    if not records:
        wanted = f" with conditions {list(conditions)}" if conditions else ""
        raise BagError(f"{root}: dataset {dataset!r} split {split!r} has no records{wanted}")
    return records


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from vlt_perception import datasets

        records = load_records(args.dataset, args.root, args.split, args.conditions)
        if args.max_frames is not None:
            records = records[: args.max_frames]
        topics = BagTopics(args.image_topic, args.labels_topic, args.detections_topic, args.condition_topic)
        summary = write_records_bag(
            records, args.out, read_image=datasets.read_image, read_sem_seg=datasets.read_sem_seg,
            storage=args.storage, compressed=args.compressed, rate_hz=args.rate, topics=topics,
            custom_data={"dataset": args.dataset, "split": args.split},
        )
    except (BagError, OSError, ValueError, KeyError) as exc:
        print(f"dataset_to_bag: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {summary.frames} frames ({', '.join(summary.conditions)}) to {summary.path} "
          f"[{args.storage}; topics: {', '.join(summary.topics)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
