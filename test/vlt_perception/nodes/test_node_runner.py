"""How every node executable starts and ends (``runner.run_node``): signals at any moment, bad parameters and params
files, the evaluator's end, the errors held back at shutdown. Real processes on a private network (``ros``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from node_graph import Listener, raw_image, start_node, tiny_onnx, wait_until

from helpers.ros_graph import process_env, start_process

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

NODE = "segmentation_node"
SHUTDOWN = "shut down (SIGINT), exit code 0"
# Hang guards only: every wait below ends as soon as the log line it waits for appears.
START_S, EXIT_S = 60, 60


def _log(path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx.segmentation_model(tmp_path_factory.mktemp("runner") / "seg.onnx", height=16, width=32)


def _signal_twice(tmp_path, model, first, second, offset_s: float | None):
    """Start the node, wait until it is active, send ``first``, then ``second`` after ``offset_s`` (None: once the
    shutdown log line is out, i.e. while the interpreter exits). Returns (exit code, log)."""
    log = tmp_path / "node.log"
    with start_node(NODE, log, model_path=str(model), warmup=False) as proc:
        wait_until(lambda: "active: subscribed" in _log(log), START_S, "the node to be active", proc)
        proc.send_signal(first)
        if offset_s is None:
            wait_until(lambda: "shut down (" in _log(log), EXIT_S, "the shutdown log line")
        elif offset_s:
            time.sleep(offset_s)
        proc.send_signal(second)  # a process that has already exited and not been reaped ignores it
        code = proc.wait(timeout=EXIT_S)
    return code, _log(log)


@pytest.mark.parametrize("offset_s", [0.0, 0.05, 0.2, 0.5, None], ids=["0ms", "50ms", "200ms", "500ms", "at-exit"])
def test_a_second_sigint_at_any_moment_ends_cleanly(tmp_path, model, offset_s):
    """ros2 launch on Ctrl-C: the group's SIGINT, then its own. Exit 0 with the shutdown log, whenever the second
    lands (the 50 ms case used to exit -2 with no log: Python's finalisation had put SIG_DFL back)."""
    code, output = _signal_twice(tmp_path, model, signal.SIGINT, signal.SIGINT, offset_s)
    assert code == 0, output[-3000:]
    assert SHUTDOWN in output and "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize("offset_s", [0.05, None], ids=["50ms", "at-exit"])
def test_sigterm_then_sigint_ends_cleanly(tmp_path, model, offset_s):
    code, output = _signal_twice(tmp_path, model, signal.SIGTERM, signal.SIGINT, offset_s)
    assert code == 0, output[-3000:]
    assert "shut down (SIGTERM), exit code 0" in output and "Traceback" not in output, output[-3000:]


def _run(args, timeout=EXIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"vlt_perception.nodes.{NODE}", *args], env=process_env(),
                          capture_output=True, text=True, timeout=timeout)


def _params(tmp_path, text, name="params.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_typo_in_a_params_file_is_a_start_up_error_naming_key_and_file(tmp_path, model):
    params = _params(tmp_path, f"{NODE}:\n  ros__parameters:\n    model_path: {model}\n    input_typ: compressed\n")
    result = _run(["--ros-args", "--params-file", str(params)])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{params} [{NODE}]: unknown {NODE} parameter 'input_typ' (did you mean 'input_type'?)" in output
    assert "Traceback" not in output and "active: subscribed" not in output


def test_a_wrong_typed_value_names_the_parameter_and_the_file(tmp_path, model):
    params = _params(tmp_path, "/**:\n  ros__parameters:\n    max_pixels: many\n")
    result = _run(["--ros-args", "-p", f"model_path:={model}", "--params-file", str(params)])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{params} [/**]: {NODE} parameter max_pixels must be int, got str 'many'" in output, output
    assert "Traceback" not in output
    # on the command line, the error says so; max_pixels has a maximum
    result = _run(["--ros-args", "-p", f"model_path:={model}", "-p", "max_pixels:=99999999999"])
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "the command line (-p max_pixels:=...)" in output and "<=" in output, output


def test_a_missing_params_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = _run(["--ros-args", "--params-file", str(missing)])
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [f"{NODE}: --params-file {missing}: no such file"], lines


def test_errors_held_back_by_the_throttle_are_reported_at_shutdown(tmp_path, model):
    """Three bad frames of one kind inside the 5 s window: the first is logged, the other two are held back; a
    shutdown before the window closes must still report them, with their count."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    log = tmp_path / "node.log"
    name = "seg_throttle"
    with Listener("seg_throttle_listener") as listener:
        listener.listen(f"/{name}/out/labels", Image)  # a subscriber: the node processes frames
        listener.listen("/diagnostics", DiagnosticArray)
        with start_node(NODE, log, name=name, model_path=str(model), warmup=False,
                        diagnostics_period=0.1) as proc:
            wait_until(lambda: "active: subscribed" in _log(log), START_S, "the node to be active", proc)
            bad = [0]

            def send_bad(seq):
                bad[0] += 1
                return raw_image("rgb9", 4, 4, 12, bytes(48), seq)

            # publish until the node has counted three (the first frames may go out before discovery is done)
            listener.publish_until(f"/{name}/in/image", send_bad,
                                   lambda: int(listener.diagnostics(name).get("errors.unknown_encoding", 0)) >= 3,
                                   START_S, "three bad frames counted", proc, period=0.02)
            counted = int(listener.diagnostics(name)["errors.unknown_encoding"])
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=EXIT_S) == 0
    output = _log(log)
    assert "more frame(s) of kind unknown_encoding" in output, output[-3000:]
    reported = sum(int(line.split("skipped ")[1].split(" more")[0]) for line in output.splitlines()
                   if "more frame(s) of kind unknown_encoding" in line)
    assert reported + 1 >= counted  # every counted error was logged, alone or in a count
    assert SHUTDOWN in output


def test_an_evaluation_stopped_before_the_bag_finished_is_incomplete(tmp_path):
    """Ctrl-C before the player's done message: the report is written, marked incomplete, and the exit is 1."""
    out = tmp_path / "report"
    log = tmp_path / "eval.log"
    args = ["-m", "vlt_perception.nodes.evaluator_node", "--ros-args", "-p", f"out_dir:={out}",
            "-p", "gt_detections_topic:=''", "-p", "figures:=false"]
    with start_process(args, log) as proc:
        wait_until(lambda: "evaluating" in _log(log), START_S, "the evaluator to start", proc)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=EXIT_S)
    output = _log(log)
    assert code == 1, output
    assert "evaluation incomplete" in output and "shut down (SIGINT), exit code 1" in output, output
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["finished_by"] == "shutdown"
    assert "**Incomplete**" in (out / "report.md").read_text()
