"""Many cameras: one batched multitask_node against one single-camera node per camera, side by side in one run.

For N cameras (``--cameras 1,2,4``) this process publishes 1920x1080 rgb8 frames on N camera topics at
``--rate`` Hz each (serialized CDR, like a C++ camera driver: no Python message conversion here) and records
when each frame's ``labels`` come back (1080p mono8, taken as raw bytes; only the header is read). Two set-ups
per N, one after the other:

- ``batched``: one ``multitask_node`` with ``cameras:=[cam0,...]`` (one engine call per batch);
- ``separate``: N ``multitask_node`` processes without ``cameras`` (the single-camera topics, as
  ``segmentation_node``), one per camera.

Per set-up: aggregate fps (frames answered / measuring time), end-to-end latency p50 / p99 (publish -> labels
received, per frame), and frames dropped (published - answered; the nodes keep the newest frame of each camera).
Models (``--models``): ``tiny`` = the dominant-colour ONNX model of the node tests at 512x1024 (the engine
time is small, as on a GPU: the figure is the nodes' own cost), ``vit_s`` = ``vltseg_vit_s16_mask2former`` at
512x1024 exported to ONNX (random weights: the cost is the same). ``--profile`` writes a cProfile of the batched
node for the largest N in an extra run (the profiler slows it down): its executor, batch and publishing threads.

DDS stays on this machine: the script re-executes itself in a private network namespace (``unshare -n``) and
uses the packaged large-image Fast DDS profile (``config/fastdds_large_images.xml``).

    source tools/env.sh && python benchmarks/bench_multicam.py [--models tiny,vit_s] [--cameras 1,2,4]
        [--seconds 20] [--rate 30] [--out outputs/bench_multicam.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
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

from bench_node_overhead import _frame, _private_network, _reexec_isolated, _tiny_model  # noqa: E402
from bench_report import write_json  # noqa: E402

FRAME_H, FRAME_W = 1080, 1920
THREADS = 0  # engine threads of every node (--threads); 0 = the engine's default


def _vit_s_model(path: Path) -> Path:
    from vlt_training.export import export_onnx
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    model = create_model("vltseg_vit_s16_mask2former").eval()
    metadata = metadata_for_model(model, 512, 1024)
    out, _ = export_onnx(model, metadata, path)  # dynamic batch
    return out


def _node_command(model: Path, name: str, cameras: list[str] | None, profile: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "vlt_perception.nodes.multitask_node"] if profile is None else \
        [sys.executable, __file__, "--profiled-node", str(profile)]
    cmd += ["--ros-args", "-r", f"__node:={name}", "-p", f"model_path:={model}", "-p", "diagnostics_period:=1.0",
            "-p", f"threads:={THREADS}"]
    if cameras:
        cmd += ["-p", f"cameras:=[{','.join(cameras)}]"]
    return cmd


def profiled_node(out: Path, node_args: list[str]) -> int:
    """multitask_node under cProfile: one profile per thread, the executor (subscriptions, timers), the batch thread
    (decode, preprocessing), the engine thread and the publishing thread (post-processing, publishing), written to
    ``out``, ``out.batches``, ``out.engine`` and ``out.publish``."""
    import cProfile

    from vlt_perception.nodes import multitask_node

    def profiled(loop, suffix: str):
        def run(self) -> None:
            profile = cProfile.Profile()
            profile.enable()  # cProfile profiles the thread that enables it
            try:
                loop(self)
            finally:
                profile.disable()
                profile.dump_stats(f"{out}.{suffix}")
        return run

    node_class = multitask_node.MultiTaskNode
    node_class._batch_loop = profiled(node_class._batch_loop, "batches")
    node_class._engine_loop = profiled(node_class._engine_loop, "engine")
    node_class._publish_loop = profiled(node_class._publish_loop, "publish")
    executor = cProfile.Profile()
    executor.enable()
    try:
        return multitask_node.main(node_args)
    finally:
        executor.disable()
        executor.dump_stats(str(out))


def _parse_header(raw: bytes) -> str:
    """frame_id of a serialized sensor_msgs/Image (CDR little endian): 4 bytes encapsulation, stamp (8 bytes),
    then the frame_id string (uint32 length including the NUL, bytes)."""
    length = int.from_bytes(raw[12:16], "little")
    return raw[16 : 16 + length - 1].decode()


def run_setup(model: Path, n: int, mode: str, args, workdir: Path, profile: Path | None = None) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from vlt_perception.pipeline import serialized

    cameras = [f"cam{i}" for i in range(n)]
    if mode == "batched":
        names = ["mc_batched"]
        commands = [_node_command(model, names[0], cameras, profile)]
        inputs = {c: f"/mc_batched/{c}/in/image" for c in cameras}
        outputs = {c: f"/mc_batched/{c}/out/labels" for c in cameras}
    else:
        names = [f"mc_{c}" for c in cameras]
        commands = [_node_command(model, name, None, None) for name in names]
        inputs = {c: f"/mc_{c}/in/image" for c in cameras}
        outputs = {c: f"/mc_{c}/out/labels" for c in cameras}
    logs = [open(workdir / f"{mode}_{n}_{i}.log", "w") for i in range(len(commands))]  # noqa: SIM115
    procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
             for cmd, log in zip(commands, logs)]

    rclpy.init()
    node = rclpy.create_node(f"bench_multicam_{mode}_{n}")
    received: dict[str, float] = {}
    lock = threading.Lock()

    def on_labels(raw) -> None:
        now = time.perf_counter()
        frame_id = _parse_header(raw)
        with lock:
            received.setdefault(frame_id, now)

    for camera in cameras:
        node.create_subscription(Image, outputs[camera], on_labels,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE), raw=True)
    pubs = {c: node.create_publisher(Image, inputs[c], qos_profile_sensor_data) for c in cameras}
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    rgb = _frame(FRAME_H, FRAME_W)
    header = Image().header

    def message(frame_id: str) -> bytes:
        header.frame_id = frame_id
        header.stamp = node.get_clock().now().to_msg()
        return serialized.encode_image(rgb, "rgb8", header)

    sent: dict[str, float] = {}
    try:
        # Warm-up until every camera has been answered (discovery, engine warm-up); not measured.
        deadline = time.monotonic() + args.startup_timeout
        seq = 0
        def answered_cameras() -> set[str]:
            with lock:  # the spinner thread adds to `received`
                return {f.split("/", 1)[0] for f in received}

        while answered_cameras() != set(cameras):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{mode} x{n}: nodes did not answer every camera; logs in {workdir}")
            for camera in cameras:
                pubs[camera].publish(message(f"{camera}/warm_{seq}"))
            seq += 1
            time.sleep(0.25)
        time.sleep(1.0)
        start = time.perf_counter()
        k = 0
        period = 1.0 / args.rate
        while time.perf_counter() - start < args.seconds:
            for camera in cameras:
                frame_id = f"{camera}/{k}"
                msg = message(frame_id)
                sent[frame_id] = time.perf_counter()
                pubs[camera].publish(msg)
            k += 1
            delay = start + k * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        end = time.perf_counter()
        time.sleep(max(2.0, args.drain))  # answers in flight
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()

    received = dict(received)  # the spinner has stopped; a plain copy from here on
    latencies = [(received[f] - t) * 1e3 for f, t in sent.items() if f in received]
    # Throughput counts the frames answered within the publishing time (a frame answered later is a latency).
    answered_in_time = sum(1 for f in sent if f in received and received[f] <= end)
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "cameras": n, "mode": mode, "processes": len(procs), "frames_sent": len(sent),
        "frames_answered": len(latencies), "dropped": len(sent) - len(latencies),
        "aggregate_fps": answered_in_time / (end - start),
        "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99)),
        "seconds": end - start, "rate_hz_per_camera": args.rate,
        "load_average_1min": os.getloadavg()[0],
    }


def _profile_summary(path: Path, top: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,vit_s")
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per set-up (tiny model)")
    parser.add_argument("--vit-seconds", type=float, default=60.0, help="measuring time per set-up (ViT-S)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--vit-rate", type=float, default=2.0, help="frames per second per camera for ViT-S")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds to wait for answers after publishing")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=0, help="engine threads of every node (0 = default)")
    parser.add_argument("--profile", action="store_true", help="cProfile the batched node at the largest N")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_multicam.json"))
    parser.add_argument("--profiled-node", help=argparse.SUPPRESS)  # internal: run the node under cProfile
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-node"]:
        return profiled_node(Path(argv[1]), [sys.argv[0], *argv[2:]])
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    if not _private_network():
        _reexec_isolated()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_large_images.xml")
    from vlt_perception.pipeline.malloc_tuning import keep_large_buffers_in_heap

    keep_large_buffers_in_heap()  # the client stands for a camera driver that reuses its frame buffers
    workdir = Path(tempfile.mkdtemp(prefix="bench_multicam_"))
    counts = [int(c) for c in args.cameras.split(",")]
    report = {"frame": f"{FRAME_W}x{FRAME_H} rgb8", "cpus": os.cpu_count(), "command": " ".join(sys.argv),
              "engine_threads": args.threads,
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "results": {}}
    for name in args.models.split(","):
        if name == "tiny":
            model = _tiny_model(workdir / "tiny.onnx", 512, 1024)
            run_args = args
        elif name == "vit_s":
            model = _vit_s_model(workdir / "vit_s.onnx")
            # A ViT-S batch takes seconds: wait for the one in flight when publishing stops.
            run_args = argparse.Namespace(**{**vars(args), "seconds": args.vit_seconds, "rate": args.vit_rate,
                                             "drain": max(args.drain, 30.0)})
        else:
            raise SystemExit(f"unknown model {name!r}; expected tiny or vit_s")
        rows = []
        for n in counts:
            for mode in ("batched", "separate"):
                row = run_setup(model, n, mode, run_args, workdir)
                rows.append(row)
                print(f"{name:6s} {n} cam {mode:8s} {row['aggregate_fps']:7.2f} fps  p50 {row['latency_p50_ms']:8.1f}"
                      f" ms  p99 {row['latency_p99_ms']:8.1f} ms  dropped {row['dropped']}/{row['frames_sent']}",
                      flush=True)
        if args.profile:  # an extra run (the profiler slows the node down): where the batched node's time goes
            profile = workdir / f"{name}_batched_{max(counts)}.prof"
            run_setup(model, max(counts), "batched", run_args, workdir, profile)
            for part in ("executor", "batches", "engine", "publish"):
                path = profile if part == "executor" else Path(f"{profile}.{part}")
                if path.exists():
                    key = f"{name}_batched_{max(counts)}_{part}"
                    report.setdefault("profiles", {})[key] = _profile_summary(path)
                    print(f"--- {key}\n" + report["profiles"][key][:6000], flush=True)
        for n in counts:
            batched = next(r for r in rows if r["cameras"] == n and r["mode"] == "batched")
            separate = next(r for r in rows if r["cameras"] == n and r["mode"] == "separate")
            batched["speedup_vs_separate"] = batched["aggregate_fps"] / max(separate["aggregate_fps"], 1e-9)
        report["results"][name] = rows
        write_json(Path(args.out), report)
    _print(report)
    write_json(Path(args.out), report)
    print(f"wrote {args.out}")
    return 0


def _print(report: dict) -> None:
    print(f"\n{report['frame']} frames, {report['cpus']} CPUs")
    print("| model | cameras | set-up | aggregate fps | p50 ms | p99 ms | dropped / sent | batched / separate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in report["results"].items():
        for r in rows:
            ratio = f"{r['speedup_vs_separate']:.2f}x" if "speedup_vs_separate" in r else ""
            print(f"| {name} | {r['cameras']} | {r['mode']} ({r['processes']} proc) | {r['aggregate_fps']:.2f} | "
                  f"{r['latency_p50_ms']:.0f} | {r['latency_p99_ms']:.0f} | {r['dropped']} / {r['frames_sent']} | "
                  f"{ratio} |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
