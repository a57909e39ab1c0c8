"""Bags are data: a crafted bag must not run code, reach the live graph on foreign topics, write outside its folder
or exhaust memory."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vlt_perception.bag import BagError
from vlt_perception.bag.replay import bag_topics, message_class, playback_topics, read_playback

STORE = get_typestore(Stores.ROS2_KILTED)
CAMERAS = ["/camera/image_raw", "/camera/image_raw/compressed"]


def _cdr(msgtype: str, **fields) -> bytes:
    return bytes(STORE.serialize_cdr(STORE.types[msgtype](**fields), msgtype))


def _twist() -> bytes:
    vec = STORE.types["geometry_msgs/msg/Vector3"]
    return _cdr("geometry_msgs/msg/Twist", linear=vec(x=1.0, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.5))


def _bag_with_its_own_module(root):
    """``root/bags/evil``: a bag whose image connection is typed ``bags.evil/msg/Image`` and whose folder ships
    ``msg.py`` (which would write ``root/ran``), plus a /cmd_vel connection."""
    bag = root / "bags" / "evil"
    bag.parent.mkdir(parents=True)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", "bags.evil/msg/Image", rihs01="RIHS01_" + "0" * 64,
                                    msgdef=STORE.generate_msgdef("sensor_msgs/msg/Image")[0])
        cmd = writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=STORE)
        writer.write(cam, 1, b"\x00\x01\x00\x00" + bytes(40))
        writer.write(cmd, 2, _twist())
    (bag / "msg.py").write_text(f"from pathlib import Path\nPath({str(root / 'ran')!r}).write_text('ran')\n"
                                "class Image:\n    pass\n")
    return bag


def test_a_type_named_by_a_bag_is_never_imported(tmp_path, monkeypatch):
    bag = _bag_with_its_own_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as tools/env.sh or `python -m` from a parent folder would
    types = bag_topics(bag)
    assert types["/camera/image_raw"] == "bags.evil/msg/Image"
    for msgtype in types.values():
        with pytest.raises(BagError, match="not one the player and evaluator handle"):
            message_class(msgtype)
    selected, skipped = playback_topics(types, CAMERAS, ["/condition"])
    assert selected == {} and set(skipped) == {"/camera/image_raw", "/cmd_vel"}
    assert "bags.evil/msg/Image" in skipped["/camera/image_raw"]
    assert not (tmp_path / "ran").exists()
    # the planted module is live: importing the name the bag gives would have run it
    monkeypatch.delitem(sys.modules, "bags.evil.msg", raising=False)
    try:
        importlib.import_module("bags.evil.msg")
        assert (tmp_path / "ran").read_text() == "ran"
    finally:
        for name in ("bags.evil.msg", "bags.evil", "bags"):
            sys.modules.pop(name, None)


def test_the_player_selects_only_camera_ground_truth_and_condition_topics(tmp_path):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=STORE) for topic, msgtype in (
            ("/camera/image_raw", "sensor_msgs/msg/Image"), ("/condition", "std_msgs/msg/String"),
            ("/ground_truth/labels", "sensor_msgs/msg/Image"), ("/cmd_vel", "geometry_msgs/msg/Twist"),
            ("/ground_truth/detections", "std_msgs/msg/String"))}
        header = STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                    frame_id="cam")
        img = _cdr("sensor_msgs/msg/Image", header=header, height=1, width=1, encoding="mono8", is_bigendian=0,
                   step=1, data=np.zeros(1, np.uint8))
        writer.write(conns["/condition"], 1, _cdr("std_msgs/msg/String", data="fog"))
        writer.write(conns["/cmd_vel"], 2, _twist())
        writer.write(conns["/camera/image_raw"], 3, img)
        writer.write(conns["/ground_truth/labels"], 4, img)
        writer.write(conns["/ground_truth/detections"], 5, _cdr("std_msgs/msg/String", data="x"))
    selected, skipped = playback_topics(bag_topics(bag), CAMERAS, ["/condition"])
    assert selected == {"/camera/image_raw": "sensor_msgs/msg/Image", "/condition": "std_msgs/msg/String",
                        "/ground_truth/labels": "sensor_msgs/msg/Image"}
    assert set(skipped) == {"/cmd_vel", "/ground_truth/detections"}
    assert "expected one of ['vision_msgs/msg/Detection2DArray']" in skipped["/ground_truth/detections"]
    played = [m.topic for m in read_playback(bag, list(selected))]
    assert played == ["/condition", "/camera/image_raw", "/ground_truth/labels"]
