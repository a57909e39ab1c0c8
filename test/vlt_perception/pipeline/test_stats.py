"""Rates, latency percentiles and counters with a driven clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlt_perception.pipeline.stats import LatencyWindow, PipelineStats, RateMeter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_counts_events_in_window():
    clock = FakeClock()
    meter = RateMeter(window_s=2.0, clock=clock)
    assert meter.rate() == 0.0
    for _ in range(11):  # 10 intervals of 0.1 s -> 10 Hz
        meter.tick()
        clock.now += 0.1
    assert meter.rate() == pytest.approx(10.0)
    clock.now += 5.0  # everything leaves the window
    assert meter.rate() == 0.0


def test_rate_meter_rejects_bad_window():
    with pytest.raises(ValueError, match="window_s"):
        RateMeter(window_s=0)


def test_latency_window_percentiles_match_numpy():
    window = LatencyWindow(size=50)
    assert all(math.isnan(v) for v in window.percentiles())
    values = np.random.default_rng(0).uniform(1, 100, 120)
    for v in values:
        window.add(v)
    assert len(window) == 50  # only the newest samples are kept
    median, p90 = window.percentiles()
    assert median == pytest.approx(np.median(values[-50:]))
    assert p90 == pytest.approx(np.percentile(values[-50:], 90))


def test_pipeline_stats_snapshot():
    clock = FakeClock()
    stats = PipelineStats(window_s=10.0, clock=clock)
    for i in range(31):  # 30 Hz input
        stats.on_input()
        if i % 3 == 0:  # every third frame processed -> 10 Hz
            stats.on_processed(latency_ms=40.0 + i, inference_ms=30.0)
        else:
            stats.on_dropped()
        clock.now += 1 / 30
    stats.on_error("bad_step")
    stats.on_error("bad_step")
    stats.on_error("unknown_encoding")
    snap = stats.snapshot()
    assert snap["input_rate_hz"] == pytest.approx(30.0)
    assert snap["processed_rate_hz"] == pytest.approx(10.0)
    assert snap["received"] == 31 and snap["processed"] == 11 and snap["dropped"] == 20
    assert snap["errors"] == 3 and snap["errors.bad_step"] == 2 and snap["errors.unknown_encoding"] == 1
    assert snap["latency_median_ms"] == pytest.approx(np.median([40.0 + i for i in range(0, 31, 3)]))
    assert snap["inference_p90_ms"] == pytest.approx(30.0)


def test_error_throttle_per_kind():
    from vlt_perception.pipeline.stats import ErrorThrottle

    clock = FakeClock()
    throttle = ErrorThrottle(period_s=5.0, clock=clock)
    assert throttle.should_log("bad_step") == 0  # first one is logged
    assert throttle.should_log("bad_step") is None
    assert throttle.should_log("bad_step") is None
    assert throttle.should_log("unknown_encoding") == 0  # another kind is not hidden
    clock.now += 5.1
    assert throttle.should_log("bad_step") == 2  # logged again, reporting the two suppressed
    assert throttle.should_log("bad_step") is None


def test_error_throttle_flush_reports_a_burst_that_ended_inside_the_window():
    from vlt_perception.pipeline.stats import ErrorThrottle

    clock = FakeClock()
    throttle = ErrorThrottle(period_s=5.0, clock=clock)
    assert throttle.should_log("bad_step", "first") == 0
    for i in range(3):
        assert throttle.should_log("bad_step", f"burst {i}") is None
    assert throttle.flush() == []  # the window is still open
    clock.now += 5.1
    assert throttle.flush() == [("bad_step", 3, "burst 2")]  # no later error needed to report the burst
    assert throttle.flush() == []  # reported once
    # reporting the burst started a new window: the next error of the kind is suppressed, then flushed
    assert throttle.should_log("bad_step", "later") is None
    clock.now += 5.1
    assert throttle.flush() == [("bad_step", 1, "later")]
    clock.now += 5.1
    assert throttle.should_log("bad_step", "after a quiet window") == 0
