"""multitask_node in its own process: four cameras into one batched node, a silent camera, a camera sending
garbage, and the single-camera topics (real rclpy, private network).

Every camera sends frames of its own colour and size; the tiny multi-task model labels each pixel with its
dominant colour and names the frame's colour in its detections (tiny_multitask_onnx), so outputs that went to the
wrong camera show. The batch window is far longer than any wait here: a batch that waits for a camera which will
not send (silent, or whose frames are all bad) would hang the test until its guard fails it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tiny_multitask_onnx
from node_graph import Listener, header, raw_image, start_node, wait_until

from vlt_perception.nodes.conversions import detection_msg_boxes, diagnostic_values

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

NODE = "multicam"
CAMERAS = ["front", "left", "right", "rear"]
COLOUR = {"front": 0, "left": 1, "right": 2, "rear": 0}  # dominant channel of each camera's frames
SIZE = {"front": (96, 160), "left": (48, 96), "right": (60, 80), "rear": (33, 65)}
GUARD = 90  # s: a hang guard only


def _frame(camera: str, seq: int):
    h, w = SIZE[camera]
    rgb = np.full((h, w, 3), 30, np.uint8)
    rgb[..., COLOUR[camera]] = 230
    msg = raw_image("rgb8", h, w, w * 3, rgb.tobytes(), seq)
    msg.header = header(seq, camera)  # frame_id <camera>_<seq>, stamp 1000 + seq
    return msg


def _garbage(seq: int):
    msg = raw_image("rgb9", 4, 4, 12, bytes(48), seq) if seq % 2 else raw_image("rgb8", 40, 40, 120, bytes(7), seq)
    msg.header = header(seq, "rear")
    return msg


def _types():
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    return Image, Detection2DArray, DiagnosticArray


def _seqs(listener, topic: str, camera: str, first: int = 0) -> set[int]:
    out = set()
    for msg in listener.got(topic):
        name, seq = msg.header.frame_id.rsplit("_", 1)
        assert name == camera, f"{topic} carries a frame of {name}"
        if int(seq) >= first:
            out.add(int(seq))
    return out


def _camera_diagnostics(listener, camera: str) -> dict[str, str]:
    for msg in reversed(listener.got("/diagnostics")):
        values = diagnostic_values(msg, f"/{NODE}: camera {camera}")
        if values:
            return values
    return {}


def _drive(listener, proc, cameras, first: int, done, what: str, period: float = 0.05) -> int:
    """Publish one frame per camera in ``cameras`` every ``period`` s, seq from ``first``, until ``done()``."""
    seq = first
    deadline = time.monotonic() + GUARD
    while not done():
        assert time.monotonic() < deadline, f"timed out after {GUARD} s waiting for {what}"
        assert proc.poll() is None, f"node exited ({proc.returncode}):\n{proc.log_path.read_text()[-4000:]}"
        for camera in cameras:
            listener.publish(f"/{NODE}/{camera}/in/image", _frame(camera, seq))
        seq += 1
        time.sleep(period)
    return seq


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    Image, Detection2DArray, DiagnosticArray = _types()
    tmp = tmp_path_factory.mktemp("multicam")
    model = tiny_multitask_onnx.multitask_model(tmp / "mt.onnx", height=16, width=32)
    with Listener("multicam_listener") as listener:
        for camera in CAMERAS:
            listener.listen(f"/{NODE}/{camera}/out/labels", Image)
            listener.listen(f"/{NODE}/{camera}/out/detections", Detection2DArray)
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node("multitask_node", tmp / "node.log", name=NODE, model_path=str(model), cameras=CAMERAS,
                        batch_window_ms=600000.0, camera_timeout_ms=500.0, score_threshold=0.5,
                        diagnostics_period=0.2) as proc:
            yield listener, proc


def test_four_cameras_one_batched_node_each_output_with_its_own_header(running):
    listener, proc = running
    topics = {c: (f"/{NODE}/{c}/out/labels", f"/{NODE}/{c}/out/detections") for c in CAMERAS}
    _drive(listener, proc, CAMERAS, 0, lambda: all(len(_seqs(listener, t[0], c)) >= 5 for c, t in topics.items()),
           "five labelled frames from every camera")
    for camera, (labels_topic, det_topic) in topics.items():
        # Every frame that was segmented was also detected, with the same header (both from one engine call).
        wait_until(lambda: _seqs(listener, labels_topic, camera) <= _seqs(listener, det_topic, camera), 30,
                   f"{camera}: detections of every segmented frame")
        h, w = SIZE[camera]
        for msg in listener.got(labels_topic):
            seq = int(msg.header.frame_id.rsplit("_", 1)[1])
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1000 + seq, 123)
            assert (msg.height, msg.width) == (h, w)  # at this camera's own resolution
            assert np.all(np.frombuffer(bytes(msg.data), np.uint8) == COLOUR[camera])
        for msg in listener.got(det_topic):
            assert [n for n, _, _ in detection_msg_boxes(msg)] == [tiny_multitask_onnx.DET_CLASSES[COLOUR[camera]]]
            assert all(d.header.frame_id == msg.header.frame_id for d in msg.detections)
    # One engine call carried several cameras: more frames processed than batches run.
    wait_until(lambda: all(int(_camera_diagnostics(listener, c).get("processed", -1)) >=
                           len(_seqs(listener, topics[c][0], c)) for c in CAMERAS), 30,
               "per-camera diagnostics that count the frames seen here")
    diags = {c: _camera_diagnostics(listener, c) for c in CAMERAS}
    processed = sum(int(d["processed"]) for d in diags.values())
    assert processed > int(diags["front"]["batches"]) > 0
    assert all(int(d["errors"]) == 0 and int(d["received"]) >= int(d["processed"]) for d in diags.values())


def test_a_silent_camera_does_not_stall_the_others(running):
    listener, proc = running
    first = 10_000
    flowing = CAMERAS[:-1]  # rear has stopped
    _drive(listener, proc, flowing, first,
           lambda: all(len(_seqs(listener, f"/{NODE}/{c}/out/labels", c, first)) >= 10 for c in flowing),
           "ten frames from each camera while rear is silent")
    assert not _seqs(listener, f"/{NODE}/rear/out/labels", "rear", first)
    wait_until(lambda: _camera_diagnostics(listener, "rear").get("silent") == "True", 30, "rear reported silent")


def test_a_camera_sending_garbage_leaves_the_others_unaffected(running):
    listener, proc = running
    first = 20_000
    before = {c: int(_camera_diagnostics(listener, c).get("errors", 0)) for c in CAMERAS}
    seq = first
    deadline = time.monotonic() + GUARD
    while not all(len(_seqs(listener, f"/{NODE}/{c}/out/labels", c, first)) >= 10 for c in CAMERAS[:-1]):
        assert time.monotonic() < deadline and proc.poll() is None, "no outputs while rear sends garbage"
        for camera in CAMERAS[:-1]:
            listener.publish(f"/{NODE}/{camera}/in/image", _frame(camera, seq))
        listener.publish(f"/{NODE}/rear/in/image", _garbage(seq))
        seq += 1
        time.sleep(0.05)
    assert not _seqs(listener, f"/{NODE}/rear/out/labels", "rear", first)
    wait_until(lambda: int(_camera_diagnostics(listener, "rear").get("errors", 0)) > before["rear"], 30,
               "rear's bad frames counted")
    after = {c: _camera_diagnostics(listener, c) for c in CAMERAS}
    assert all(int(after[c]["errors"]) == before[c] == 0 for c in CAMERAS[:-1])
    assert int(after["rear"]["errors.unknown_encoding"]) > 0 and int(after["rear"]["errors.data_size"]) > 0
    assert proc.poll() is None
    assert "camera rear" in proc.log_path.read_text()  # logged (throttled), naming the camera


def test_without_cameras_the_node_has_the_single_camera_topics(tmp_path):
    """One camera, no `cameras`: ~/in/image -> ~/out/labels and ~/out/detections, both with the input header."""
    Image, Detection2DArray, _ = _types()
    model = tiny_multitask_onnx.multitask_model(tmp_path / "mt.onnx", height=16, width=32)
    name = "mt_single"
    with Listener("mt_single_listener") as listener:
        listener.listen(f"/{name}/out/labels", Image)
        listener.listen(f"/{name}/out/detections", Detection2DArray)
        with start_node("multitask_node", tmp_path / "node.log", name=name, model_path=str(model),
                        score_threshold=0.5) as proc:
            listener.publish_until(f"/{name}/in/image", lambda seq: _frame("left", seq),
                                   lambda: listener.got(f"/{name}/out/labels"), GUARD, "labels", proc)
            labels = listener.got(f"/{name}/out/labels")[0]
            wait_until(lambda: any(m.header == labels.header for m in listener.got(f"/{name}/out/detections")),
                       30, "the detections of the segmented frame")
    det = next(m for m in listener.got(f"/{name}/out/detections") if m.header == labels.header)
    assert labels.header.frame_id.startswith("left_") and (labels.height, labels.width) == SIZE["left"]
    assert np.all(np.frombuffer(bytes(labels.data), np.uint8) == 1)
    assert [n for n, _, _ in detection_msg_boxes(det)] == ["green_thing"]
