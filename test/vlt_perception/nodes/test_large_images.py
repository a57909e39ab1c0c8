"""Camera-sized frames reach the node started the way ``perception.launch.py`` starts it.

The README's launch line lost most 640x480 frames under default middleware settings: with Fast DDS's built-in
transports a best-effort sample is written into the *sender's* shared-memory segment (512 KB by default), so
large frames are dropped before any receiver setting matters. The launch file gives its nodes the packaged
large-image profile; the camera process needs the same profile (docs/nodes.md says how). Both processes here get
exactly the environment that ``perception_nodes`` gives the node.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from node_graph import Listener, start_node, tiny_onnx, wait_until

from helpers.ros_graph import start_process
from vlt_perception.launch_config import FASTDDS_PROFILE_VARIABLES, perception_nodes

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

CAMERA = str(Path(__file__).resolve().parents[2] / "helpers" / "camera_publisher.py")


@pytest.mark.parametrize("height, width", [(480, 640), (1080, 1920)], ids=["640x480", "1920x1080"])
def test_every_frame_arrives_at_10_hz(tmp_path, monkeypatch, height, width):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    for name in FASTDDS_PROFILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    (launch,) = perception_nodes(seg_model=str(model), camera_topic="/camera/image_raw")
    assert launch.env, "the launch configuration must give the node the large-image settings"
    name = f"seg_large_{width}"
    frames = 20
    with Listener(f"diagnostics_{width}") as listener:
        listener.listen("/diagnostics", DiagnosticArray)
        # labels has a subscriber, so the node decodes and runs every frame it gets
        listener.listen(f"/{name}/out/labels", Image)
        with start_node("segmentation_node", tmp_path / "node.log", name=name, model_path=str(model),
                        diagnostics_period=0.25, env=launch.env) as node:
            wait_until(lambda: listener.diagnostics(name), 60, "node diagnostics", node)
            with start_process([CAMERA, "--topic", f"/{name}/in/image", "--width", str(width), "--height",
                                str(height), "--rate", "10", "--count", str(frames)],
                               log_path=tmp_path / "camera.log", **launch.env) as camera:
                assert camera.wait(timeout=120) == 0, (tmp_path / "camera.log").read_text()
            deadline = time.monotonic() + 10
            while int(listener.diagnostics(name)["received"]) < frames and time.monotonic() < deadline:
                time.sleep(0.1)
            received = int(listener.diagnostics(name)["received"])
    assert received == frames, f"the node received {received} of {frames} frames at {width}x{height}"
