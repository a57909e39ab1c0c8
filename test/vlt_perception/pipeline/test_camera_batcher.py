"""CameraBatcher: the batching rules on a fake clock (no rclpy, no waiting)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vlt_perception.pipeline.camera_batcher import CameraBatcher
from vlt_perception.pipeline.image_codec import KIND_ENCODING, KIND_SIZE, KIND_TOO_LARGE, decode_image

CAMERAS = ["front", "left", "right", "rear"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1e3


def _batcher(window_ms: float = 20.0, silent_after_ms: float = 500.0, cameras=CAMERAS):
    clock = Clock()
    return CameraBatcher(cameras, window_ms, silent_after_ms, clock=clock), clock


def _all_publishing(batcher, clock):
    """Every camera sends one frame and the batch goes: all cameras count as publishing from here on."""
    for camera in batcher.cameras:
        batcher.submit(camera, f"{camera}-warm")
    assert [f.camera for f in batcher.take()] == batcher.cameras


def test_a_batch_goes_as_soon_as_every_camera_has_a_frame():
    batcher, clock = _batcher()
    _all_publishing(batcher, clock)
    for camera in CAMERAS[:-1]:
        batcher.submit(camera, camera)
        assert not batcher.ready() and batcher.take() == []
    batcher.submit("rear", "rear")  # the last one: no need to wait for the window
    frames = batcher.take()
    assert [(f.camera, f.payload) for f in frames] == [(c, c) for c in CAMERAS]
    assert batcher.take() == []  # the mailbox is empty again


def test_the_window_closing_releases_the_cameras_that_have_frames():
    batcher, clock = _batcher(window_ms=20.0)
    _all_publishing(batcher, clock)
    batcher.submit("left", "l1")
    clock.advance(5)
    batcher.submit("front", "f1")
    clock.advance(14.9)  # 19.9 ms after the oldest waiting frame
    assert batcher.take() == []
    clock.advance(0.1)
    assert [(f.camera, f.payload) for f in batcher.take()] == [("front", "f1"), ("left", "l1")]
    # The next window opens with the next frame, not before.
    clock.advance(100)
    batcher.submit("rear", "r1")
    assert batcher.take() == []
    clock.advance(20)
    assert [f.payload for f in batcher.take()] == ["r1"]


def test_the_newest_frame_of_a_camera_wins_and_the_replaced_one_counts_as_dropped():
    batcher, clock = _batcher()
    _all_publishing(batcher, clock)
    for k in range(3):
        assert batcher.submit("front", f"f{k}") == (k == 0)
    for camera in CAMERAS[1:]:
        batcher.submit(camera, camera)
    frames = batcher.take()
    assert frames[0].camera == "front" and frames[0].payload == "f2"
    counters = batcher.counters
    assert (counters["front"].received, counters["front"].dropped) == (4, 2)
    assert all(counters[c].dropped == 0 for c in CAMERAS[1:])


def test_a_silent_camera_delays_the_others_by_one_window_at_most_then_not_at_all():
    batcher, clock = _batcher(window_ms=20.0, silent_after_ms=500.0)
    _all_publishing(batcher, clock)
    released_after_ms = []
    # "rear" stops publishing; the others publish every 50 ms.
    for _ in range(20):
        clock.advance(50)
        for camera in CAMERAS[:-1]:
            batcher.submit(camera, camera)
        waited = 0.0
        while not (frames := batcher.take()):
            clock.advance(1)
            waited += 1
            assert waited <= 20, "a batch waited longer than the window"
        assert [f.camera for f in frames] == CAMERAS[:-1]
        released_after_ms.append(waited)
    assert released_after_ms[0] == 20  # waits for rear within the window while it may still come
    assert released_after_ms[-1] == 0  # rear silent for > 500 ms: nobody waits for it any more
    assert batcher.snapshot("rear")["silent"] and not batcher.snapshot("front")["silent"]
    assert batcher.counters["front"].processed == 0  # processed counts only what the caller reports
    # rear comes back: it is waited for again.
    clock.advance(50)
    batcher.submit("rear", "back")
    for camera in CAMERAS[:-1]:
        assert batcher.take() == []
        batcher.submit(camera, camera)
    assert [f.camera for f in batcher.take()] == CAMERAS


def test_cameras_that_never_sent_do_not_hold_the_first_frames():
    batcher, clock = _batcher(window_ms=1000.0)
    batcher.submit("left", "l0")
    assert [f.payload for f in batcher.take()] == ["l0"]


def test_frames_of_different_sizes_pass_through_per_camera_and_bad_ones_count_against_their_camera():
    """Decoding per frame: mixed sizes stay as they are, garbage in one camera leaves the others' frames."""
    batcher, clock = _batcher()
    _all_publishing(batcher, clock)
    sizes = {"front": (1080, 1920), "left": (480, 640), "right": (37, 53)}
    for camera, (h, w) in sizes.items():
        rgb = np.full((h, w, 3), len(camera), np.uint8)
        batcher.submit(camera, ("rgb8", h, w, w * 3, rgb.tobytes()))
    batcher.submit("rear", ("rgb9", 4, 4, 12, bytes(48)))  # unknown encoding

    def decode(fields):
        encoding, h, w, step, data = fields
        return decode_image(encoding, h, w, step, data, False, max_pixels=3_000_000)

    good, images, errors = batcher.decode(batcher.take(), decode)
    assert [f.camera for f in good] == ["front", "left", "right"]
    assert [im.shape[:2] for im in images] == list(sizes.values())
    assert all(np.all(im == len(f.camera)) for f, im in zip(good, images))
    assert [(camera, err.kind) for camera, err in errors] == [("rear", KIND_ENCODING)]

    # Truncated data and a frame over max_pixels, each in its own camera.
    batcher.submit("front", ("rgb8", 1080, 1920, 1920 * 3, bytes(100)))
    batcher.submit("left", ("mono8", 2000, 2000, 2000, bytes(10)))
    batcher.submit("right", ("rgb8", 2, 2, 6, bytes(12)))
    batcher.submit("rear", ("rgb8", 2, 2, 6, bytes(12)))
    good, images, errors = batcher.decode(batcher.take(), decode)
    assert [f.camera for f in good] == ["right", "rear"]
    assert sorted((camera, err.kind) for camera, err in errors) == [("front", KIND_SIZE), ("left", KIND_TOO_LARGE)]
    snaps = {c: batcher.snapshot(c) for c in CAMERAS}
    assert {c: s["errors"] for c, s in snaps.items()} == {"front": 1, "left": 1, "right": 0, "rear": 1}
    assert snaps["rear"][f"errors.{KIND_ENCODING}"] == 1 and snaps["front"][f"errors.{KIND_SIZE}"] == 1


