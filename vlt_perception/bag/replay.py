"""Playing bags into a running graph, without rclpy: message streams, lock-step frame groups, timing, and the
launch configuration of the replay evaluation (player + segmentation node + evaluator).

``vlt_perception.nodes.bag_player_node`` publishes what these functions yield; ``launch/replay_eval.launch.py``
turns :func:`replay_eval_nodes` into ``launch_ros`` actions.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vlt_perception.bag import BagError
from vlt_perception.bag.reader import Issues, open_bag
from vlt_perception.bag.topics import (
    COMPRESSED_IMAGE_TYPE, DETECTIONS_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE, STRING_TYPE, BagTopics,
)
from vlt_perception.bag.typestore import get_bag_typestore

MODES = ("lockstep", "realtime", "rate")
HEADER_TYPE = "std_msgs/msg/Header"


@dataclass
class PlaybackMessage:
    """One serialized message. ``stamp_ns`` is its header stamp (None for types without a leading header)."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    stamp_ns: int | None = None
    latched: bool = False


@dataclass
class FrameGroup:
    """What lock-step publishes at once: headerless messages (e.g. /condition) and ground truth first, the camera
    image last; ``stamp_ns`` is the image stamp the player then waits for (None: nothing to wait for)."""

    stamp_ns: int | None
    messages: list[PlaybackMessage] = field(default_factory=list)


