"""Replay logic without rclpy: CDR header stamps, lock-step frame groups, timing, launch configuration."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from vlt_perception.bag import messages as M
from vlt_perception.bag import BagError
from vlt_perception.bag.replay import (
    PlaybackMessage, bag_topics, cdr_header_stamp, has_header, lockstep_groups, message_class, playback_offset_s, read_playback,
    replay_eval_nodes,
)
from vlt_perception.bag.typestore import get_bag_typestore
from vlt_perception.bag.writer import write_records_bag
from vlt_perception.launch_config import ConfigError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def model_here(tmp_path, monkeypatch):
    """The launch configuration checks that the model exists: the tests run where m.onnx is."""
    (tmp_path / "m.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)


def test_header_stamp_from_cdr_bytes():
    store = get_bag_typestore()
    stamp = 1_700_000_123_456_789_012
    for msg, typ in ((M.labels_msg(store, np.zeros((2, 2), np.uint8), stamp), "sensor_msgs/msg/Image"),
                     (M.detections_msg(store, [], [], ["car"], stamp), "vision_msgs/msg/Detection2DArray")):
        assert cdr_header_stamp(bytes(store.serialize_cdr(msg, typ))) == stamp
        assert has_header(typ)
    assert not has_header("std_msgs/msg/String")
    with pytest.raises(ValueError, match="too short"):
        cdr_header_stamp(b"\x00\x01\x00\x00")


def _msg(topic, stamp, log):
    return PlaybackMessage(topic, "x", log, b"", stamp)


def test_lockstep_groups_put_ground_truth_and_condition_before_their_image():
    stream = [
        _msg("/condition", None, 0), _msg("/cam", 1, 0), _msg("/gt", 1, 1),
        _msg("/gt", 3, 2),  # ground truth of frame 3 before frame 2's image (out of order)
        _msg("/cam", 2, 3), _msg("/gt", 2, 4),
        _msg("/condition", None, 5), _msg("/cam", 3, 6),
        _msg("/gt", 9, 7),  # ground truth whose image never comes
    ]
    groups = list(lockstep_groups(stream, ["/cam"]))
    as_list = [(g.stamp_ns, [(m.topic, m.stamp_ns) for m in g.messages]) for g in groups]
    assert as_list == [
        (1, [("/condition", None), ("/gt", 1), ("/cam", 1)]),
        (2, [("/gt", 2), ("/cam", 2)]),
        (3, [("/condition", None), ("/gt", 3), ("/cam", 3)]),
        (None, [("/gt", 9)]),
    ]


def test_read_playback_streams_a_real_bag(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    assert bag_topics(tmp_path / "bag") == {
        "/camera/image_raw": "sensor_msgs/msg/Image", "/condition": "std_msgs/msg/String",
        "/ground_truth/labels": "sensor_msgs/msg/Image", "/ground_truth/detections": "vision_msgs/msg/Detection2DArray"}
    messages = list(read_playback(tmp_path / "bag", latched_topics=["/condition"]))
    groups = list(lockstep_groups(messages, ["/camera/image_raw"]))
    assert [g.stamp_ns for g in groups] == [f.stamp_ns for f in _frames(tmp_path / "bag")]
    first = [m.topic for m in groups[0].messages]
    assert first == ["/condition", "/ground_truth/labels", "/ground_truth/detections", "/camera/image_raw"]
    assert [m.topic for m in groups[2].messages][0] == "/condition"  # fog starts at the third frame
    assert all(m.latched == (m.topic == "/condition") for m in messages)


def _frames(bag):
    from vlt_perception.bag.reader import BagFrameReader

    with BagFrameReader(bag) as reader:
        return list(reader.frames())


def test_playback_offset():
    assert playback_offset_s(3_000_000_000, 1_000_000_000, 1.0) == 2.0
    assert playback_offset_s(3_000_000_000, 1_000_000_000, 4.0) == 0.5
    with pytest.raises(ValueError):
        playback_offset_s(0, 0, 0.0)


def _merged(parameters: list) -> dict:
    """A launch Node's parameters as the node sees them: later dicts override earlier ones (files are skipped)."""
    return {k: v for entry in parameters if isinstance(entry, dict) for k, v in entry.items()}