def test_processed_and_latency_per_camera_from_the_clock():
    batcher, clock = _batcher()
    batcher.submit("front", "f")
    clock.advance(10)
    batcher.submit("left", "l")
    frames = batcher.take()  # every camera that ever sent has a frame
    clock.advance(30)
    latencies = [batcher.on_processed(f) for f in frames]
    assert latencies == pytest.approx([40.0, 30.0])
    assert batcher.snapshot("front")["latency_median_ms"] == pytest.approx(40.0)
    assert (batcher.counters["left"].processed, batcher.counters["right"].processed) == (1, 0)


def test_wait_batch_returns_a_ready_batch_and_stop_releases_a_waiting_consumer():
    batcher, clock = _batcher(cameras=["a", "b"])
    batcher.submit("a", 1)
    batcher.submit("b", 2)
    assert [f.payload for f in batcher.wait_batch(timeout=30)] == [1, 2]
    got = []
    consumer = threading.Thread(target=lambda: got.append(batcher.wait_batch()))
    consumer.start()
    batcher.stop()
    consumer.join(timeout=30)  # hang guard
    assert not consumer.is_alive() and got == [[]]


def test_wait_batch_wakes_when_the_window_closes():
    """The consumer blocks while the window is open and takes the batch once the clock passes its end."""
    batcher, clock = _batcher(window_ms=20.0, cameras=["a", "b"])
    _all_publishing(batcher, clock)
    batcher.submit("a", "a1")
    got = []
    consumer = threading.Thread(target=lambda: got.append(batcher.wait_batch(timeout=60)))
    consumer.start()
    clock.advance(25)  # the consumer notices on its next wake-up (at most one real window later)
    consumer.join(timeout=60)  # hang guard
    assert [f.payload for f in got[0]] == ["a1"]


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="unique"):
        CameraBatcher(["a", "a"], 10)
    with pytest.raises(ValueError, match="unique"):
        CameraBatcher([], 10)
    with pytest.raises(ValueError, match="window_ms"):
        CameraBatcher(["a"], -1)
    with pytest.raises(KeyError, match="unknown camera"):
        CameraBatcher(["a"], 10).submit("b", 0)
