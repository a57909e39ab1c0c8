"""``bag_player_node``: plays a rosbag into the running graph for replay evaluation.

Modes (parameter ``mode``): ``realtime`` (log-time spacing, like ``ros2 bag play``), ``rate`` (log-time spacing
divided by ``rate``), ``lockstep`` (one frame at a time: ground truth, then the image, then wait until a message
stamped like that image arrives on ``result_topic``, or ``lockstep_timeout`` passes, which counts the frame as
dropped). Messages are published as the serialized bytes from the bag. When done it publishes a JSON summary on
``done_topic`` (latched) and exits.

    python -m vlt_perception.nodes.bag_player_node --ros-args -p bag:=bags/acdc_fog -p mode:=lockstep \
        -p result_topic:=/segmentation_node/out/labels
"""

from __future__ import annotations

import json
import sys
import threading
import time

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("bag_player_node needs rclpy: source a ROS 2 distribution, or pip install -r "
                      "requirements/ros.txt and `source tools/env.sh`") from exc

from vlt_perception.bag import BagError
from vlt_perception.bag.reader import Issues
from vlt_perception.bag.replay import (
    bag_topics, cdr_header_stamp, lockstep_groups, message_class, playback_offset_s, playback_topics,
    read_playback,
)
from vlt_perception.launch_config import BAG_PLAYER
from vlt_perception.nodes import parameters
from vlt_perception.nodes.runner import run_node

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class BagPlayerNode(Node):
    def __init__(self) -> None:
        super().__init__("bag_player")
        self.p = parameters.values(self, parameters.declare_table(self, BAG_PLAYER))
        if not self.p["bag"]:
            raise BagError("parameter bag: required")
        self.publishers_: dict[str, object] = {}
        self.results: set[int] = set()
        self._result_event = threading.Condition()
        self.counts = {"published": 0, "frames": 0, "results": 0, "timeouts": 0, "resent": 0, "skipped_topics": 0}
        self.issues = Issues()
        self.done_pub = self.create_publisher(String, self.p["done_topic"], LATCHED)
        if self.p["mode"] == "lockstep":
            self.create_subscription(message_class(self.p["result_type"]), self.p["result_topic"], self._on_result,
                                     RELIABLE, raw=True)

    def _on_result(self, raw: bytes) -> None:
        with self._result_event:
            self.results.add(cdr_header_stamp(raw))
            self._result_event.notify_all()

    def create_publishers(self) -> None:
        """One publisher per topic of the bag, created before waiting for the graph, so that discovery is done
        when the first message goes out (a latched /condition published at once would reach a subscriber only
        after its first frames)."""
        selected, skipped = playback_topics(bag_topics(self.p["bag"]), self.p["camera_topics"],
                                            self.p["latched_topics"])
        for topic, reason in skipped.items():
            self.get_logger().warning(f"{topic}: {reason}; not published")
            self.counts["skipped_topics"] += 1
        for topic, msgtype in selected.items():
            try:
                cls = message_class(msgtype)
            except BagError as exc:
                self.get_logger().error(f"{topic}: {exc}; not published")
                self.publishers_[topic] = None
                self.counts["skipped_topics"] += 1
                continue
            latched = topic in self.p["latched_topics"]
            self.publishers_[topic] = self.create_publisher(cls, topic, LATCHED if latched else RELIABLE)

    def publish(self, msg) -> None:
        pub = self.publishers_.get(msg.topic)
        if pub is not None:
            pub.publish(msg.raw)  # rclpy publishes serialized bytes as they are
            self.counts["published"] += 1

    def wait_for_graph(self) -> None:
        """Subscribers on wait_topics (and a publisher of result_topic in lockstep), or a timeout error."""
        deadline = time.monotonic() + self.p["startup_timeout"]
        while time.monotonic() < deadline:
            missing = [t for t in self.p["wait_topics"] if self.count_subscribers(t) == 0]
            if self.p["mode"] == "lockstep" and self.count_publishers(self.p["result_topic"]) == 0:
                missing.append(f"publisher of {self.p['result_topic']}")
            if not missing:
                time.sleep(self.p["settle_time"])
                return
            time.sleep(0.1)
        raise BagError(f"startup_timeout: after {self.p['startup_timeout']} s still waiting for {missing}")

    def play(self) -> dict:
        topics = [topic for topic, pub in self.publishers_.items() if pub is not None]
        if not topics:
            raise BagError(f"{self.p['bag']}: no camera, ground-truth or condition topic to publish")
        messages = read_playback(self.p["bag"], topics, latched_topics=self.p["latched_topics"], issues=self.issues)
        if self.p["mode"] == "lockstep":
            self._play_lockstep(messages)
        else:
            self._play_timed(messages, 1.0 if self.p["mode"] == "realtime" else float(self.p["rate"]))
        summary = {**self.counts, "issues": self.issues.as_dict(), "bag": self.p["bag"], "mode": self.p["mode"]}
        self.done_pub.publish(String(data=json.dumps(summary)))
        return summary

    def _play_timed(self, messages, rate: float) -> None:
        start, first = time.monotonic(), None
        for msg in messages:
            first = msg.log_time_ns if first is None else first
            delay = start + playback_offset_s(msg.log_time_ns, first, rate) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.publish(msg)
            self.counts["frames"] += msg.topic in self.p["camera_topics"]

    def _play_lockstep(self, messages) -> None:
        timeout = float(self.p["lockstep_timeout"])
        for group in lockstep_groups(messages, self.p["camera_topics"]):
            for msg in group.messages:
                if msg.stamp_ns is None and msg is not group.messages[-1]:
                    self.publish(msg)
                    time.sleep(self.p["condition_settle"])  # lets e.g. /condition land before the frame's GT
                else:
                    self.publish(msg)
            if group.stamp_ns is None:
                continue
            self.counts["frames"] += 1
            got = self._wait_result(group.stamp_ns, group.messages[-1], timeout)
            self.counts["results" if got else "timeouts"] += 1
            if not got:
                self.get_logger().warning(f"no result for stamp {group.stamp_ns} within {timeout} s: dropped")


    def _wait_result(self, stamp: int, image, timeout: float) -> bool:
        """Wait for the result stamped ``stamp``, re-publishing ``image`` every ``lockstep_resend`` seconds."""
        deadline = time.monotonic() + timeout
        resend = float(self.p["lockstep_resend"])
        while True:
            left = deadline - time.monotonic()
            step = min(left, resend) if resend > 0 else left
            with self._result_event:
                got = self._result_event.wait_for(lambda: stamp in self.results, max(step, 0.0))
                if got:
                    self.results.discard(stamp)
                    return True
            if time.monotonic() >= deadline:
                return False
            self.publish(image)
            self.counts["resent"] += 1


    # --- running (see vlt_perception.nodes.runner.run_node) --------------------------------------------------------

    def serve(self, stop) -> int:
        """Publishers, wait for the graph, play, publish the summary; result callbacks run in a thread meanwhile."""
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self)
        self._spinning = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self.create_publishers()
        self.wait_for_graph()
        summary = self.play()
        self.get_logger().info(f"playback done: {json.dumps(summary)}")
        time.sleep(0.5)  # let the latched done message and the last frames go out
        return 0

    def _spin(self) -> None:  # callbacks (results) while play() blocks the main thread
        while not self._spinning.is_set() and rclpy.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def before_exit(self, code: int) -> int:
        spinner = getattr(self, "_spinner", None)
        if spinner is not None:
            self._spinning.set()
            if spinner.is_alive():
                spinner.join(timeout=5)
            self._executor.shutdown()
        return code


def main(args: list[str] | None = None) -> int:
    # The first signal interrupts play() (KeyboardInterrupt); later ones, during shutdown, do nothing.
    return run_node("bag_player_node", BagPlayerNode, args, doc=__doc__, table=BAG_PLAYER, expected=(BagError,),
                    raise_first=True)


if __name__ == "__main__":
    sys.exit(main())
