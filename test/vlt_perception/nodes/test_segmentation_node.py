"""segmentation_node in its own process against a fixture publisher / listener (real rclpy, private network)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import numpy as np
import pytest
from node_graph import Listener, call_service, raw_image, rgb_image, start_node, stripes, tiny_onnx, wait_until

from helpers.ros_graph import process_env

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

NODE = "segmentation_node"
NS = f"/{NODE}"


def _image_types():
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64
    from vision_msgs.msg import LabelInfo

    return Image, LabelInfo, Float64, DiagnosticArray


@pytest.fixture(scope="module", params=[True, False], ids=["serialized", "typed"])
def running(request, tmp_path_factory):
    """One node (overlay + confidence on, small max_pixels) and a listener on all its outputs; once with images
    exchanged as serialized CDR (the default), once as rclpy message objects."""
    tmp = tmp_path_factory.mktemp("segnode")
    model = tiny_onnx.segmentation_model(tmp / "seg.onnx", height=16, width=32)
    Image, LabelInfo, Float64, DiagnosticArray = _image_types()
    with Listener("seg_test_listener") as listener:
        for out in ("labels", "color", "overlay", "confidence"):
            listener.listen(f"{NS}/out/{out}", Image)
        listener.listen(f"{NS}/out/label_info", LabelInfo, latched=True)
        listener.listen(f"{NS}/out/latency_ms", Float64)
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node(NODE, tmp / "node.log", model_path=str(model), publish_overlay=True,
                        publish_confidence=True, max_pixels=100_000, diagnostics_period=0.2,
                        serialized_messages=request.param) as proc:
            yield listener, proc, tmp


def _answered(listener, seq):
    return any(m.header.frame_id == f"camera_{seq}" for m in listener.got(f"{NS}/out/labels"))


def test_outputs_carry_the_input_header_and_sizes(running):
    listener, proc, _ = running
    rgb = stripes(48, 96)
    outputs = ("labels", "color", "overlay", "confidence")

    before = {o: len(listener.got(f"{NS}/out/{o}")) for o in outputs}  # the module's node may have answered

    def mine(out):
        return listener.got(f"{NS}/out/{out}")[before[out]:]

    def frames_on(out):
        return {m.header.frame_id: m for m in mine(out)}

    def complete():
        """The frames answered on all four outputs."""
        return set.intersection(*(set(frames_on(o)) for o in outputs))

    sent = listener.publish_until(f"{NS}/in/image", lambda seq: rgb_image(rgb, seq), complete, 60,
                                  "one frame answered on all four outputs", proc)
    # every output refers to a frame we sent, with its header unchanged
    for out in outputs:
        for msg in mine(out):
            seq = int(msg.header.frame_id.removeprefix("camera_"))
            assert 0 <= seq < sent, (out, msg.header.frame_id)
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1000 + seq, 123), out
            assert (msg.height, msg.width) == (48, 96), out
    frame_id = min(complete(), key=lambda f: int(f.removeprefix("camera_")))
    by_topic = {o: frames_on(o)[frame_id] for o in outputs}  # the four outputs of one frame
    labels_msg = by_topic["labels"]
    assert labels_msg.encoding == "mono8" and labels_msg.step == 96
    labels = np.frombuffer(bytes(labels_msg.data), np.uint8).reshape(48, 96)
    assert set(np.unique(labels)) <= {0, 1, 2, 255}  # within the class range
    for c in range(3):
        assert np.all(labels[:, c * 32 + 4 : (c + 1) * 32 - 4] == c)
    color = by_topic["color"]
    assert color.encoding == "rgb8" and color.step == 96 * 3
    colour = np.frombuffer(bytes(color.data), np.uint8).reshape(48, 96, 3)
    assert colour[10, 10].tolist() == [255, 0, 0] and colour[10, 80].tolist() == [0, 0, 255]
    assert by_topic["overlay"].encoding == "rgb8"
    conf = by_topic["confidence"]
    assert conf.encoding == "32FC1" and conf.step == 96 * 4
    confidence = np.frombuffer(bytes(conf.data), np.float32).reshape(48, 96)
    assert np.all((confidence > 0.3) & (confidence <= 1.0))
    wait_until(lambda: listener.got(f"{NS}/out/label_info"), 10, "label_info")
    info = listener.got(f"{NS}/out/label_info")[0]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "red"), (1, "green"), (2, "blue")]
    wait_until(lambda: listener.got(f"{NS}/out/latency_ms"), 10, "latency")
    assert all(m.data > 0 for m in listener.got(f"{NS}/out/latency_ms"))


MALFORMED = {
    "unknown_encoding": lambda seq: raw_image("rgb9", 4, 4, 12, bytes(48), seq),
    "bad_step": lambda seq: raw_image("rgb8", 4, 4, 11, bytes(44), seq),
    "data_size": lambda seq: raw_image("rgb8", 4, 4, 12, bytes(40), seq),
    "zero_size": lambda seq: raw_image("rgb8", 0, 4, 12, b"", seq),
    "too_large": lambda seq: raw_image("mono8", 1000, 1000, 1000, bytes(10), seq),  # over max_pixels=100000
}


def _truncated_cdr(seq):
    """The first 30 bytes of a serialized rgb8 frame: only a raw publisher can send this."""
    from rclpy.serialization import serialize_message

    return serialize_message(rgb_image(stripes(48, 96), seq))[:30]


def test_malformed_frames_are_skipped_counted_and_the_node_keeps_answering(running, request):
    listener, proc, tmp = running
    malformed = dict(MALFORMED)
    if "serialized" in request.node.callspec.id:
        malformed["bad_serialization"] = _truncated_cdr
    good = stripes(48, 96)
    # the input is matched before the malformed frames go out: best effort keeps no frame for a late reader
    listener.publish_until(f"{NS}/in/image", lambda s: rgb_image(good, 400 + s),
                           lambda: any(_answered(listener, s) for s in range(400, 500)), 30,
                           "an answer before the malformed frames", proc)
    numbers = itertools.count(500)
    for kind, make in malformed.items():
        # several of each (sent until the node has counted two): counted every time, logged once per kind
        listener.publish_until(f"{NS}/in/image", lambda _, make=make: make(next(numbers)),
                               lambda kind=kind: int(listener.diagnostics(NODE).get(f"errors.{kind}", 0)) >= 2,
                               30, f"two frames of kind {kind} counted", proc, period=0.05)
    first_good = next(numbers)
    listener.publish_until(f"{NS}/in/image", lambda s: rgb_image(good, first_good + s),
                           lambda: any(_answered(listener, s) for s in range(first_good, first_good + 400)),
                           30, "an answer after the malformed frames", proc)
    values = listener.diagnostics(NODE)
    assert all(int(values[f"errors.{kind}"]) >= 2 for kind in malformed), values
    assert values["engine"] == "onnxruntime" and "CPUExecutionProvider" in values["providers"]
    assert float(values["latency_median_ms"]) > 0
    assert proc.poll() is None
    log = (tmp / "node.log").read_text()
    for kind_text in ("unsupported encoding", "step", "expected step*height", "zero-size", "max_pixels"):
        assert kind_text in log
    if "bad_serialization" in malformed:
        assert "are not a serialized sensor_msgs/msg/Image" in log
    # the later frames of each kind were held back by the 5 s throttle: reported when the window closes, although
    # no later error of that kind arrives
    wait_until(lambda: "more frame(s) of kind unknown_encoding" in (tmp / "node.log").read_text(), 20,
               "the suppressed errors reported when the throttle window closed", proc)


def test_bad_parameter_values_are_rejected_with_a_reason(running):
    listener, proc, _ = running
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = listener.node.create_client(SetParameters, f"{NS}/set_parameters")

    def set_param(name, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return call_service(client, request, f"set {name}").results[0]

    rejected = set_param("precision", "fp13")
    assert not rejected.successful and "precision must be one of" in rejected.reason
    # what model and which runtime run is fixed at start-up: no participant of the graph can change them
    for name, value in (("model_path", "/tmp/other.onnx"), ("engine", "onnxruntime"), ("providers", ["X"])):
        rejected = set_param(name, value)
        assert not rejected.successful and "read-only" in rejected.reason, name
    rejected = set_param("overlay_alpha", 1.5)
    assert not rejected.successful and rejected.reason
    assert set_param("overlay_alpha", 0.25).successful


@pytest.mark.timeout(120)
def test_missing_model_exits_non_zero_with_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", f"vlt_perception.nodes.{NODE}", "--ros-args", "-p",
                             f"model_path:={tmp_path / 'missing.onnx'}"], env=process_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "missing.onnx: model not found" in result.stdout + result.stderr
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf")
    result = subprocess.run([sys.executable, "-m", f"vlt_perception.nodes.{NODE}", "--ros-args", "-p",
                             f"model_path:={corrupt}"], env=process_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "corrupt.onnx" in result.stdout + result.stderr


def test_compressed_input_survives_corrupt_jpeg(tmp_path):
    from vlt_perception.nodes.conversions import rgb_to_compressed
    from node_graph import header

    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    Image, _, _, DiagnosticArray = _image_types()
    good = rgb_to_compressed(stripes(48, 96), header(0), "png")
    jpeg = rgb_to_compressed(stripes(48, 96), header(0), "jpeg")
    bad = {"truncated": bytes(jpeg.data)[: len(jpeg.data) // 2], "garbage": b"\x00\x01garbage" * 10}
    name = "seg_compressed"
    NS = f"/{name}"  # noqa: N806 - a node of its own, apart from the module's
    with Listener("seg_compressed_listener") as listener:
        listener.listen(f"{NS}/out/labels", Image)
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node(NODE, tmp_path / "node.log", name=name, model_path=str(model), input_type="compressed",
                        diagnostics_period=0.2) as proc:

            def good_frames(first):
                def make(seq):
                    good.header = header(first + seq)
                    return good
                return make

            def answered_after(first):
                return lambda: any(int(m.header.frame_id.split("_")[1]) >= first
                                   for m in listener.got(f"{NS}/out/labels"))

            listener.publish_until(f"{NS}/in/compressed", good_frames(0), answered_after(0), 60, "first labels",
                                   proc)
            corrupt = list(bad.values())

            def corrupt_frame(i):
                msg = rgb_to_compressed(stripes(8, 8), header(1000 + i), "png")
                msg.data = corrupt[i % len(corrupt)]
                return msg

            # corrupt frames (truncated and garbage in turn) until the node has counted several
            listener.publish_until(f"{NS}/in/compressed", corrupt_frame,
                                   lambda: int(listener.diagnostics(name).get("errors.corrupt_compressed", 0)) >= 4,
                                   30, "corrupt frames counted", proc, period=0.05)
            listener.publish_until(f"{NS}/in/compressed", good_frames(2000), answered_after(2000), 30,
                                   "labels after the corrupt frames", proc)
    labels = listener.got(f"{NS}/out/labels")[0]
    assert (labels.height, labels.width, labels.encoding) == (48, 96, "mono8")


def test_no_subscriber_no_work(tmp_path):
    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    _, _, _, DiagnosticArray = _image_types()
    name = "seg_idle"
    with Listener("seg_idle_listener") as listener:
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node(NODE, tmp_path / "node.log", name=name, model_path=str(model),
                        diagnostics_period=0.2) as proc:
            rgb = stripes(48, 96)
            listener.publish_until(f"/{name}/in/image", lambda seq: rgb_image(rgb, seq),
                                   lambda: int(listener.diagnostics(name).get("received", 0)) >= 5, 60,
                                   "5 frames received", proc)
            values = listener.diagnostics(name)
    assert int(values["processed"]) == 0 and int(values["skipped_no_subscribers"]) >= 5


def test_overload_drops_stale_frames_instead_of_queueing_them(tmp_path):
    """Camera at 30 Hz, model held at >= 150 ms a frame: stale frames are dropped (and counted) rather than
    queued, and every frame received is accounted for.

    The model is slow by construction (``min_inference_ms``), not by the luck of a loaded machine, and nothing
    here bounds wall-clock time: the checks are counts and lower bounds that hold on a laptop, a GPU box and a busy
    CI runner alike.
    """
    engine_ms = 150.0
    seconds, camera_hz = 5.0, 30
    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    Image, _, Float64, DiagnosticArray = _image_types()
    name = "seg_overload"
    rgb = stripes(48, 96)

    def accounted(values):
        return int(values.get("received", 0)) == sum(int(values.get(k, 0)) for k in (
            "processed", "dropped", "errors", "skipped_no_subscribers"))

    with Listener("seg_overload_listener") as listener:
        listener.listen(f"/{name}/out/labels", Image)
        listener.listen(f"/{name}/out/latency_ms", Float64)
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node(NODE, tmp_path / "node.log", name=name, model_path=str(model), threads=1,
                        min_inference_ms=engine_ms, warmup=False, diagnostics_period=0.25) as proc:
            listener.publish_until(f"/{name}/in/image", lambda seq: rgb_image(rgb, seq),
                                   lambda: listener.got(f"/{name}/out/labels"), 60, "first labels", proc)
            first = 10_000
            seq = first
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                listener.publish(f"/{name}/in/image", rgb_image(rgb, seq))
                seq += 1
                time.sleep(1 / camera_hz)  # the camera's frame rate
            elapsed = time.monotonic() - start
            # the node catches up once the camera stops: every frame it received is processed, dropped or counted
            wait_until(lambda: accounted(listener.diagnostics(name)) and
                       int(listener.diagnostics(name).get("processed", 0)) > 0, 60,
                       "every received frame accounted for", proc)
            values = listener.diagnostics(name)
        burst = [int(m.header.frame_id.removeprefix("camera_")) for m in listener.got(f"/{name}/out/labels")]
        burst = [s for s in burst if s >= first]
        latencies = [m.data for m in listener.got(f"/{name}/out/latency_ms")]
    assert float(values["inference_p90_ms"]) >= engine_ms  # the pacing really holds each frame
    # the node's latency runs from receipt to publication and so includes the (paced) engine call
    assert latencies and min(latencies) >= engine_ms, latencies
    assert float(values["latency_p90_ms"]) >= float(values["inference_p90_ms"]), values
    assert int(values["dropped"]) > 0, values  # a queue would process every frame late instead
    assert int(values["errors"]) == 0, values
    # a paced engine cannot process more than one frame per engine_ms, however fast the machine; however slow it
    # is, the frame pending when the camera stopped is still processed
    assert 1 <= len(burst) <= (elapsed + 1.0) * 1e3 / engine_ms + 1, burst
    # frames are answered in order, and the stale ones in between were dropped, not answered late
    assert burst == sorted(set(burst)) and all(first <= s < seq for s in burst), burst


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT")] * 3 + [("SIGTERM",), ("SIGINT", "SIGTERM")],
                         ids=["2xSIGINT-a", "2xSIGINT-b", "2xSIGINT-c", "SIGTERM", "SIGINT+SIGTERM"])
def test_signals_during_a_frame_end_in_a_clean_exit(tmp_path, signals):
    """Ctrl-C twice (or ros2 launch's SIGINT on top of the group's), 50 ms apart while a frame is in the engine,
    or one SIGTERM: exit code 0, no traceback, within a bounded time."""
    import signal as signal_module

    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    Image, _, _, _ = _image_types()
    name = "seg_signals"
    rgb = stripes(48, 96)
    log = tmp_path / "node.log"
    with Listener("seg_signals_listener") as listener:
        listener.listen(f"/{name}/out/labels", Image)
        with start_node(NODE, log, name=name, model_path=str(model), min_inference_ms=1500.0,
                        warmup=False) as proc:
            listener.publish_until(f"/{name}/in/image", lambda seq: rgb_image(rgb, seq),
                                   lambda: listener.got(f"/{name}/out/labels"), 60, "first labels", proc, period=0.05)
            # frames kept coming while the first was in the engine: the worker is on the next one now (1.5 s)
            listener.publish(f"/{name}/in/image", rgb_image(rgb, 99))
            time.sleep(0.3)
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(0.05)
                proc.send_signal(getattr(signal_module, sig))
            code = proc.wait(timeout=30)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


def test_lifecycle_without_autostart(tmp_path):
    """autostart:=false: frames keep coming, but nothing is processed until configure + activate arrive on
    ~/change_state, nor while deactivated; the same stream of frames is answered once active (the control)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from vlt_perception.nodes.conversions import diagnostic_values

    model = tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32)
    Image, _, _, _ = _image_types()
    name = "seg_lifecycle"
    image_topic, labels_topic = f"/{name}/in/image", f"/{name}/out/labels"
    rgb = stripes(48, 96)
    with Listener("seg_lifecycle_listener") as listener:
        listener.listen(labels_topic, Image)
        listener.listen("/diagnostics", DiagnosticArray)
        change = listener.node.create_client(ChangeState, f"/{name}/change_state")
        get = listener.node.create_client(GetState, f"/{name}/get_state")

        def call(client, request, timeout=10.0):
            """The response, or None when it did not come (under load the first response after discovery can
            be lost: the client's response reader may match after the request went out)."""
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            return future.result() if future.done() else None

        def state():
            for _ in range(5):
                response = call(get, GetState.Request())
                if response is not None:
                    return response.current_state.label
            raise AssertionError("get_state never answered")

        after = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
                 Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured"}

        def transition(tid):
            response = call(change, ChangeState.Request(transition=Transition(id=tid)), timeout=20.0)
            if response is not None:
                return response.success
            return state() == after[tid]  # the transition may have run with its response lost

        def labelled(lo, hi):
            """The frame numbers in [lo, hi) answered on labels."""
            seqs = (int(m.header.frame_id.removeprefix("camera_")) for m in listener.got(labels_topic))
            return sorted(s for s in seqs if lo <= s < hi)

        def reports():
            """The node's /diagnostics values, oldest first (published from configure on, active or not)."""
            found = (diagnostic_values(m, f"/{name}:") for m in listener.got("/diagnostics"))
            return [v for v in found if v]

        def send_while_not_active(first, since=None):
            """Send frames numbered from ``first`` every 0.05 s until 10 have gone out and (``since``: the number
            of reports before the transition) the node has reported on /diagnostics twice since; returns the
            node's reports from its first report as inactive after the transition on (reports come in order: all
            later ones were published after it). A report from before the transition is never taken for one after
            it, even when the node was active too briefly to report in between."""
            reported = since is not None
            if reported:
                wait_until(lambda: any(r["state"] == "inactive" for r in reports()[since:]), 30,
                           "the node reporting itself inactive", proc)
                start = since + next(i for i, r in enumerate(reports()[since:]) if r["state"] == "inactive")
            else:
                start = len(reports()) - 1
            seq, mark = first, None
            deadline = time.monotonic() + 60
            while mark is None or (reported and len(reports()) < mark + 2):
                assert time.monotonic() < deadline, "no diagnostics while frames were sent"
                assert proc.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
                listener.publish(image_topic, rgb_image(rgb, seq))
                seq += 1
                if seq - first == 10:
                    mark = len(reports())
                time.sleep(0.05)
            return reports()[start:]

        def answered_once_active(first):
            """The control: the same stream of frames, now answered."""
            listener.publish_until(image_topic, lambda seq: rgb_image(rgb, first + seq),
                                   lambda: labelled(first, first + 100_000), 30, f"labels from frame {first}", proc)

        with start_node(NODE, tmp_path / "node.log", name=name, model_path=str(model), autostart=False,
                        diagnostics_period=0.2) as proc:
            assert change.wait_for_service(timeout_sec=30) and get.wait_for_service(timeout_sec=10)
            assert state() == "unconfigured"
            send_while_not_active(0)  # nothing reports before configure
            since = len(reports())
            assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
            # configured, not active: the outputs exist (and are matched here), the input is not taken
            wait_until(lambda: listener.node.count_publishers(labels_topic) >= 1, 30, "the labels publisher", proc)
            inactive = send_while_not_active(100, since)
            assert inactive and all(r["state"] == "inactive" for r in inactive), inactive
            assert all((r["received"], r["processed"]) == ("0", "0") for r in inactive), inactive
            assert transition(Transition.TRANSITION_ACTIVATE)
            answered_once_active(1000)
            # outputs come in frame order on one writer: what the node had answered before frame 1000 came first
            assert not labelled(0, 1000)

            since = len(reports())
            assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
            inactive = send_while_not_active(2000, since)
            assert inactive and all(r["state"] == "inactive" for r in inactive), inactive
            counts = {(r["received"], r["processed"], r["dropped"]) for r in inactive}
            assert len(counts) == 1, inactive  # frames kept coming, the counters did not move
            assert transition(Transition.TRANSITION_ACTIVATE)
            answered_once_active(3000)
            assert not labelled(2000, 3000)
            wait_until(lambda: int(reports()[-1]["received"]) > int(inactive[-1]["received"]), 30,
                       "the counters moving again once active", proc)

            assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
            assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
            answered_once_active(4000)
            assert proc.poll() is None
