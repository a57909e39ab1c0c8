"""The TensorRT build's progress monitor (TensorRT's IProgressMonitor interface, stood in by a plain base class
here: the monitor's own logic runs, TensorRT does not): phases at info, steps at info every 10 s of a fake clock."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from vlt_perception.engines import tensorrt_engine


class _Base:  # stands in for trt.IProgressMonitor, whose __init__ the subclass must call
    def __init__(self) -> None:
        self.base_initialised = True


def test_progress_is_logged_through_the_build(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr(tensorrt_engine.time, "monotonic", lambda: clock[0])
    monitor = tensorrt_engine._progress_monitor(SimpleNamespace(IProgressMonitor=_Base))
    assert monitor.base_initialised
    with caplog.at_level(logging.INFO, logger=tensorrt_engine.log.name):
        monitor.phase_start("Building engine", None, 3)
        monitor.phase_start("Tactic selection", "Building engine", 2000)
        for step in range(2000):
            clock[0] += 0.125  # 250 s over the phase: 25 lines, not 2000
            assert monitor.step_complete("Tactic selection", step) is True  # never cancels
        monitor.phase_finish("Tactic selection")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["TensorRT build: Building engine (3 steps)",
                         "TensorRT build: Building engine / Tactic selection (2000 steps)"]
    steps = lines[2:]
    assert len(steps) == 25 and steps[0] == "TensorRT build: Tactic selection step 80 of 2000"


def test_no_monitor_without_the_interface():
    assert tensorrt_engine._progress_monitor(SimpleNamespace()) is None
