"""A worker thread that always processes the newest frame and drops stale ones.

The subscription callback only calls :meth:`LatestFrameWorker.submit`, which stores the frame in a one-slot
mailbox and returns at once: it never waits for the model. When the camera is faster than the model, a frame
still waiting in the mailbox is replaced (and counted as dropped), so a frame waits at most one processing
time before its own processing starts: latency stays bounded by about twice the processing time instead of
growing with a queue.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)


class LatestFrameWorker(Generic[T]):
    """Runs ``process(frame)`` on a background thread for the newest submitted frame.

    ``on_drop(n)`` is called (from the submitting thread) when a pending frame is replaced; ``on_error(exc)``
    (from the worker thread) when ``process`` raises: the worker logs nothing itself and keeps running.
    """

    def __init__(
        self,
        process: Callable[[T], None],
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "latest-frame-worker",
    ) -> None:
        self._process = process
        self._on_drop = on_drop
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._has_pending = False
        self._busy = False
        self._stopping = False
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, frame: T) -> bool:
        """Hand over a frame; returns False if it replaced a frame that was never processed (a drop)."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("LatestFrameWorker.submit after stop()")
            replaced = self._has_pending
            self._pending = frame
            self._has_pending = True
            self.submitted += 1
            if replaced:
                self.dropped += 1
            self._cond.notify()
        if replaced and self._on_drop is not None:
            self._on_drop(1)
        return not replaced

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                frame, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._process(frame)
                ok = True
            except Exception as exc:  # noqa: BLE001 - one bad frame must not kill the node's worker
                ok = False
                if self._on_error is not None:
                    self._on_error(exc)
                else:
                    _log.exception("frame processing failed")
            with self._cond:
                self._busy = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no frame is pending or being processed; returns False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_pending and not self._busy, timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop after the frame in progress (a pending one is discarded). Safe to call twice."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
