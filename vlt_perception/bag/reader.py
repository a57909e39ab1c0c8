"""Read evaluation bags into frames (image + ground truth sharing one header stamp), tolerating messy bags.

Real bags are messy. Missing ground-truth topics, unexpected encodings, corrupt messages, duplicate or
out-of-order stamps and truncated files are recorded in :class:`Issues` (counted by kind with the first examples)
and the frames that could be read are still returned. Only a bag that cannot be opened at all, or has no camera
topic or no ground truth, raises :class:`~vlt_perception.bag.BagError`.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vlt_perception.bag import BagError
from vlt_perception.bag import messages as M
from vlt_perception.bag.limits import BagLimits, check_mcap
from vlt_perception.bag.topics import (
    COMPRESSED_IMAGE_TYPE, CUSTOM_DATA_PREFIX, DETECTIONS_TYPE, IMAGE_TYPE, STRING_TYPE, BagTopics,
)
from vlt_perception.bag.typestore import get_bag_typestore
from vlt_perception.labels import CITYSCAPES_THING_CLASSES

UNKNOWN_CONDITION = "unknown"


@dataclass
class Issues:
    """Counted problems by kind (``corrupt_message``, ``truncated``, ``unmatched_image`` ...) with examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if detail and len(examples) < self.max_examples:
            examples.append(detail)

    def merge(self, other: "Issues") -> None:
        for kind, count in other.counts.items():
            self.counts[kind] += count
            self.examples.setdefault(kind, []).extend(other.examples.get(kind, [])[: self.max_examples])

    def as_dict(self) -> dict:
        return {kind: {"count": n, "examples": self.examples.get(kind, [])} for kind, n in sorted(self.counts.items())}


@dataclass
class Frame:
    """One stamp's worth of data; ``labels`` / ``boxes`` are None where the bag has no such ground truth."""

    stamp_ns: int
    condition: str = UNKNOWN_CONDITION
    image: np.ndarray | None = None  # H, W, 3 uint8 RGB
    labels: np.ndarray | None = None  # H, W uint8 train IDs
    boxes: dict[str, np.ndarray] | None = None  # boxes (N, 4) xyxy, labels (N,), scores (N,)
    log_time_ns: int = 0


def open_bag(path: str | Path, issues: Issues | None = None, limits: BagLimits | None = None):
    """An open rosbags ``Reader``; when rosbags cannot open the bag, what :class:`SalvagedBag` recovers from the
    storage files (noted in ``issues`` as ``truncated``). Raises BagError naming the bag when nothing is readable.

    MCAP files are checked against ``limits`` first (:func:`~vlt_perception.bag.limits.check_mcap`): rosbags
    inflates a whole chunk before it checks the chunk's size."""
    from vlt_perception.bag.salvage import SalvagedBag

    get_bag_typestore()  # fails with an install hint when rosbags is missing
    from rosbags.rosbag2 import Reader

    path = Path(path)
    issues = issues if issues is not None else Issues()
    if not path.exists():
        raise BagError(f"{path}: bag does not exist")
    limits = limits or BagLimits()
    for file in _storage_files(path):
        check_mcap(file, limits)  # returns at once for files that are not MCAP
    try:
        reader = Reader(path)
        reader.open()
        return reader
    except Exception as exc:  # rosbags raises ReaderError, KeyError, struct errors ... on broken files
        error = f"{type(exc).__name__}: {exc}"
    try:
        salvaged = SalvagedBag(path, limits)
    except Exception as exc:
        raise BagError(f"{path}: cannot open bag ({error}) and nothing could be salvaged ({exc}); is it a rosbag2 "
                       "folder, .mcap or .db3 file?") from exc
    if not salvaged.message_count:
        notes = "; ".join(salvaged.notes) or "no messages"
        raise BagError(f"{path}: cannot open bag ({error}); salvage found no messages ({notes})")
    issues.add("truncated", f"{path}: {error}; salvaged {salvaged.message_count} messages")
    for note in salvaged.notes:
        issues.add("salvage_note", note)
    return salvaged