# The message types the player and the evaluator build classes for, with the module each comes from. A bag names
# its own types: importing ``<package>.msg`` for a name taken from a bag would run whichever module of that name is
# on sys.path (a bag folder can ship one), so only these fixed names are ever imported.
MESSAGE_MODULES = {
    IMAGE_TYPE: "sensor_msgs.msg",
    COMPRESSED_IMAGE_TYPE: "sensor_msgs.msg",
    DETECTIONS_TYPE: "vision_msgs.msg",
    STRING_TYPE: "std_msgs.msg",
    LABEL_INFO_TYPE: "vision_msgs.msg",
}


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the ROS 2 Python message class (no rclpy import; needs the message package).

    Only the types of :data:`MESSAGE_MODULES`; any other name is refused before anything is imported.
    """
    module = MESSAGE_MODULES.get(msgtype)
    if module is None:
        raise BagError(f"message type {msgtype!r} is not one the player and evaluator handle "
                       f"(allowed: {sorted(MESSAGE_MODULES)})")
    try:
        return getattr(importlib.import_module(module), msgtype.rsplit("/", 1)[1])
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not available to rclpy ({exc}); for vision_msgs build the "
                       "overlay (./vlt setup) and `source tools/env.sh`") from exc


def playback_topics(bag_types: dict[str, str], camera_topics: Iterable[str], condition_topics: Iterable[str] = (),
                    topics: BagTopics = BagTopics()) -> tuple[dict[str, str], dict[str, str]]:
    """Which of a bag's topics (topic -> type) the player may publish: ``(selected, skipped)``, skipped mapping
    each refused topic to the reason.

    Only the camera topics (Image or CompressedImage), the ground-truth topics (``topics.labels`` as Image,
    ``topics.detections`` as Detection2DArray) and the condition topics (``topics.condition`` plus
    ``condition_topics``, String). Anything else a bag carries (``/cmd_vel``, ``/tf``, ...) would reach the live
    graph under the bag's own types, so it stays in the bag.
    """
    expected: dict[str, tuple[str, ...]] = {topic: (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE) for topic in camera_topics}
    expected.setdefault(topics.labels, (IMAGE_TYPE,))
    expected.setdefault(topics.detections, (DETECTIONS_TYPE,))
    for topic in (topics.condition, *condition_topics):
        expected.setdefault(topic, (STRING_TYPE,))
    selected, skipped = {}, {}
    for topic, msgtype in bag_types.items():
        if topic not in expected:
            skipped[topic] = "not a camera, ground-truth or condition topic"
        elif msgtype not in expected[topic]:
            skipped[topic] = f"type {msgtype!r}, expected one of {list(expected[topic])}"
        else:
            selected[topic] = msgtype
    return selected, skipped


def cdr_header_stamp(raw: bytes) -> int:
    """Header stamp (ns) of a CDR message whose first field is std_msgs/Header, read from its first 12 bytes.

    CDR: a 4-byte encapsulation header (byte 1: 1 = little endian), then int32 sec and uint32 nanosec. Reading
    them directly keeps the player and the lock-step wait from decoding megabytes of pixels per frame.
    """
    if len(raw) < 12:
        raise ValueError(f"CDR message of {len(raw)} bytes is too short for a header stamp")
    endian = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack(endian + "iI", bytes(raw[4:12]))
    return sec * 1_000_000_000 + nanosec


def has_header(msgtype: str) -> bool:
    """Whether ``msgtype`` starts with a std_msgs/Header field (so :func:`cdr_header_stamp` applies)."""
    try:
        fields = get_bag_typestore().get_msgdef(msgtype).fields
    except Exception:  # unknown type: treat as headerless (published, never waited for)
        return False
    return bool(fields) and fields[0][1][1] == HEADER_TYPE


def bag_topics(path: str | Path) -> dict[str, str]:
    """topic -> message type of every connection in the bag (to create publishers before playing)."""
    reader = open_bag(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def read_playback(path: str | Path, topics: Iterable[str] | None = None, latched_topics: Iterable[str] = (),
                  issues: Issues | None = None) -> Iterator[PlaybackMessage]:
    """Messages of ``topics`` (default: all) in log-time order; truncation ends the stream with an issue."""
    issues = issues if issues is not None else Issues()
    reader = open_bag(path, issues)
    try:
        wanted = [c for c in reader.connections if topics is None or c.topic in set(topics)]
        if not wanted:
            available = sorted({c.topic for c in reader.connections})
            raise BagError(f"{path}: none of the topics {sorted(topics or [])} in the bag (has {available})")
        headers = {c.id: has_header(c.msgtype) for c in wanted}
        latched = set(latched_topics)
        stream = reader.messages(connections=wanted)
        while True:
            try:
                conn, log_time, raw = next(stream)
            except StopIteration:
                return
            except Exception as exc:  # truncated storage: stop, say so
                issues.add("truncated", f"{path}: playback stopped: {type(exc).__name__}: {exc}")
                return
            raw = bytes(raw)
            stamp = None
            if headers[conn.id]:
                try:
                    stamp = cdr_header_stamp(raw)
                except ValueError as exc:
                    issues.add("corrupt_message", f"{conn.topic} at {log_time}: {exc}")
                    continue
            yield PlaybackMessage(conn.topic, conn.msgtype, log_time, raw, stamp, conn.topic in latched)
    finally:
        reader.close()


def lockstep_groups(messages: Iterable[PlaybackMessage], camera_topics: Iterable[str]) -> Iterator[FrameGroup]:
    """Group a log-ordered stream into frames by header stamp (see :class:`FrameGroup`).

    A frame's group is complete when the next camera image arrives (or the stream ends); ground truth may come
    before or after its image in log order. Headerless messages belong to the next image's frame (the writer puts
    /condition just before the first image of a new condition).
    """
    cameras = set(camera_topics)
    preamble: list[PlaybackMessage] = []
    groups: dict[int, list[PlaybackMessage]] = {}
    images: dict[int, PlaybackMessage] = {}
    order: list[int] = []  # image stamps in arrival order, not yet yielded
    for msg in messages:
        if msg.stamp_ns is None:
            preamble.append(msg)
            continue
        if msg.topic in cameras:
            if msg.stamp_ns in images:  # a second image with the same stamp: its own frame, no GT waits on it
                yield FrameGroup(None, [msg])
                continue
            while order:  # everything before this image is complete
                yield _group(order.pop(0), groups, images)
            images[msg.stamp_ns] = msg
            groups.setdefault(msg.stamp_ns, [])[:0] = preamble
            preamble = []
            order.append(msg.stamp_ns)
        else:
            groups.setdefault(msg.stamp_ns, []).append(msg)
    for stamp in order:
        yield _group(stamp, groups, images)
    leftovers = [m for stamp, msgs in groups.items() if stamp not in images for m in msgs] + preamble
    if leftovers:  # ground truth without an image: published so that the evaluator counts it
        yield FrameGroup(None, sorted(leftovers, key=lambda m: m.log_time_ns))


def _group(stamp: int, groups: dict, images: dict) -> FrameGroup:
    return FrameGroup(stamp, [*groups.pop(stamp, []), images[stamp]])


def playback_offset_s(log_time_ns: int, first_log_time_ns: int, rate: float) -> float:
    """Seconds after the start at which a message is due (``rate`` 2.0 plays twice as fast)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return (log_time_ns - first_log_time_ns) / 1e9 / rate


