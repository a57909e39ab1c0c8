"""Many cameras, one engine call: the newest frame of each camera, gathered into one batch within a time window.

The subscription callbacks only call :meth:`CameraBatcher.submit`, which keeps the newest frame of that camera
(a frame still waiting is replaced and counted as that camera's drop) and returns at once. The worker thread
calls :meth:`CameraBatcher.wait_batch`, which returns the waiting frames, one per camera, as soon as

- every camera that is publishing has a frame waiting, or
- the oldest waiting frame has waited ``window_ms`` (the window closes).

A camera counts as publishing while its last frame is at most ``silent_after_ms`` old (and once it has sent
one). So a camera that stops costs the others at most one window per batch until it is ``silent_after_ms``
quiet, and nothing after that: it never stalls them. It joins again with its next frame.

Counters (received, processed, dropped, errors by kind, latency) are kept per camera; the payload of a frame is
opaque here (a message, bytes, an array), so bad input is found and counted by the caller with
:meth:`CameraBatcher.on_error` against that camera only. All times come from an injectable monotonic clock, so
the batching rules are tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from vlt_perception.pipeline.image_codec import ImageDecodeError
from vlt_perception.pipeline.stats import LatencyWindow, RateMeter


@dataclass
class CameraFrame:
    """One camera's frame in a batch; ``received`` is the clock time it arrived."""

    camera: str
    payload: Any
    received: float


