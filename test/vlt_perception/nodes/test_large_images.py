"""Camera-sized frames reach the node started the way ``perception.launch.py`` starts it.

The README's launch line lost most 640x480 frames under default middleware settings: with Fast DDS's built-in
transports a best-effort sample is written into the *sender's* shared-memory segment (512 KB by default), so
large frames are dropped before any receiver setting matters. The launch file gives its nodes the packaged
large-image profile; the camera process needs the same profile (docs/nodes.md says how). Both processes here get
exactly the environment that ``perception_nodes`` gives the node.

Best effort promises no delivery, so the test does not count on every frame arriving: it asks that frames arrive
and are processed, and that the node accounts for every frame it received (processed, dropped as stale, or
counted as an error), whatever the speed of the machine.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from node_graph import Listener, start_node, tiny_onnx, wait_until

from helpers.ros_graph import start_process
from vlt_perception.launch_config import FASTDDS_PROFILE_VARIABLES, perception_nodes
from vlt_perception.nodes.conversions import diagnostic_values

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

CAMERA = str(Path(__file__).resolve().parents[2] / "helpers" / "camera_publisher.py")
PROCESSED = 5  # frames the node must have processed before the camera stops


def _snapshots(listener, name: str) -> list[dict[str, int]]:
    """The node's counters from every /diagnostics message received so far, oldest first."""
    keys = ("received", "processed", "dropped", "errors", "skipped_no_subscribers")
    out = []
    for msg in listener.got("/diagnostics"):
        values = diagnostic_values(msg, f"/{name}:")
        if values:
            out.append({k: int(values[k]) for k in keys})
    return out


def _unaccounted(counts: dict[str, int]) -> int:
    """Frames received but neither processed, dropped, counted as an error nor skipped (no subscriber)."""
    return counts["received"] - counts["processed"] - counts["dropped"] - counts["errors"] - \
        counts["skipped_no_subscribers"]


@pytest.mark.parametrize("height, width", [(480, 640), (1080, 1920)], ids=["640x480", "1920x1080"])
def test_camera_frames_arrive_and_every_received_frame_is_accounted_for(tmp_path, monkeypatch, height, width):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    for var in FASTDDS_PROFILE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    (launch,) = perception_nodes(seg_model=str(model), camera_topic="/camera/image_raw")
    assert launch.env, "the launch configuration must give the node the large-image settings"
    name = f"seg_large_{width}"
    labels_topic = f"/{name}/out/labels"
    camera_log = tmp_path / "camera.log"
    with Listener(f"diagnostics_{width}") as listener:
        listener.listen("/diagnostics", DiagnosticArray)
        # labels has a subscriber, so the node decodes and runs the frames it gets
        listener.listen(labels_topic, Image)
        with start_node("segmentation_node", tmp_path / "node.log", name=name, model_path=str(model),
                        diagnostics_period=0.25, env=launch.env) as node:
            # readiness: the node is active (subscribed) and its outputs are matched with this listener
            wait_until(lambda: listener.diagnostics(name).get("state") == "active"
                       and listener.node.count_publishers(labels_topic) >= 1, 60, "the node active", node)
            # the camera waits for the node's subscription to match, then sends until it is stopped
            with start_process([CAMERA, "--topic", f"/{name}/in/image", "--width", str(width), "--height",
                                str(height), "--rate", "10", "--count", "0"], log_path=camera_log,
                               **launch.env) as camera:
                wait_until(lambda: int(listener.diagnostics(name).get("processed", 0)) >= PROCESSED, 120,
                           f"{PROCESSED} frames processed", node)
                camera.send_signal(signal.SIGINT)
                assert camera.wait(timeout=30) == 0, camera_log.read_text()
            sent = int(re.search(r"sent (\d+) frames", camera_log.read_text()).group(1))
            # once the camera has stopped, the node catches up: every frame it received is accounted for, and
            # the node's latest report counts every labels message heard so far (a report published just before
            # the node's last frame is not the final one: wait for the next)
            settled: dict = {}

            def caught_up() -> bool:
                got, snaps = listener.got(labels_topic), _snapshots(listener, name)
                if snaps and _unaccounted(snaps[-1]) == 0 and len(got) <= snaps[-1]["processed"]:
                    settled.update(labels=got, snapshots=snaps)
                return bool(settled)

            wait_until(caught_up, 60, "every received frame accounted for", node)
        labels, snapshots = settled["labels"], settled["snapshots"]
    final = snapshots[-1]
    assert PROCESSED <= final["processed"] <= final["received"] <= sent, (final, sent)
    assert final["errors"] == 0, final
    # latest-frame hand-over: at any moment at most the frame in the engine and one pending frame are open
    assert all(0 <= _unaccounted(s) <= 2 for s in snapshots), snapshots
    # what came out are the camera's frames, full size, header unchanged
    assert labels and len(labels) <= final["processed"]
    for msg in labels:
        k = int(msg.header.frame_id.removeprefix("camera_"))
        assert 0 <= k < sent and msg.header.stamp.sec == k + 1, msg.header
        assert (msg.height, msg.width, msg.encoding) == (height, width, "mono8")
