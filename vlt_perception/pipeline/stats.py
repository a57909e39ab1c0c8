"""Thread-safe runtime statistics for the nodes: rates, latency percentiles, drop and error counters.

Pure Python + numpy; nodes turn :meth:`PipelineStats.snapshot` into ``diagnostic_msgs/KeyValue`` pairs.
All times are taken from an injectable monotonic clock so that tests can drive them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable

import numpy as np


class RateMeter:
    """Events per second over a sliding time window."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._stamps: deque[float] = deque()

    def tick(self) -> None:
        now = self._clock()
        self._stamps.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] > self.window_s:
            self._stamps.popleft()

    def rate(self) -> float:
        """Events per second in the window; 0 with fewer than two events (a rate needs an interval)."""
        self._trim(self._clock())
        if len(self._stamps) < 2:
            return 0.0
        span = self._stamps[-1] - self._stamps[0]
        return (len(self._stamps) - 1) / span if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` samples (milliseconds) and their median / p90."""

    def __init__(self, size: int = 200) -> None:
        if size <= 0:
            raise ValueError(f"size must be > 0, got {size}")
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value_ms: float) -> None:
        self._samples.append(float(value_ms))

    def __len__(self) -> int:
        return len(self._samples)

    def percentiles(self) -> tuple[float, float]:
        """(median, p90) in ms; NaN when empty."""
        if not self._samples:
            return float("nan"), float("nan")
        median, p90 = np.percentile(np.fromiter(self._samples, dtype=np.float64), [50, 90])
        return float(median), float(p90)


class PipelineStats:
    """Everything a perception node reports: input/processed rates, latencies, drops, errors by kind.

    ``latency`` is end-to-end inside the node (message received -> outputs published); ``inference`` is the
    pipeline's own time. Safe to call from the subscription callback and the worker thread at once.
    """

    def __init__(self, window_s: float = 5.0, latency_samples: int = 200,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self.input_rate = RateMeter(window_s, clock)
        self.processed_rate = RateMeter(window_s, clock)
        self.latency = LatencyWindow(latency_samples)
        self.inference = LatencyWindow(latency_samples)
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()

    def on_input(self) -> None:
        with self._lock:
            self.received += 1
            self.input_rate.tick()

    def on_processed(self, latency_ms: float, inference_ms: float | None = None) -> None:
        with self._lock:
            self.processed += 1
            self.processed_rate.tick()
            self.latency.add(latency_ms)
            if inference_ms is not None:
                self.inference.add(inference_ms)

    def on_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def on_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def snapshot(self) -> dict[str, float | int]:
        """A flat dict for diagnostics and logs; error counts appear as ``errors.<kind>``."""
        with self._lock:
            lat_med, lat_p90 = self.latency.percentiles()
            inf_med, inf_p90 = self.inference.percentiles()
            out: dict[str, float | int] = {
                "input_rate_hz": self.input_rate.rate(),
                "processed_rate_hz": self.processed_rate.rate(),
                "received": self.received,
                "processed": self.processed,
                "dropped": self.dropped,
                "errors": sum(self.errors.values()),
                "latency_median_ms": lat_med,
                "latency_p90_ms": lat_p90,
                "inference_median_ms": inf_med,
                "inference_p90_ms": inf_p90,
            }
            out.update({f"errors.{kind}": n for kind, n in sorted(self.errors.items())})
            return out


class ErrorThrottle:
    """Decides when to log an error of a given kind: the first one, then at most once per ``period_s`` per kind.

    ``should_log(kind)`` returns the number of errors of that kind suppressed since the last log (0 for the first)
    when it is time to log, else None. Kinds are independent: a flood of one kind never hides another.
    A burst that ends inside a window would otherwise never be reported: :meth:`flush`, called periodically,
    returns the kinds whose window has closed with errors still suppressed in it (and the latest of their texts).
    """

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._latest_text: dict[str, str] = {}
        self._lock = threading.Lock()

    def should_log(self, kind: str, text: str = "") -> int | None:
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.period_s:
                self._suppressed[kind] += 1
                self._latest_text[kind] = text
                return None
            self._last[kind] = now
            self._latest_text.pop(kind, None)
            return self._suppressed.pop(kind, 0)

    def flush(self, force: bool = False) -> list[tuple[str, int, str]]:
        """(kind, suppressed count, latest suppressed text) for each kind whose window has closed with errors
        suppressed in it. Reporting them starts a new window, so a kind is still logged at most once a period.
        ``force``: every kind with suppressed errors, window closed or not (at shutdown)."""
        now = self._clock()
        due = []
        with self._lock:
            for kind, count in list(self._suppressed.items()):
                if force or now - self._last[kind] >= self.period_s:
                    due.append((kind, count, self._latest_text.pop(kind, "")))
                    del self._suppressed[kind]
                    self._last[kind] = now
        return due