@dataclass
class CameraCounters:
    """What happened to one camera's frames (for diagnostics and benchmarks)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame of the same camera before a batch took it
    errors: Counter = field(default_factory=Counter)  # bad input by kind
    last_received: float | None = None


class CameraBatcher:
    """Newest-frame-per-camera mailbox that releases batches; thread-safe (one consumer thread).

    ``cameras`` are names (unique, non-empty); ``window_ms`` is how long the oldest waiting frame may wait for the
    other cameras (0 = never wait); ``silent_after_ms`` is how long a camera may send nothing before batches stop
    waiting for it.
    """

    def __init__(self, cameras: Sequence[str], window_ms: float, silent_after_ms: float = 1000.0,
                 clock: Callable[[], float] = time.monotonic, latency_samples: int = 200,
                 rate_window_s: float = 5.0) -> None:
        cameras = list(cameras)
        if not cameras or any(not c for c in cameras) or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be unique non-empty names, got {cameras}")
        if window_ms < 0 or silent_after_ms <= 0:
            raise ValueError(f"need window_ms >= 0 and silent_after_ms > 0, got {window_ms} / {silent_after_ms}")
        self.cameras = cameras
        self.window_s = window_ms / 1e3
        self.silent_after_s = silent_after_ms / 1e3
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: dict[str, CameraFrame] = {}
        self._stopping = False
        self.counters = {c: CameraCounters() for c in cameras}
        self._latency = {c: LatencyWindow(latency_samples) for c in cameras}
        self._rates = {c: RateMeter(rate_window_s, clock) for c in cameras}
        self.batches = 0

    # --- producer side (subscription callbacks) -------------------------------------------------------------

    def submit(self, camera: str, payload: Any) -> bool:
        """Keep ``payload`` as ``camera``'s newest frame; returns False when it replaced a waiting frame (a drop)."""
        now = self._clock()
        with self._cond:
            if camera not in self.counters:
                raise KeyError(f"unknown camera {camera!r}; configured: {self.cameras}")
            counters = self.counters[camera]
            counters.received += 1
            counters.last_received = now
            replaced = camera in self._pending
            if replaced:
                counters.dropped += 1
            self._pending[camera] = CameraFrame(camera, payload, now)
            self._cond.notify_all()
        return not replaced

    # --- consumer side (the worker thread) --------------------------------------------------------------------

    def silent(self, camera: str, now: float | None = None) -> bool:
        """Whether batches no longer wait for ``camera`` (it never sent a frame, or none for silent_after_ms)."""
        now = self._clock() if now is None else now
        last = self.counters[camera].last_received
        return last is None or now - last > self.silent_after_s

    def _wake_at(self, now: float) -> float | None:
        """None when a batch is ready now, else the clock time at which readiness can next change by itself."""
        if not self._pending:
            return float("inf")
        waiting_for = [c for c in self.cameras if c not in self._pending and not self.silent(c, now)]
        window_closes = min(f.received for f in self._pending.values()) + self.window_s
        if not waiting_for or now >= window_closes:
            return None
        # A camera falling silent also releases the batch.
        silent_at = min(self.counters[c].last_received + self.silent_after_s for c in waiting_for)
        return min(window_closes, silent_at)

    def ready(self) -> bool:
        with self._cond:
            return self._wake_at(self._clock()) is None

    def take(self) -> list[CameraFrame]:
        """The waiting frames in camera order if a batch is ready (emptying the mailbox), else []."""
        with self._cond:
            return self._take_locked()

    def _take_locked(self) -> list[CameraFrame]:
        if self._wake_at(self._clock()) is not None:
            return []
        frames = [self._pending.pop(c) for c in self.cameras if c in self._pending]
        self.batches += 1
        return frames

    def wait_batch(self, timeout: float | None = None) -> list[CameraFrame]:
        """Block until a batch is ready and return it; [] after :meth:`stop` or when ``timeout`` (s) passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._stopping:
                now = self._clock()
                wake = self._wake_at(now)
                if wake is None:
                    return self._take_locked()
                wait = None if wake == float("inf") else max(wake - now, 0.0)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return []

    def stop(self) -> None:
        """Wake the consumer; frames still waiting are discarded. Safe to call twice."""
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()

    # --- outcome of each frame --------------------------------------------------------------------------------

    def on_processed(self, frame: CameraFrame) -> float:
        """Count ``frame`` as processed now; returns its latency in ms (arrival -> now)."""
        latency_ms = (self._clock() - frame.received) * 1e3
        with self._cond:
            self.counters[frame.camera].processed += 1
            self._latency[frame.camera].add(latency_ms)
            self._rates[frame.camera].tick()
        return latency_ms

    def on_error(self, camera: str, kind: str) -> None:
        """Count one bad frame of ``camera`` (its payload could not be decoded, is too large, ...)."""
        with self._cond:
            self.counters[camera].errors[kind] += 1

    def decode(self, frames: Sequence[CameraFrame], decode: Callable[[Any], Any]
               ) -> tuple[list[CameraFrame], list[Any], list[tuple[str, ImageDecodeError]]]:
        """``decode(payload)`` for each frame; a frame whose payload raises ImageDecodeError (wrong encoding,
        truncated data, over max_pixels ...) is counted against its own camera and left out of the batch.

        Returns the good frames, their decoded images and the (camera, error) pairs, for the caller to log.
        """
        good, images, errors = [], [], []
        for frame in frames:
            try:
                images.append(decode(frame.payload))
            except ImageDecodeError as exc:
                self.on_error(frame.camera, exc.kind)
                errors.append((frame.camera, exc))
                continue
            good.append(frame)
        return good, images, errors

    def snapshot(self, camera: str) -> dict[str, float | int | bool]:
        """A flat dict for diagnostics: counters, processed rate, latency median / p90, silent."""
        with self._cond:
            c = self.counters[camera]
            median, p90 = self._latency[camera].percentiles()
            out: dict[str, float | int | bool] = {
                "received": c.received, "processed": c.processed, "dropped": c.dropped,
                "errors": sum(c.errors.values()), "processed_rate_hz": self._rates[camera].rate(),
                "latency_median_ms": median, "latency_p90_ms": p90, "silent": self.silent(camera)}
            out.update({f"errors.{kind}": n for kind, n in sorted(c.errors.items())})
            return out