# --- launch ---------------------------------------------------------------------------------------------------
def replay_eval_nodes(*, bag: str, model: str, out: str = "replay_report", mode: str = "lockstep",
                      rate: str | float = 1.0, compressed: str | bool = False, namespace: str = "",
                      topics: BagTopics = BagTopics(), engine: str = "", fastdds_profile: str = "",
                      calibration: str | bool = True) -> list:
    """Player + segmentation node + evaluator for ``ros2 launch vlt_perception replay_eval.launch.py bag:=B
    model:=M`` (launch arguments arrive as strings). Returns ``launch_config.NodeLaunch`` entries.

    ``calibration`` (default on): the node publishes its per-pixel confidence and the evaluator adds ECE, AUROC and
    FPR95 to the report; turn it off for a model without a ``confidence`` output (every graph the package exports
    has one), whose frames the evaluator would otherwise wait for in vain."""
    from vlt_perception.launch_config import ConfigError, NodeLaunch, parse_bool, perception_nodes

    if not bag:
        raise ConfigError("launch argument bag: required (a rosbag2 folder, .mcap or .db3)")
    if not Path(bag).exists():
        raise ConfigError(f"launch argument bag: {bag} does not exist")
    if not model or not Path(model).exists():  # the node would exit 1 at once; nothing must start
        raise ConfigError(f"launch argument model: {model or 'required'}{' does not exist' if model else ''}")
    if mode not in MODES:
        raise ConfigError(f"launch argument mode: expected one of {list(MODES)}, got {mode!r}")
    try:
        rate = float(rate)
    except ValueError:
        raise ConfigError(f"launch argument rate: expected a number, got {rate!r}") from None
    if rate <= 0:
        raise ConfigError(f"launch argument rate: must be > 0, got {rate}")
    calibration = parse_bool(calibration, "calibration")
    (seg,) = perception_nodes(nodes="segmentation", seg_model=model, camera_topic=topics.image,
                              compressed=compressed, namespace=namespace, engine=engine,
                              fastdds_profile=fastdds_profile)
    use_compressed = seg.remappings[0][0] == "~/in/compressed"  # as perception_nodes decided it
    seg.exit_fails_launch = "any"  # the job needs it until the evaluator is done
    prefix = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    labels = f"{prefix}/{seg.name}/out/labels"
    confidence = f"{prefix}/{seg.name}/out/confidence" if calibration else ""
    if calibration:
        seg.parameters.append({"publish_confidence": True})
    # the player is the camera: it needs the same large-image middleware settings as the node
    player = NodeLaunch("bag_player_node", "bag_player", namespace, env=dict(seg.env), parameters=[{
        "bag": str(bag), "mode": mode, "rate": rate, "result_topic": labels,
        # The evaluator must hear the node's labels from the first frame (the node skips unsubscribed outputs).
        "wait_topics": [topics.image, topics.labels, topics.condition, labels, *([confidence] if confidence else [])],
        "done_topic": "/bag_player/done",
    }])
    player.exit_fails_launch = "error"  # a failed player fails the job; its normal end is the evaluator's cue
    # An evaluation job: the evaluator's exit (report written) ends the launch, with its outcome.
    evaluator = NodeLaunch("evaluator_node", "evaluator", namespace, env=dict(seg.env), ends_launch=True,
                           parameters=[{
        "labels_topic": labels, "confidence_topic": confidence, "gt_labels_topic": topics.labels,
        "gt_detections_topic": "",
        "condition_topic": topics.condition, "out_dir": str(out), "bag_name": Path(bag).name,
        "camera_topic": topics.compressed_image if use_compressed else topics.image,
        "camera_type": "sensor_msgs/msg/CompressedImage" if use_compressed else "sensor_msgs/msg/Image",
        "done_topic": "/bag_player/done",
    }])
    return [seg, evaluator, player]


class EvaluationFailed(RuntimeError):
    """The evaluator of a replay launch exited non-zero: raised inside the launch so that it fails too."""


def evaluation_finished(returncode: int | None) -> str:
    """What ends a replay launch when the evaluator exits: the shutdown reason for exit 0, else an error.

    ``ros2 launch`` cannot return a process's exit code as its own; an exception raised in an event handler is
    what makes it end with a non-zero status, so a failed evaluation fails the launch."""
    if returncode == 0:
        return "evaluator_node finished: report written"
    raise EvaluationFailed(f"evaluator_node exited with {returncode}: the evaluation failed (see its log)")
