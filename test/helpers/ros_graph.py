"""Helpers for ROS-graph tests: start nodes and fixture scripts in their own processes, wait for topics.

The test process itself may be one participant (``rclpy`` in-process, with a private context) while nodes under
test run as separate processes started with :func:`start_process`; all of them inherit the isolation settings of
``test/conftest.py`` (LOCALHOST discovery, per-run ROS_DOMAIN_ID, ROS_HOME in a temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def start_process(args: list[str], log_path: Path | None = None, **env: str) -> Iterator[subprocess.Popen]:
    """Run ``python <args>`` (e.g. ``["-m", "vlt_perception.nodes.segmentation_node", ...]``) for a with-block.

    On exit the process gets SIGINT, then SIGKILL after 10 s; its output goes to ``log_path`` (or a pipe).
    """
    out = open(log_path, "w") if log_path else subprocess.PIPE  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, *args], env=process_env(**env), stdout=out, stderr=subprocess.STDOUT,
                            cwd=ROOT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path:
            out.close()


class RosParticipant:
    """An rclpy node in the test process, spun in a background thread, with its own context."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)

    def __enter__(self) -> "RosParticipant":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until true; fail with ``what`` (and the process output if it died) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n{output}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
