"""Dataset records -> rosbag2 (MCAP or sqlite3) with the ``rosbags`` library; no ROS installation needed.

One frame per record, one stamp per frame: the camera image (``sensor_msgs/Image`` rgb8, or ``CompressedImage``
jpeg/png on ``<image>/compressed``), the ground-truth train IDs as a mono8 ``Image`` and the ground-truth boxes as a
``vision_msgs/Detection2DArray``, all with the same header stamp (also used as the bag's log time). The weather /
lighting condition goes on a latched ``std_msgs/String`` topic, written whenever it changes, and into the bag
metadata's ``custom_data``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlt_perception.bag import BagError
from vlt_perception.bag import messages as M
from vlt_perception.bag.topics import (
    COMPRESSED_IMAGE_TYPE, CUSTOM_DATA_PREFIX, DETECTIONS_TYPE, IMAGE_TYPE, STRING_TYPE, BagTopics,
)
from vlt_perception.bag.typestore import get_bag_typestore
from vlt_perception.labels import CITYSCAPES_THING_CLASSES

STORAGES = ("mcap", "sqlite3")
# 2023-11-14T22:13:20Z: a fixed start makes bags reproducible (same stamps for the same records).
DEFAULT_START_NS = 1_700_000_000 * M.NS_PER_S


@dataclass
class BagSummary:
    """What was written: frame count, stamps in order, conditions and topics."""

    path: Path
    frames: int = 0
    stamps: list[int] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    topics: dict[str, str] = field(default_factory=dict)


def _latched_qos():
    """Reliable + transient-local, so that ``ros2 bag play`` republishes /condition to late joiners."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    forever = QosTime(2147483647, 4294967295)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                forever, forever, QosLiveliness.AUTOMATIC, forever, False)]


def _open_writer(path: Path, storage: str):
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise BagError(f"{path}: unknown storage {storage!r}; expected one of {STORAGES}")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    return Writer(path, version=9, storage_plugin=plugin)


def write_records_bag(
    records: Sequence[dict],
    out: str | Path,
    *,
    read_image: Callable[[dict], np.ndarray],
    read_sem_seg: Callable[[dict], np.ndarray] | None = None,
    storage: str = "mcap",
    compressed: str | None = None,
    rate_hz: float = 10.0,
    start_ns: int = DEFAULT_START_NS,
    topics: BagTopics = BagTopics(),
    thing_classes: Sequence[str] = CITYSCAPES_THING_CLASSES,
    custom_data: dict[str, str] | None = None,
) -> BagSummary:
    """Write ``records`` (dataset contract of ``vlt_perception.datasets``) as a bag folder at ``out``.

    ``compressed`` is ``None`` (raw rgb8), ``"jpeg"`` or ``"png"``. The bag is written to a temporary folder beside
    ``out`` and renamed when complete, so ``out`` never holds a half-written bag.
    """
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists already; remove it or choose another --out")
    if rate_hz <= 0:
        raise BagError(f"{out}: rate must be > 0 Hz, got {rate_hz}")
    if not records:
        raise BagError(f"{out}: no records to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary = _write(records, tmp_root / out.name, read_image, read_sem_seg, storage, compressed, rate_hz,
                         start_ns, topics, thing_classes, custom_data or {})
        (tmp_root / out.name).rename(out)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    summary.path = out
    return summary


def _write(records, path, read_image, read_sem_seg, storage, compressed, rate_hz, start_ns, topics,
           thing_classes, custom_data) -> BagSummary:
    store = get_bag_typestore()
    has_labels = read_sem_seg is not None and any(r.get("sem_seg_file_name") for r in records)
    has_boxes = any("annotations" in r for r in records)
    image_topic = topics.compressed_image if compressed else topics.image
    summary = BagSummary(path=path)
    with _open_writer(path, storage) as writer:
        conn = {
            "image": writer.add_connection(image_topic, COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE,
                                           typestore=store),
            "condition": writer.add_connection(topics.condition, STRING_TYPE, typestore=store,
                                               offered_qos_profiles=_latched_qos()),
        }
        summary.topics = {image_topic: conn["image"].msgtype, topics.condition: STRING_TYPE}
        if has_labels:
            conn["labels"] = writer.add_connection(topics.labels, IMAGE_TYPE, typestore=store)
            summary.topics[topics.labels] = IMAGE_TYPE
        if has_boxes:
            conn["boxes"] = writer.add_connection(topics.detections, DETECTIONS_TYPE, typestore=store)
            summary.topics[topics.detections] = DETECTIONS_TYPE

        def put(key, msg, typename, stamp):
            writer.write(conn[key], stamp, store.serialize_cdr(msg, typename))

        condition = None
        for index, record in enumerate(records):
            stamp = start_ns + round(index * M.NS_PER_S / rate_hz)
            if record.get("condition", "unknown") != condition:
                condition = record.get("condition", "unknown")
                put("condition", M.string_msg(store, condition), STRING_TYPE, stamp)
                if condition not in summary.conditions:
                    summary.conditions.append(condition)
            image = _read(read_image, record, "image")
            if compressed:
                put("image", M.compressed_image_msg(store, image, stamp, compressed), COMPRESSED_IMAGE_TYPE, stamp)
            else:
                put("image", M.image_msg(store, image, stamp), IMAGE_TYPE, stamp)
            if has_labels and record.get("sem_seg_file_name"):
                labels = _read(read_sem_seg, record, "labels")
                if labels.shape != image.shape[:2]:
                    raise BagError(f"{record.get('sem_seg_file_name')}: labels {labels.shape} do not match "
                                   f"image {image.shape[:2]} of {record.get('file_name')}")
                put("labels", M.labels_msg(store, labels, stamp), IMAGE_TYPE, stamp)
            if has_boxes:
                anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
                msg = M.detections_msg(store, [a["bbox"] for a in anns], [a["category_id"] for a in anns],
                                       thing_classes, stamp)
                put("boxes", msg, DETECTIONS_TYPE, stamp)
            summary.stamps.append(stamp)
            summary.frames += 1
        meta = {
            "conditions": ",".join(summary.conditions), "frames": str(summary.frames),
            "rate_hz": str(rate_hz), "topics": json.dumps(summary.topics, sort_keys=True),
            "thing_classes": json.dumps(list(thing_classes)), **custom_data,
        }
        for key, value in meta.items():
            writer.set_custom_data(CUSTOM_DATA_PREFIX + key, str(value))
    return summary


def _read(reader: Callable[[dict], np.ndarray], record: dict, what: str) -> np.ndarray:
    try:
        return reader(record)
    except Exception as exc:  # dataset readers raise many kinds; name the file
        name = record.get("file_name") if what == "image" else record.get("sem_seg_file_name")
        raise BagError(f"{name}: cannot read {what}: {exc}") from exc
