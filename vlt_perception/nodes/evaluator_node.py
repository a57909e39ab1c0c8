"""``evaluator_node``: online evaluation of a running perception graph against ground truth replayed from a bag.

Subscribes to predicted labels (mono8, e.g. ``/segmentation_node/out/labels``) and/or detections, the ground-truth
topics and the latched condition topic; pairs them by header stamp with :class:`vlt_perception.bag.matching.
StampMatcher` and writes the same report as the offline ``bag_eval`` (plus end-to-end latency: ground truth
received -> prediction received, and dropped frames = ground truth never answered). The report is written when
``done_topic`` says the player finished (after ``done_grace`` s), after ``idle_timeout`` s without messages (for
``ros2 bag play``), or on shutdown (Ctrl-C). A report written on shutdown before either of the first two is marked
incomplete (``"complete": false`` in report.json, a line in report.md) and the node exits 1: an evaluation that did
not see the whole bag is not a success.

    python -m vlt_perception.nodes.evaluator_node --ros-args -p out_dir:=reports/online \
        -p labels_topic:=/segmentation_node/out/labels
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("evaluator_node needs rclpy: source a ROS 2 distribution, or pip install -r "
                      "requirements/ros.txt and `source tools/env.sh`") from exc

from vlt_perception.bag import BagError
from vlt_perception.bag import messages as M
from vlt_perception.bag.matching import EvaluationAccumulator, StampMatcher, TooManyConditions
from vlt_perception.bag.reader import UNKNOWN_CONDITION, Issues
from vlt_perception.bag.replay import cdr_header_stamp, message_class
from vlt_perception.bag.report import write_report
from vlt_perception.labels import IGNORE_INDEX
from vlt_perception.launch_config import EVALUATOR
from vlt_perception.nodes import parameters
from vlt_perception.nodes.runner import run_node

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Deep reliable queues: in realtime replay a burst must queue here, not vanish (drops belong to the graph).
QUEUE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# How the evaluation ended: these mean the whole bag was seen (the report is complete), anything else does not.
COMPLETE = ("player done", "idle timeout")


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
        self.p = parameters.values(self, parameters.declare_table(self, EVALUATOR))
        gt_parts = [part for part, key in (("labels", "gt_labels_topic"), ("boxes", "gt_detections_topic"))
                    if self.p[key]]
        pred_parts = [part for part, key in (("labels", "labels_topic"), ("boxes", "detections_topic"))
                      if self.p[key]]
        if self.p["confidence_topic"] and "labels" in pred_parts:  # calibration: waits for both per stamp
            pred_parts.append("confidence")
        self.matcher = StampMatcher(gt_parts, pred_parts)  # raises when there is nothing to compare
        classes = self.p["class_names"] if "labels" in pred_parts else None
        things = self.p["thing_classes"] if "boxes" in pred_parts else None
        self.acc = EvaluationAccumulator(classes, things, IGNORE_INDEX)
        if self.p["reference_report"]:
            name, scores = reference_scores(self.p["reference_report"])
            self.acc.set_reference_scores(scores, name)
        self.issues = Issues()
        self.received: Counter = Counter()  # messages per side and part, e.g. pred_confidence
        self.condition = UNKNOWN_CONDITION
        self.player_summary: dict = {}
        self.finished = False
        self.complete = False
        self.last_message = time.monotonic()
        self._done_at: float | None = None
        self._subscribe(gt_parts, pred_parts)
        self.create_timer(0.2, self._on_timer)
        self.get_logger().info(f"evaluating {'+'.join(pred_parts)} against ground truth {'+'.join(gt_parts)}; "
                               f"report to {self.p['out_dir']}")

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
        if "confidence" in pred_parts:
            sub(self.p["confidence_topic"], Image, lambda m, info: self._on_msg(m, info, "pred", "confidence"))
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
        self.received[f"{side}_{part}"] += 1
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
            try:
                self.acc.add(match, self.p["bag_name"])
            except TooManyConditions as exc:  # counted and dropped: the condition strings come from the bag
                self.issues.add("too_many_conditions", str(exc))

    def _decode(self, msg, part: str, side: str):
        if part == "labels":
            return M.decode_labels(msg)
        if part == "confidence":
            return M.decode_confidence(msg)
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
        """Count what never matched and write the report (once). Only the player's done message and the idle
        timeout mean the bag was seen to its end; any other end (shutdown) marks the report incomplete."""
        self.finished = True
        complete = reason in COMPLETE
        if not complete and self._done_at is not None:
            complete, reason = True, f"{reason} after player done"  # only the grace period was cut short
        self.complete = complete
        counts = self.matcher.finish()
        counts.update({k: v for k, v in self.issues.counts.items()})
        counts["dropped_frames"] = counts.get("unmatched_ground_truth", 0)
        self.acc.add_counts(self.p["bag_name"], counts)
        self.acc.set_bag_info(self.p["bag_name"], issues=self.issues.as_dict(), player=self.player_summary)
        report = write_report(self.acc, self.p["out_dir"], {"mode": "online", "finished_by": reason,
                                                           "complete": complete}, figures=self.p["figures"])
        summary = (f"report written to {self.p['out_dir']} ({reason}): {counts.get('matched', 0)} frames matched, "
                   f"{counts['dropped_frames']} dropped")
        if self.p["confidence_topic"] and self.received["pred_labels"] and not self.received["pred_confidence"]:
            self.get_logger().error(
                f"labels arrived but no confidence on {self.p['confidence_topic']}, so no frame could match: a model "
                "without a 'confidence' output needs calibration:=false (replay launch) or confidence_topic:=''")
        if complete:
            self.get_logger().info(summary)
        else:
            self.get_logger().error(f"evaluation incomplete: stopped before the bag finished; {summary}")
        return report

    # --- running (see vlt_perception.nodes.runner.run_node) --------------------------------------------------------

    def serve(self, stop) -> int:
        executor = SingleThreadedExecutor()
        executor.add_node(self)
        while rclpy.ok() and not (self.finished and self.p["exit_when_done"]):
            executor.spin_once(timeout_sec=0.1)
        return 0

    def before_exit(self, code: int) -> int:
        """The report is written however the evaluation ends (Ctrl-C after ``ros2 bag play`` too); an incomplete
        one is not a success (exit 1)."""
        if not self.finished:
            self.finish("shutdown")
        return code or (0 if self.complete else 1)


def main(args: list[str] | None = None) -> int:
    return run_node("evaluator_node", EvaluatorNode, args, doc=__doc__, table=EVALUATOR,
                    expected=(ValueError, BagError))  # bad parameters: nothing to compare, a missing package ...


if __name__ == "__main__":
    sys.exit(main())