def test_replay_eval_nodes(tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    seg, evaluator, player = replay_eval_nodes(bag=str(bag), model="m.onnx", out="rep", mode="rate", rate="2.5",
                                               namespace="replay")
    assert seg.executable == "segmentation_node" and ("~/in/image", "/camera/image_raw") in seg.remappings
    params = _merged(seg.parameters)
    assert params["model_path"] == "m.onnx" and params["publish_confidence"] is True  # calibration by default
    assert player.parameters[0]["result_topic"] == "/replay/segmentation_node/out/labels"
    assert evaluator.parameters[0]["labels_topic"] == player.parameters[0]["result_topic"]
    confidence = "/replay/segmentation_node/out/confidence"
    assert evaluator.parameters[0]["confidence_topic"] == confidence
    assert player.parameters[0]["wait_topics"][-2:] == [player.parameters[0]["result_topic"], confidence]
    assert player.parameters[0]["rate"] == 2.5 and player.parameters[0]["mode"] == "rate"
    assert evaluator.parameters[0]["out_dir"] == "rep" and evaluator.parameters[0]["bag_name"] == "bag"
    assert evaluator.parameters[0]["camera_topic"] == "/camera/image_raw"
    seg, evaluator, player = replay_eval_nodes(bag=str(bag), model="m.onnx", calibration="false")
    assert "publish_confidence" not in _merged(seg.parameters) and evaluator.parameters[0]["confidence_topic"] == ""
    assert player.parameters[0]["wait_topics"][-1] == player.parameters[0]["result_topic"]
    with pytest.raises(ConfigError, match="calibration"):
        replay_eval_nodes(bag=str(bag), model="m.onnx", calibration="maybe")
    seg, evaluator, _ = replay_eval_nodes(bag=str(bag), model="m.onnx", compressed="true")
    assert ("~/in/compressed", "/camera/image_raw/compressed") in seg.remappings
    assert evaluator.parameters[0]["camera_topic"] == "/camera/image_raw/compressed"
    assert evaluator.parameters[0]["camera_type"] == "sensor_msgs/msg/CompressedImage"
    with pytest.raises(ConfigError, match="bag: .* does not exist"):
        replay_eval_nodes(bag=str(tmp_path / "nope"), model="m.onnx")
    with pytest.raises(ConfigError, match="mode"):
        replay_eval_nodes(bag=str(bag), model="m.onnx", mode="fast")
    with pytest.raises(ConfigError, match="rate"):
        replay_eval_nodes(bag=str(bag), model="m.onnx", rate="-1")


def test_launch_file_declares_every_argument_of_the_config():
    """launch/launch_ros are not installable here; check the file's arguments against replay_eval_nodes."""
    import inspect

    tree = ast.parse((ROOT / "launch" / "replay_eval.launch.py").read_text())
    arguments = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                     and node.targets[0].id == "ARGUMENTS")
    names = {key.value for key in arguments.keys}
    params = set(inspect.signature(replay_eval_nodes).parameters) - {"topics"}
    assert names == params


def test_message_class():
    assert message_class("std_msgs/msg/String").__name__ == "String"
    with pytest.raises(BagError, match="'no_such_msgs/msg/Thing' is not one the player and evaluator handle"):
        message_class("no_such_msgs/msg/Thing")


def test_replay_launch_is_an_evaluation_job(tmp_path, monkeypatch):
    """The evaluator's exit ends the launch; all three processes get the large-image middleware settings."""
    from vlt_perception.bag.replay import EvaluationFailed, evaluation_finished

    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)
    bag = tmp_path / "bag"
    bag.mkdir()
    seg, evaluator, player = replay_eval_nodes(bag=str(bag), model="m.onnx")
    assert [n.ends_launch for n in (seg, evaluator, player)] == [False, True, False]
    profile = seg.env["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert Path(profile).is_file() and player.env == seg.env == evaluator.env
    assert "finished" in evaluation_finished(0)
    with pytest.raises(EvaluationFailed, match="exited with 3"):
        evaluation_finished(3)


def test_replay_launch_file_ends_the_launch_when_the_evaluator_exits(tmp_path, monkeypatch):
    """launch / launch_ros are not installable here: stand-ins record what the launch file builds."""
    import types

    from helpers.fake_launch import load_launch_file

    module, _ = load_launch_file(monkeypatch, ROOT / "launch" / "replay_eval.launch.py")
    description = module.generate_launch_description()
    bag = tmp_path / "bag"
    bag.mkdir()
    context = {name: default for name, (default, _) in module.ARGUMENTS.items()}
    context.update(bag=str(bag), model="m.onnx")
    actions = description[-1].kwargs["function"](context)
    nodes = [a for a in actions if "executable" in a.kwargs]
    handlers = [a for a in actions if "executable" not in a.kwargs]
    assert [n.kwargs["executable"] for n in nodes] == ["segmentation_node", "evaluator_node", "bag_player_node"]
    assert all(n.kwargs["additional_env"] == replay_eval_nodes(bag=str(bag), model="m.onnx")[0].env for n in nodes)
    (handler,) = [h for h in handlers if h.args[0].kwargs["target_action"] is nodes[1]]
    on_exit = handler.args[0]
    assert on_exit.kwargs["target_action"] is nodes[1]
    (emit,) = on_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=0), None)
    assert "report written" in emit.kwargs["event"].kwargs["reason"]
    with pytest.raises(RuntimeError, match="exited with 2"):
        on_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=2), None)
