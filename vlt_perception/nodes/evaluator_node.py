"""``evaluator_node``: online evaluation of a running perception graph against ground truth replayed from a bag.

Subscribes to predicted labels (mono8, e.g. ``/segmentation_node/out/labels``) and/or detections, the ground-truth
topics and the latched condition topic; pairs them by header stamp with :class:`vlt_perception.bag.matching.
StampMatcher` and writes the same report as the offline ``bag_eval`` (plus end-to-end latency: ground truth
received -> prediction received, and dropped frames = ground truth never answered). The report is written when
``done_topic`` says the player finished (after ``done_grace`` s), after ``idle_timeout`` s without messages (for
``ros2 bag play``), or on shutdown (Ctrl-C).

    python -m vlt_perception.nodes.evaluator_node --ros-args -p out_dir:=reports/online \
        -p labels_topic:=/segmentation_node/out/labels
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

try:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("evaluator_node needs rclpy: source a ROS 2 distribution, or pip install -r "
                      "requirements/ros.txt and `source tools/env.sh`") from exc

from vlt_perception.bag import BagError, BagTopics
from vlt_perception.bag import messages as M
from vlt_perception.bag.matching import EvaluationAccumulator, StampMatcher
from vlt_perception.bag.reader import UNKNOWN_CONDITION, Issues
from vlt_perception.bag.replay import cdr_header_stamp, message_class
from vlt_perception.bag.report import write_report
from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES, IGNORE_INDEX
from vlt_perception.nodes import cli_help, signals

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Deep reliable queues: in realtime replay a burst must queue here, not vanish (drops belong to the graph).
QUEUE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
PARAMS = {  # name: (default, description)
    "labels_topic": ("/segmentation_node/out/labels", "predicted train-ID labels (mono8); '' = none"),
    "detections_topic": ("", "predicted vision_msgs/Detection2DArray; '' = none"),
    "gt_labels_topic": (BagTopics.labels, "ground-truth labels (mono8); '' = none"),
    "gt_detections_topic": (BagTopics.detections, "ground-truth Detection2DArray; '' = none"),
    "condition_topic": (BagTopics.condition, "latched std_msgs/String with the current condition"),
    "camera_topic": (BagTopics.image, "camera input of the graph: end-to-end latency starts at its arrival "
                                      "(taken as raw bytes, not decoded); '' = from the ground truth's arrival"),
    "camera_type": ("sensor_msgs/msg/Image", "message type of camera_topic (or sensor_msgs/msg/CompressedImage)"),
    "class_names": (list(CITYSCAPES_CLASSES), "segmentation classes (train IDs index them)"),
    "thing_classes": (list(CITYSCAPES_THING_CLASSES), "detection classes of the model (class_id names or indices)"),
    "out_dir": ("replay_report", "report folder (report.json, report.md, figures/)"),
    "reference_report": ("", "an offline bag_eval report.json with --reference: retention against its reference"),
    "bag_name": ("online", "name of this run in the report"),
    "done_topic": ("/bag_player/done", "std_msgs/String from the player: finish when it arrives; '' = none"),
    "done_grace": (1.0, "seconds to wait for in-flight predictions after done"),
    "idle_timeout": (0.0, "finish after this many seconds without messages (0 = never)"),
    "exit_when_done": (True, "shut down after writing the report"),
    "figures": (True, "draw report figures"),
}


def reference_scores(path: str) -> tuple[str, dict]:
    """(reference bag name, {"mIoU", "mAP"}) from an offline report; ValueError naming the file otherwise."""
    try:
        report = json.loads(Path(path).read_text())
        name = report["reference"]
        bag = report["bags"][name]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"reference_report {path}: not a bag_eval report with a reference bag ({exc!r})") from exc
    scores = {"mIoU": (bag.get("segmentation") or {}).get("mIoU"), "mAP": (bag.get("detection") or {}).get("mAP")}
    return f"{name} ({path})", scores


class EvaluatorNode(Node):
    def __init__(self) -> None:
        super().__init__("evaluator")
        for name, (default, text) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        self.p = {name: self.get_parameter(name).value for name in PARAMS}
        gt_parts = [part for part, key in (("labels", "gt_labels_topic"), ("boxes", "gt_detections_topic"))
                    if self.p[key]]
        pred_parts = [part for part, key in (("labels", "labels_topic"), ("boxes", "detections_topic"))
                      if self.p[key]]
        self.matcher = StampMatcher(gt_parts, pred_parts)  # raises when there is nothing to compare
        classes = self.p["class_names"] if "labels" in pred_parts else None
        things = self.p["thing_classes"] if "boxes" in pred_parts else None
        self.acc = EvaluationAccumulator(classes, things, IGNORE_INDEX)
        if self.p["reference_report"]:
            name, scores = reference_scores(self.p["reference_report"])
            self.acc.set_reference_scores(scores, name)
        self.issues = Issues()
        self.condition = UNKNOWN_CONDITION
        self.player_summary: dict = {}
        self.finished = False
        self.last_message = time.monotonic()
        self._done_at: float | None = None
        self._subscribe(gt_parts, pred_parts)
        self.create_timer(0.2, self._on_timer)

    def _subscribe(self, gt_parts, pred_parts) -> None:
        def sub(topic, cls, handler, qos=QUEUE):
            self.create_subscription(cls, topic, handler, qos)

        sub(self.p["condition_topic"], String, self._on_condition, LATCHED)
        if self.p["camera_topic"]:
            self.create_subscription(message_class(self.p["camera_type"]), self.p["camera_topic"], self._on_camera,
                                     QUEUE, raw=True)
        if "labels" in gt_parts:
            sub(self.p["gt_labels_topic"], Image, lambda m, info: self._on_msg(m, info, "gt", "labels"))
        if "labels" in pred_parts:
            sub(self.p["labels_topic"], Image, lambda m, info: self._on_msg(m, info, "pred", "labels"))
        if "boxes" in gt_parts or "boxes" in pred_parts:
            detections = message_class("vision_msgs/msg/Detection2DArray")
            if "boxes" in gt_parts:
                sub(self.p["gt_detections_topic"], detections, lambda m, info: self._on_msg(m, info, "gt", "boxes"))
            if "boxes" in pred_parts:
                sub(self.p["detections_topic"], detections, lambda m, info: self._on_msg(m, info, "pred", "boxes"))
        if self.p["done_topic"]:
            sub(self.p["done_topic"], String, self._on_done, LATCHED)

    def _on_camera(self, raw: bytes, info) -> None:
        received_ns = info.get("received_timestamp") or 0
        try:
            self.matcher.add_camera(cdr_header_stamp(raw), received_ns / 1e9 if received_ns else time.time())
        except ValueError as exc:
            self.issues.add("undecodable_camera", str(exc))

    def _on_condition(self, msg: String) -> None:
        self.condition = msg.data

    def _on_done(self, msg: String) -> None:
        try:
            self.player_summary = json.loads(msg.data)
        except json.JSONDecodeError:
            self.player_summary = {"raw": msg.data}
        self._done_at = time.monotonic()

    def _on_msg(self, msg, info, side: str, part: str) -> None:
        self.last_message = time.monotonic()
        # When the middleware received it, not when the executor got round to this callback: with several
        # topics ready at once the callback order says nothing about arrival order.
        received_ns = info.get("received_timestamp") or 0
        now = received_ns / 1e9 if received_ns else time.time()
        try:
            value = self._decode(msg, part, side)
        except (M.MessageError, ValueError) as exc:
            self.issues.add(f"undecodable_{side}", str(exc))
            return
        stamp = M.header_ns(msg)
        if side == "gt":
            match = self.matcher.add_ground_truth(stamp, part, value, condition=self.condition, arrival_s=now)
        else:
            match = self.matcher.add_prediction(stamp, part, value, arrival_s=now)
        if match is not None:
            if match.condition == UNKNOWN_CONDITION:  # the ground truth beat the latched condition's discovery
                match.condition = self.condition
            self.acc.add(match, self.p["bag_name"])

    def _decode(self, msg, part: str, side: str):
        if part == "labels":
            return M.decode_labels(msg)
        # Ground truth of classes the model does not predict is left out (and counted), as offline.
        boxes = M.decode_detections(msg, self.p["thing_classes"], skip_unknown=side == "gt")
        if boxes["unknown_class"]:
            self.issues.counts["gt_boxes_of_unknown_class"] += boxes["unknown_class"]
        return boxes

    def _on_timer(self) -> None:
        now = time.monotonic()
        done = self._done_at is not None and now - self._done_at >= self.p["done_grace"]
        idle = self.p["idle_timeout"] > 0 and now - self.last_message >= self.p["idle_timeout"] and \
            self.matcher.counts["matched"] + self.matcher.pending_ground_truth > 0
        if (done or idle) and not self.finished:
            self.finish("player done" if done else "idle timeout")

    def finish(self, reason: str) -> dict:
        """Count what never matched and write the report (once)."""
        self.finished = True
        counts = self.matcher.finish()
        counts.update({k: v for k, v in self.issues.counts.items()})
        counts["dropped_frames"] = counts.get("unmatched_ground_truth", 0)
        self.acc.add_counts(self.p["bag_name"], counts)
        self.acc.set_bag_info(self.p["bag_name"], issues=self.issues.as_dict(), player=self.player_summary)
        report = write_report(self.acc, self.p["out_dir"], {"mode": "online", "finished_by": reason},
                              figures=self.p["figures"])
        self.get_logger().info(f"report written to {self.p['out_dir']} ({reason}): "
                               f"{counts.get('matched', 0)} frames matched, {counts['dropped_frames']} dropped")
        return report


def main(args: list[str] | None = None) -> int:
    if cli_help.maybe_print_help("evaluator_node", __doc__, _parameter_help(), args):
        return 0
    stop = signals.install()  # before rclpy.init: later signals must not interrupt writing the report
    rclpy.init(args=args)
    node, code = None, 0
    try:
        node = EvaluatorNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not (node.finished and node.p["exit_when_done"]):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, BagError) as exc:  # bad parameters (nothing to compare, a missing message package ...)
        print(f"evaluator_node: {exc}", file=sys.stderr)
        code = 1
    finally:
        stop.closing()
        if node is not None and not node.finished:
            node.finish("shutdown")  # Ctrl-C after `ros2 bag play`: the report is still written
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.reinstall()
    return code


def _parameter_help() -> list[tuple[str, str, str]]:
    return [(name, repr(default), text) for name, (default, text) in PARAMS.items()]


if __name__ == "__main__":
    sys.exit(main())
