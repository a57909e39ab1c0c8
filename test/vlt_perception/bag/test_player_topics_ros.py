"""The bag player in a real graph republishes only evaluation topics: a bag's /cmd_vel never reaches the graph.
Runs only inside a private network namespace (``./vlt test``; see test/conftest.py)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from helpers.ros_graph import RosParticipant, start_process
from vlt_perception.bag import messages as M
from vlt_perception.bag.typestore import get_bag_typestore

IMAGE, TWIST, STRING = "sensor_msgs/msg/Image", "geometry_msgs/msg/Twist", "std_msgs/msg/String"


def _bag(path, frames: int = 3):
    store = get_bag_typestore()
    vec = store.types["geometry_msgs/msg/Vector3"]
    twist = store.serialize_cdr(store.types[TWIST](linear=vec(x=2.0, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=1.0)),
                                TWIST)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", IMAGE, typestore=store)
        cmd = writer.add_connection("/cmd_vel", TWIST, typestore=store)
        cond = writer.add_connection("/condition", STRING, typestore=store)
        writer.write(cond, 1, store.serialize_cdr(M.string_msg(store, "clear"), STRING))
        for i in range(frames):
            stamp = (i + 1) * 50_000_000
            writer.write(cmd, stamp - 1, twist)
            writer.write(cam, stamp, store.serialize_cdr(M.image_msg(store, np.zeros((4, 6, 3), np.uint8), stamp),
                                                          IMAGE))
    return path


@pytest.mark.ros
def test_the_player_never_publishes_a_bags_foreign_topics(tmp_path):
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Image

    bag = _bag(tmp_path / "bag")
    got = {"/camera/image_raw": 0, "/cmd_vel": 0}
    seen_cmd_vel_publishers = []
    participant = RosParticipant("player_topics_probe")
    try:
        for topic, cls in (("/camera/image_raw", Image), ("/cmd_vel", Twist)):
            participant.node.create_subscription(cls, topic, lambda msg, t=topic: got.__setitem__(t, got[t] + 1), 10)
        log = tmp_path / "player.log"
        args = ["-m", "vlt_perception.nodes.bag_player_node", "--ros-args", "-p", f"bag:={bag}",
                "-p", "mode:=realtime", "-p", "wait_topics:=[/camera/image_raw]"]
        with start_process(args, log) as player:
            deadline = time.monotonic() + 60
            while player.poll() is None and time.monotonic() < deadline:
                seen_cmd_vel_publishers.append(participant.node.count_publishers("/cmd_vel"))
                time.sleep(0.05)
            assert player.poll() == 0, log.read_text()
        deadline = time.monotonic() + 5
        while got["/camera/image_raw"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        participant.close()
    summary = json.loads(re.search(r"playback done: (\{.*\})", log.read_text()).group(1))
    assert summary["skipped_topics"] == 1 and summary["published"] == 3 + 1, summary  # frames + /condition
    assert got == {"/camera/image_raw": 3, "/cmd_vel": 0}
    assert not any(seen_cmd_vel_publishers)
