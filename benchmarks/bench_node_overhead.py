"""End-to-end overhead of segmentation_node at 1920x1080: publish -> labels received, minus engine time.

The node runs in its own process (as deployed); this process publishes rgb8 frames slowly enough that none is
dropped and records when each frame's labels come back. Overhead = end-to-end latency - engine time (the
engine's own ``infer`` time, reported by the node on /diagnostics), i.e. DDS transport both ways, decoding,
resizing / normalising, label resize to 1080p and message conversion.

    source tools/env.sh && python benchmarks/bench_node_overhead.py [--transport SHM_BIG] [--model m.onnx]
        [--node-modes serialized,typed] [--client serialized|typed]

Every invocation measures the node and a bare rclpy echo node (which receives the same frames and republishes a
mono8 image of the same size, the floor any Python node pays for DDS) in the same run, alternating them
``--rounds`` times, and prints the node's end-to-end latency above the echo's (goal: at most 1 ms at 1080p with a
tiny model). ``--baseline`` measures the echo alone; ``--no-echo`` the node alone.

``--node-modes`` runs the node once per mode of its ``serialized_messages`` parameter (serialized: CDR bytes
decoded / encoded with rosbags; typed: rclpy message objects), one after the other in the same run, so the two
figures are side by side. ``--client`` is how this process publishes frames and takes the labels: serialized
(like a C++ camera driver, no Python message conversion on the client) or typed (rclpy messages, ~1 ms per
1080p frame each way on the client, counted in end to end).

DDS must stay on this machine: the script re-executes itself in a private network namespace (``unshare -n``,
loopback only) unless it already runs in one, and sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
Without ``--model`` it builds the tiny dominant-colour ONNX model of the node tests at 512x1024, so the engine
time is small and the figure is the node's own overhead. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_report import write_json  # noqa: E402


# A Fast DDS profile whose shared-memory segment holds whole 1080p frames. With the built-in transports, best-effort
# images over ~0.5 MB mostly never arrived between two processes here; with this profile 20/20 did (docs/nodes.md).
SHM_BIG_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_big</transport_id>
        <type>SHM</type>
        <segment_size>67108864</segment_size>
        <maxMessageSize>16777216</maxMessageSize>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="shm_big" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_big</transport_id>
          <transport_id>udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def _private_network() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _reexec_isolated() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("bench_node_overhead: needs a private network namespace (run as root with unshare available, or "
                 "inside `unshare -n`); DDS must not leave this machine")
    os.execvp("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
                          *sys.argv])


def _tiny_model(path: Path, height: int, width: int) -> Path:
    spec = importlib.util.spec_from_file_location("tiny_onnx", ROOT / "test/vlt_perception/nodes/tiny_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.segmentation_model(path, height=height, width=width, confidence=False)


def _frame(height: int, width: int) -> np.ndarray:
    rgb = np.zeros((height, width, 3), dtype=np.uint8)  # H, W, 3: three colour stripes + noise
    third = width // 3
    for c in range(3):
        rgb[:, c * third : (c + 1) * third, c] = 200
    rgb += np.random.default_rng(0).integers(0, 40, rgb.shape, dtype=np.uint8)
    return rgb


def echo_server(reliable: bool, serialized_io: bool) -> None:
    """Transport baseline: a bare rclpy node that answers each image with a mono8 image of the same size and
    header, doing nothing else (what any Python node pays for DDS, plus message conversion unless
    ``serialized_io``)."""
    from vlt_perception.pipeline import serialized
    from vlt_perception.pipeline.malloc_tuning import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from vlt_perception.nodes.conversions import array_to_image

    rclpy.init()
    node = rclpy.create_node("bench_seg")
    pub = node.create_publisher(Image, "/bench_seg/out/labels", QoSProfile(depth=1,
                                reliability=ReliabilityPolicy.RELIABLE))
    labels: dict[tuple[int, int], np.ndarray] = {}

    def on_image(msg) -> None:
        if serialized_io:
            msg = serialized.decode(msg, serialized.IMAGE)
        key = (msg.height, msg.width)
        if key not in labels:
            labels[key] = np.zeros(key, dtype=np.uint8)
        make = serialized.encode_image if serialized_io else array_to_image
        pub.publish(make(labels[key], "mono8", msg.header))

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
    node.create_subscription(Image, "/bench_seg/in/image", on_image, qos, raw=serialized_io)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "min": float(arr.min()),
            "max": float(arr.max()), "n": int(arr.size)}


def run(args: argparse.Namespace, node_mode: str = "serialized", baseline: bool | None = None) -> dict:
    baseline = args.baseline if baseline is None else baseline
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64

    from vlt_perception.nodes.conversions import array_to_image, diagnostic_values
    from vlt_perception.pipeline import serialized

    from vlt_perception.pipeline.malloc_tuning import keep_large_buffers_in_heap

    # The client stands for a camera driver, which reuses its frame buffers: no fresh pages per 6 MB frame.
    keep_large_buffers_in_heap()
    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    model = Path(args.model) if args.model else _tiny_model(tmp / "tiny.onnx", 512, 1024)
    node_cmd = [sys.executable, "-m", "vlt_perception.nodes.segmentation_node", "--ros-args", "-p",
                f"model_path:={model}", "-p", "diagnostics_period:=0.5", "-r", "__node:=bench_seg", "-p",
                f"serialized_messages:={'true' if node_mode == 'serialized' else 'false'}"]
    if args.reliable:
        node_cmd += ["-p", "qos_overrides./bench_seg/in/image.subscription.reliability:=reliable"]
    if args.depth != 1:
        node_cmd += ["-p", f"qos_overrides./bench_seg/in/image.subscription.depth:={args.depth}"]
    if baseline:
        node_cmd = [sys.executable, __file__, "--echo-server", "--node-modes", node_mode] + \
            (["--reliable"] if args.reliable else [])
    log = open(tmp / "node.log", "w")  # noqa: SIM115 - closed in finally
    node_proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())

    rclpy.init()
    node = rclpy.create_node("bench_node_overhead")
    received: dict[str, float] = {}
    internal: list[float] = []
    diag: dict[str, str] = {}
    lock = threading.Lock()

    client_serialized = args.client == "serialized"

    def on_labels(msg) -> None:
        now = time.perf_counter()
        frame_id = serialized.decode(msg, serialized.IMAGE).header.frame_id if client_serialized \
            else msg.header.frame_id
        with lock:
            received.setdefault(frame_id, now)

    def on_diag(msg: DiagnosticArray) -> None:
        values = diagnostic_values(msg, "/bench_seg:")
        if values:
            diag.clear()
            diag.update(values)

    node.create_subscription(Image, "/bench_seg/out/labels", on_labels,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE), raw=client_serialized)
    node.create_subscription(Float64, "/bench_seg/out/latency_ms", lambda m: internal.append(m.data), 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    pub_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE) if args.reliable else \
        qos_profile_sensor_data
    pub = node.create_publisher(Image, "/bench_seg/in/image", pub_qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    rgb = _frame(args.height, args.width)

    def frame_message(frame_id: str):
        header = Image().header
        header.frame_id = frame_id
        header.stamp = node.get_clock().now().to_msg()
        if client_serialized:
            return serialized.encode_image(rgb, "rgb8", header)
        return array_to_image(rgb, "rgb8", header)
    sent: dict[str, float] = {}
    build_ms: list[float] = []
    publish_ms: list[float] = []  # the publish() call itself (serialisation + hand-over to DDS)
    try:
        # Warm-up: until the node answers (discovery, engine warm-up), not measured.
        deadline = time.monotonic() + 60
        seq = 0
        while not received or not (diag or baseline):
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise SystemExit(f"node did not answer (diagnostics: {diag}, topics: "
                                 f"{node.get_topic_names_and_types()}); log: {tmp / 'node.log'}")
            pub.publish(frame_message(f"warm_{seq}"))
            seq += 1
            time.sleep(0.2)
        time.sleep(0.5)
        internal.clear()
        for i in range(args.frames):
            start = time.perf_counter()
            frame_id = f"frame_{i}"
            msg = frame_message(frame_id)
            build_ms.append((time.perf_counter() - start) * 1e3)
            sent[frame_id] = time.perf_counter()
            pub.publish(msg)
            publish_ms.append((time.perf_counter() - sent[frame_id]) * 1e3)
            time.sleep(1.0 / args.rate)
        time.sleep(1.5)  # last answers and one more diagnostics period
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.terminate()
        try:
            node_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        log.close()

    e2e = [(received[f] - t) * 1e3 for f, t in sent.items() if f in received]
    if not e2e:
        raise SystemExit(f"no labels received for measured frames (got {sorted(received)[:5]}, diagnostics {diag}); "
                         f"log: {tmp / 'node.log'}")
    engine_median = 0.0 if baseline else float(diag.get("inference_median_ms", "nan"))
    e2e_stats = _percentiles(e2e)
    return {
        "resolution": f"{args.width}x{args.height} rgb8",
        "what": f"transport baseline: bare rclpy echo node ({node_mode})" if baseline else
                f"segmentation_node (serialized_messages={node_mode == 'serialized'})",
        "client": args.client,
        "model": str(model) if args.model else "tiny dominant-colour ONNX at 512x1024 (test/vlt_perception/nodes)",
        "engine": diag.get("engine", "?"), "providers": diag.get("providers", "?"),
        "transport": args.transport,
        "camera_qos": "reliable" if args.reliable else "sensor data (best effort)",
        "frames_sent": len(sent), "frames_answered": len(e2e), "rate_hz": args.rate,
        "end_to_end_ms": e2e_stats,
        "engine_ms": {"median": engine_median, "p90": 0.0 if baseline else
                      float(diag.get("inference_p90_ms", "nan"))},
        "node_internal_ms": _percentiles(internal) if internal else {},
        "overhead_median_ms": e2e_stats["median"] - engine_median,
        "overhead_p90_ms": e2e_stats["p90"] - engine_median,
        "message_build_ms": _percentiles(build_ms),
        "publish_call_ms": _percentiles(publish_ms),
        "node_overhead_median_ms": (_percentiles(internal)["median"] - engine_median) if internal else None,
        "node_received": int(diag.get("received", "-1")), "node_processed": int(diag.get("processed", "-1")),
        "dropped": int(diag.get("dropped", "-1")),
        "target_overhead_median_ms": 10.0,
        "load_average_1min": os.getloadavg()[0],  # the machine is shared: context for every figure
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="ONNX model (default: tiny test model at 512x1024)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--rate", type=float, default=4.0, help="publish rate; keep it below the node's rate")
    parser.add_argument("--transport", default="LARGE_DATA",
                        help="FASTDDS_BUILTIN_TRANSPORTS for both processes (DEFAULT: unset), e.g. "
                        "LARGE_DATA, SHM, UDPv4; SHM_BIG: the Fast DDS XML profile above (64 MB SHM segment)")
    parser.add_argument("--reliable", action="store_true",
                        help="reliable camera QoS (publisher and the node's qos_overrides) instead of sensor data")
    parser.add_argument("--depth", type=int, default=1, help="the node's camera subscription history depth")
    parser.add_argument("--node-modes", default="serialized,typed",
                        help="comma-separated serialized_messages modes of the node to measure side by side")
    parser.add_argument("--client", choices=("serialized", "typed"), default="serialized",
                        help="how this process publishes frames and takes labels (see above)")
    parser.add_argument("--baseline", action="store_true",
                        help="measure a bare rclpy echo node instead (DDS + conversion cost any Python node pays)")
    parser.add_argument("--no-echo", action="store_true", help="measure the node alone, without the echo node")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate echo and node this many times per mode (medians are pooled per kind)")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_node_overhead.json"))
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.reliable, args.node_modes == "serialized")
        return
    if not _private_network():
        _reexec_isolated()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # Measured here: with the PyPI wheels and RMW_IMPLEMENTATION unset, separate processes did not discover
    # each other; name the RMW explicitly (as test/conftest.py does).
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_HOME", tempfile.mkdtemp(prefix="bench_ros_home_"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if args.transport == "SHM_BIG":
        profile = Path(tempfile.mkdtemp(prefix="bench_fastdds_")) / "shm_big.xml"
        profile.write_text(SHM_BIG_PROFILE)
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    elif args.transport != "DEFAULT":
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = args.transport
    modes = [m.strip() for m in args.node_modes.split(",") if m.strip()]
    results, comparisons = [], []
    kinds = [True] if args.baseline else [False] if args.no_echo else [True, False]  # echo first, then the node
    for mode in modes:
        by_kind: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(max(1, args.rounds)):
            for baseline in kinds:
                result = run(args, mode, baseline)
                results.append(result)
                by_kind[baseline].append(result)
                _print(result)
        if by_kind[True] and by_kind[False]:
            comparisons.append(_compare(mode, by_kind[True], by_kind[False]))
    for comparison in comparisons:
        _print_comparison(comparison)
    write_json(Path(args.out), {"runs": results, "node_vs_echo": comparisons})
    print(f"wrote {args.out}")


def _compare(mode: str, echo: list[dict], node: list[dict]) -> dict:
    """The node's end-to-end latency above the echo node's, both measured in this run (medians of the rounds)."""
    echo_ms = float(np.median([r["end_to_end_ms"]["median"] for r in echo]))
    node_ms = float(np.median([r["end_to_end_ms"]["median"] for r in node]))
    engine_ms = float(np.median([r["engine_ms"]["median"] for r in node]))
    above = node_ms - engine_ms - echo_ms
    return {"node_mode": mode, "rounds": len(node), "echo_end_to_end_median_ms": echo_ms,
            "node_end_to_end_median_ms": node_ms, "node_engine_median_ms": engine_ms,
            "node_above_echo_ms": above, "goal_ms": 1.0, "goal_met": above <= 1.0,
            "load_average_1min": [r["load_average_1min"] for r in echo + node]}


def _print_comparison(c: dict) -> None:
    print(f"node ({c['node_mode']}) vs bare rclpy echo, same run, {c['rounds']} round(s): end to end "
          f"{c['node_end_to_end_median_ms']:.1f} ms (engine {c['node_engine_median_ms']:.1f}) vs echo "
          f"{c['echo_end_to_end_median_ms']:.1f} ms -> node above echo {c['node_above_echo_ms']:.2f} ms "
          f"(goal <= {c['goal_ms']:.0f} ms: {'met' if c['goal_met'] else 'missed'}; load "
          f"{', '.join(f'{x:.1f}' for x in c['load_average_1min'])})")


def _print(result: dict) -> None:
    e2e, engine = result["end_to_end_ms"], result["engine_ms"]
    print(f"{result['what']} overhead at {result['resolution']} ({result['transport']} transport, "
          f"{result['client']} client, {result['frames_answered']}/{result['frames_sent']} frames answered; node "
          f"received {result['node_received']}, processed {result['node_processed']}, dropped {result['dropped']}, "
          "warm-up included)")
    print(f"  end to end   median {e2e['median']:7.1f} ms   p90 {e2e['p90']:7.1f} ms")
    print(f"  engine       median {engine['median']:7.1f} ms   p90 {engine['p90']:7.1f} ms")
    if result["node_internal_ms"]:
        print(f"  inside node  median {result['node_internal_ms']['median']:7.1f} ms (receive -> published; minus "
              f"engine: {result['node_overhead_median_ms']:.1f} ms)")
    print(f"  overhead     median {result['overhead_median_ms']:7.1f} ms   p90 {result['overhead_p90_ms']:7.1f} ms "
          f"(target <= {result['target_overhead_median_ms']:.0f} ms median)")
    print(f"  load average {result['load_average_1min']:.1f} on {result['cpus']} CPUs")
    print(f"  publisher: building the message {result['message_build_ms']['median']:.1f} ms (not counted), "
          f"publish() call {result['publish_call_ms']['median']:.1f} ms (counted)")


if __name__ == "__main__":
    main()