def _storage_files(path: Path) -> list[Path]:
    """The storage files rosbags may open: ``path`` itself, or a folder's ``*.mcap`` plus the files its
    metadata.yaml names (rosbags takes each name's last part, inside the folder)."""
    if path.is_file():
        return [path]
    files = set(path.glob("*.mcap"))
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        files.update(path / Path(str(name)).name for name in info.get("relative_file_paths") or [])
    except Exception:  # missing or damaged metadata: rosbags fails on it and salvage reads the folder
        pass
    return sorted(f for f in files if f.is_file())


class BagFrameReader:
    """Frames of one bag in arrival order. ``issues`` fills while iterating; ``selected`` holds the connection
    used per role (``image``, ``labels``, ``boxes``, ``condition``), ``custom_data`` the bag metadata's.

    A frame is complete when it has the image and every ground-truth topic the bag has. Frames still incomplete
    ``max_pending`` frames later (or at the end) are yielded if they have an image and some ground truth, and
    counted as ``incomplete_frame``; otherwise counted as ``unmatched_image`` / ``unmatched_ground_truth``.
    """

    def __init__(self, path: str | Path, topics: BagTopics = BagTopics(), thing_classes: Sequence[str] | None = None,
                 max_pending: int = 32) -> None:
        self.path = Path(path)
        self.topics = topics
        self.max_pending = max_pending
        self.issues = Issues()
        self._store = get_bag_typestore()
        self._reader = open_bag(self.path, self.issues)
        try:
            self.custom_data = self._custom_data()
            self.selected = self._select_topics()
        except BaseException:
            self.close()
            raise
        self.thing_classes = list(thing_classes or self._bag_thing_classes() or CITYSCAPES_THING_CLASSES)
        conditions = [c for c in self.custom_data.get(CUSTOM_DATA_PREFIX + "conditions", "").split(",") if c]
        self.default_condition = conditions[0] if len(conditions) == 1 else UNKNOWN_CONDITION

    # ----------------------------------------------------------------------------------------------- opening
    def _bag_thing_classes(self) -> list[str] | None:
        """The detection classes the writer recorded in custom_data (class_id names refer to them)."""
        text = self.custom_data.get(CUSTOM_DATA_PREFIX + "thing_classes")
        if text is None:
            return None
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            self.issues.add("bad_metadata", f"custom_data thing_classes is not JSON: {exc}")
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    def _custom_data(self) -> dict[str, str]:
        metadata = getattr(self._reader.storage, "metadata", None)
        return dict(getattr(metadata, "custom", None) or {})

    def _select_topics(self) -> dict[str, object]:
        """role -> connection for image, labels, boxes, condition; unexpected types are reported and left out."""
        available = {c.topic: c for c in self._reader.connections}
        wanted = {
            "image": [(self.topics.image, IMAGE_TYPE), (self.topics.compressed_image, COMPRESSED_IMAGE_TYPE)],
            "labels": [(self.topics.labels, IMAGE_TYPE)],
            "boxes": [(self.topics.detections, DETECTIONS_TYPE)],
            "condition": [(self.topics.condition, STRING_TYPE)],
        }
        selected = {}
        for role, candidates in wanted.items():
            for topic, msgtype in candidates:
                conn = available.get(topic)
                if conn is None:
                    continue
                if conn.msgtype != msgtype:
                    self.issues.add("unexpected_type", f"{topic}: {conn.msgtype}, expected {msgtype}")
                    continue
                selected[role] = conn
                break
        listing = ", ".join(f"{t} [{c.msgtype}]" for t, c in sorted(available.items())) or "none"
        if "image" not in selected:
            raise BagError(f"{self.path}: no camera topic {self.topics.image} (Image) or "
                           f"{self.topics.compressed_image} (CompressedImage); topics in the bag: {listing}")
        if "labels" not in selected and "boxes" not in selected:
            raise BagError(f"{self.path}: no ground truth ({self.topics.labels} Image or {self.topics.detections} "
                           f"Detection2DArray); topics in the bag: {listing}")
        for role, topic in (("labels", self.topics.labels), ("boxes", self.topics.detections)):
            if role not in selected:
                self.issues.add("missing_topic", f"{topic} not in the bag; evaluated without it")
        return selected

    @property
    def has_labels(self) -> bool:
        return "labels" in self.selected

    @property
    def has_boxes(self) -> bool:
        return "boxes" in self.selected

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    # ----------------------------------------------------------------------------------------------- reading
    def frames(self) -> Iterator[Frame]:
        """Yield frames; see the class docstring for what happens to incomplete ones."""
        roles = {conn.id: role for role, conn in self.selected.items()}
        required = {role for role in ("image", "labels", "boxes") if role in self.selected}
        pending: OrderedDict[int, Frame] = OrderedDict()
        seen: dict[int, set[str]] = {}
        condition_times: list[int] = []
        condition_values: list[str] = []
        last_image_stamp = None
        messages = self._reader.messages(connections=list(self.selected.values()))
        count = 0
        while True:
            try:
                conn, log_time, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # truncated chunk / database: keep what was read
                self.issues.add("truncated", f"{self.path}: reading stopped after {count} messages: "
                                             f"{type(exc).__name__}: {exc}")
                break
            count += 1
            role = roles[conn.id]
            try:
                msg = self._store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:
                self.issues.add("corrupt_message", f"{conn.topic} at log time {log_time}: {exc}")
                continue
            if role == "condition":
                condition_times.append(log_time)
                condition_values.append(str(msg.data))
                continue
            try:
                value = self._decode(role, msg)
            except (M.MessageError, ValueError) as exc:
                self.issues.add("undecodable_message", f"{conn.topic} at log time {log_time}: {exc}")
                continue
            stamp = M.header_ns(msg)
            if role == "image":
                if last_image_stamp is not None and stamp < last_image_stamp:
                    self.issues.add("out_of_order_stamp", f"{conn.topic}: {stamp} after {last_image_stamp}")
                last_image_stamp = stamp if last_image_stamp is None else max(stamp, last_image_stamp)
            frame = pending.get(stamp)
            if frame is None:
                if stamp in seen and role in seen[stamp]:
                    self.issues.add("duplicate_stamp", f"{conn.topic}: second message stamped {stamp}")
                    continue
                frame = pending[stamp] = Frame(stamp_ns=stamp, log_time_ns=log_time)
            elif role in seen.get(stamp, ()):
                self.issues.add("duplicate_stamp", f"{conn.topic}: second message stamped {stamp}")
                continue
            setattr(frame, role, value)
            seen.setdefault(stamp, set()).add(role)
            if seen[stamp] >= required:
                yield self._finish(pending.pop(stamp), condition_times, condition_values)
            while len(pending) > self.max_pending:
                _, old = pending.popitem(last=False)
                yield from self._flush(old, condition_times, condition_values)
        for frame in list(pending.values()):
            yield from self._flush(frame, condition_times, condition_values)

    def _decode(self, role: str, msg):
        if role == "image":
            return M.decode_image(msg)
        if role == "labels":
            return M.decode_labels(msg)
        return M.decode_detections(msg, self.thing_classes)

    def _finish(self, frame: Frame, times: list[int], values: list[str]) -> Frame:
        index = bisect.bisect_right(times, frame.log_time_ns) - 1
        frame.condition = values[index] if index >= 0 else (values[0] if values else self.default_condition)
        return frame

    def _flush(self, frame: Frame, times, values) -> Iterator[Frame]:
        has_gt = frame.labels is not None or frame.boxes is not None
        if frame.image is None:
            self.issues.add("unmatched_ground_truth", f"stamp {frame.stamp_ns}: ground truth without image")
        elif not has_gt:
            self.issues.add("unmatched_image", f"stamp {frame.stamp_ns}: image without ground truth")
        else:
            self.issues.add("incomplete_frame", f"stamp {frame.stamp_ns}: some ground truth missing")
            yield self._finish(frame, times, values)

    def __enter__(self) -> "BagFrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
