"""The latest-frame worker: newest frame processed, stale ones dropped and counted, submit never blocks."""

from __future__ import annotations

import threading

import pytest

from vlt_perception.pipeline.latest_frame import LatestFrameWorker

pytestmark = pytest.mark.timeout(30)


class GatedProcessor:
    """Blocks inside ``process`` until released, recording the frames it saw."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.started = threading.Semaphore(0)
        self.gate = threading.Event()

    def __call__(self, frame: int) -> None:
        self.seen.append(frame)
        self.started.release()
        assert self.gate.wait(20)


def test_newest_frame_wins_and_drops_are_counted():
    proc = GatedProcessor()
    drops: list[int] = []
    worker = LatestFrameWorker(proc, on_drop=drops.append)
    try:
        assert worker.submit(0) is True
        assert proc.started.acquire(timeout=10)  # frame 0 is being processed; the model is "slow"
        # The camera keeps going: these calls return while the worker is stuck, so they cannot block.
        results = [worker.submit(i) for i in range(1, 6)]
        assert results == [True, False, False, False, False]
        assert worker.dropped == 4 and drops == [1, 1, 1, 1]
        proc.gate.set()
        assert worker.wait_idle(10)
        assert proc.seen == [0, 5]  # frames 1-4 were stale; only the newest was processed
        assert worker.processed == 2 and worker.submitted == 6
    finally:
        proc.gate.set()
        worker.stop()
    assert not worker.alive


def test_no_drops_when_the_model_keeps_up():
    seen: list[int] = []
    worker = LatestFrameWorker(seen.append)
    try:
        for i in range(20):
            worker.submit(i)
            assert worker.wait_idle(10)
        assert seen == list(range(20)) and worker.dropped == 0
    finally:
        worker.stop()


def test_errors_are_reported_and_worker_survives():
    errors: list[BaseException] = []
    seen: list[int] = []

    def process(frame: int) -> None:
        if frame == 1:
            raise ValueError("bad frame")
        seen.append(frame)

    worker = LatestFrameWorker(process, on_error=errors.append)
    try:
        for i in range(3):
            worker.submit(i)
            assert worker.wait_idle(10)
        assert seen == [0, 2]
        assert len(errors) == 1 and "bad frame" in str(errors[0])
        assert worker.failed == 1 and worker.processed == 2
    finally:
        worker.stop()


def test_stop_is_idempotent_and_rejects_new_frames():
    worker = LatestFrameWorker(lambda frame: None)
    worker.stop()
    worker.stop()
    assert not worker.alive
    with pytest.raises(RuntimeError, match="after stop"):
        worker.submit(1)


def test_a_frame_pending_at_stop_is_discarded():
    proc = GatedProcessor()
    worker = LatestFrameWorker(proc)
    try:
        worker.submit(0)
        assert proc.started.acquire(timeout=10)  # frame 0 is in progress
        worker.submit(1)  # frame 1 waits in the mailbox
        worker.stop(timeout=0)  # ask to stop without waiting for frame 0
        proc.gate.set()
        worker.stop(timeout=10)
        assert not worker.alive
        assert proc.seen == [0]  # frame 1 arrived before stop() and must not run after it
        assert worker.processed == 1
        with pytest.raises(RuntimeError, match="after stop"):
            worker.submit(2)
    finally:
        proc.gate.set()
        worker.stop()
