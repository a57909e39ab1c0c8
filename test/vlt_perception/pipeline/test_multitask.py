"""MultiTaskPipeline with real ONNX models: one engine call per batch, results split per camera at its own size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "nodes"))
import tiny_multitask_onnx  # noqa: E402
import tiny_onnx  # noqa: E402

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from vlt_perception.pipeline.detection import DetectionPipeline  # noqa: E402
from vlt_perception.pipeline.multitask import FrameRequest, MultiTaskPipeline  # noqa: E402
from vlt_perception.pipeline.segmentation import (PipelineError, SegmentationOutputs,  # noqa: E402
                                                  SegmentationPipeline)

ALL_SEG = SegmentationOutputs(labels=True, color=True, overlay=True, confidence=True)
BOTH = FrameRequest(ALL_SEG, detections=True)


class CountingEngine:
    """An engine wrapper that records the batch size of every call (the pipeline's engine calls)."""

    def __init__(self, inner) -> None:
        self.inner, self.metadata, self.info, self.calls = inner, inner.metadata, inner.info, []

    def infer(self, images):
        self.calls.append(len(images))
        return self.inner.infer(images)


@pytest.fixture(scope="module")
def multitask_engine(tmp_path_factory):
    path = tiny_multitask_onnx.multitask_model(tmp_path_factory.mktemp("mt") / "mt.onnx", height=16, width=32)
    return OnnxRuntimeEngine(path)


def _colour(channel: int, height: int, width: int) -> np.ndarray:
    rgb = np.full((height, width, 3), 30, np.uint8)
    rgb[..., channel] = 230
    return rgb


# Three cameras of different sizes, each one colour: red 1080p, green 480x640, blue 37x53.
FRAMES = [_colour(0, 1080, 1920), _colour(1, 480, 640), _colour(2, 37, 53)]


def test_one_engine_call_for_the_batch_and_each_camera_gets_its_own_results_at_its_own_size(multitask_engine):
    engine = CountingEngine(multitask_engine)
    pipeline = MultiTaskPipeline(engine, score_threshold=0.5)
    result = pipeline.process(FRAMES, [BOTH] * 3)
    assert engine.calls == [3] and result.engine_calls == 1
    for channel, (rgb, frame) in enumerate(zip(FRAMES, result.frames)):
        seg = frame.segmentation
        h, w = rgb.shape[:2]
        assert seg.labels.shape == (h, w) and np.all(seg.labels == channel)
        assert seg.color.shape == (h, w, 3) and seg.color[0, 0].tolist() == [255 * (c == channel) for c in range(3)]
        assert seg.overlay.shape == (h, w, 3) and seg.confidence.shape == (h, w)
        dets = frame.detections
        assert dets.class_names == [tiny_multitask_onnx.DET_CLASSES[channel]]
        assert dets.scores[0] == pytest.approx(230 / 255, abs=1e-3)
        # Boxes from network pixels (16x32) to this camera's pixels.
        scale = np.array([w / 32, h / 16, w / 32, h / 16], np.float32)
        np.testing.assert_allclose(dets.boxes[0], tiny_multitask_onnx.DET_BOXES[channel] * scale, rtol=1e-5)


def test_batched_results_equal_the_single_frame_pipelines(multitask_engine, tmp_path):
    """Splitting the batch reuses the single-frame post-processing: same pixels, same boxes."""
    seg_engine = OnnxRuntimeEngine(tiny_onnx.segmentation_model(tmp_path / "seg.onnx", height=16, width=32))
    batched = MultiTaskPipeline(seg_engine, overlay_alpha=0.3).process(FRAMES, [FrameRequest(ALL_SEG)] * 3)
    single = SegmentationPipeline(seg_engine, overlay_alpha=0.3)
    for rgb, frame in zip(FRAMES, batched.frames):
        alone = single.process(rgb, ALL_SEG)
        for name in ("labels", "color", "overlay", "confidence"):
            np.testing.assert_array_equal(getattr(frame.segmentation, name), getattr(alone, name), err_msg=name)
        assert frame.detections is None  # a segmentation model has no detections


def test_an_engine_that_takes_batch_1_only_runs_the_frames_one_by_one(tmp_path):
    """tiny_onnx's detector has a fixed batch of 1 (like a --static-batch export)."""
    boxes = np.array([[4, 4, 20, 16], [30, 10, 60, 30]], np.float32)
    path = tiny_onnx.detection_model(tmp_path / "det.onnx", boxes, np.array([0.9, 0.5], np.float32),
                                     np.array([1, 0]), ["person", "car"], height=32, width=64)
    engine = CountingEngine(OnnxRuntimeEngine(path))
    pipeline = MultiTaskPipeline(engine, score_threshold=0.3)
    result = pipeline.process(FRAMES, [FrameRequest(detections=True)] * 3)
    assert pipeline.batch_error and "batch of 3" in pipeline.batch_error
    assert engine.calls == [3, 1, 1, 1] and pipeline.max_batch == 1
    single = DetectionPipeline(engine.inner, score_threshold=0.3)
    for rgb, frame in zip(FRAMES, result.frames):
        alone = single.process(rgb)
        assert frame.detections.class_names == alone.class_names == ["car", "person"]
        np.testing.assert_array_equal(frame.detections.boxes, alone.boxes)
        assert frame.segmentation is None
    engine.calls.clear()
    pipeline.process(FRAMES[:2], [FrameRequest(detections=True)] * 2)
    assert engine.calls == [1, 1]  # no more batched tries


def test_an_engine_error_after_batching_worked_is_not_taken_for_a_batch_limit(multitask_engine):
    class Failing(CountingEngine):
        fail = False

        def infer(self, images):
            if self.fail:
                raise RuntimeError("device lost")
            return super().infer(images)

    engine = Failing(multitask_engine)
    pipeline = MultiTaskPipeline(engine)
    pipeline.process(FRAMES, [BOTH] * 3)
    engine.fail = True
    with pytest.raises(RuntimeError, match="device lost"):
        pipeline.process(FRAMES, [BOTH] * 3)
    assert pipeline.batch_error is None and pipeline.max_batch == 8


def test_max_batch_splits_and_frames_without_a_request_skip_the_engine(multitask_engine):
    engine = CountingEngine(multitask_engine)
    pipeline = MultiTaskPipeline(engine, max_batch=2)
    frames = FRAMES + [_colour(0, 20, 20), _colour(1, 20, 20)]
    requests = [BOTH, FrameRequest(), BOTH, FrameRequest(detections=True), FrameRequest(ALL_SEG)]
    result = pipeline.process(frames, requests)
    assert engine.calls == [2, 2]  # the camera nobody listens to is not in the batch
    assert result.frames[1].segmentation is None and result.frames[1].detections is None
    assert result.frames[3].segmentation is None and result.frames[3].detections.class_names == ["red_thing"]
    assert result.frames[4].detections is None and np.all(result.frames[4].segmentation.labels == 1)
    assert np.all(result.frames[2].segmentation.labels == 2)


def test_the_detection_filter_changes_atomically(multitask_engine):
    pipeline = MultiTaskPipeline(multitask_engine, score_threshold=0.05)
    assert len(pipeline.process(FRAMES[:1], [BOTH]).frames[0].detections) == 3
    pipeline.configure(classes=["blue_thing"])
    assert pipeline.process(FRAMES[:1], [BOTH]).frames[0].detections.class_names == ["blue_thing"]
    pipeline.configure(score_threshold=0.5, keep_classes=True)
    assert pipeline.process(FRAMES[2:], [BOTH]).frames[0].detections.class_names == ["blue_thing"]
    assert len(pipeline.process(FRAMES[:1], [BOTH]).frames[0].detections) == 0
    with pytest.raises(ValueError, match="unknown classes"):
        pipeline.configure(classes=["red"])  # a segmentation class, not a detection class


def test_a_model_output_that_breaks_the_contract_names_the_model(multitask_engine):
    class Truncated(CountingEngine):
        def infer(self, images):
            raw = dict(self.inner.infer(images))
            raw["det_scores"] = raw["det_scores"][:, :2]
            return raw

    with pytest.raises(PipelineError, match="det_scores"):
        MultiTaskPipeline(Truncated(multitask_engine)).process(FRAMES, [BOTH] * 3)


def test_split_of_one_batch_is_unaffected_by_the_engine_run_of_the_next(multitask_engine):
    """A node splits batch k while the engine already runs batch k+1 (same batch size, same input buffer)."""
    pipeline = MultiTaskPipeline(multitask_engine, score_threshold=0.5)
    first = [_colour(0, 40, 60), _colour(1, 30, 50)]
    second = [_colour(2, 40, 60), _colour(2, 30, 50)]
    job = pipeline.run_engine(first, [BOTH] * 2)
    pipeline.run_engine(second, [BOTH] * 2)  # refills the (2, 3, h, w) input buffer
    frames = pipeline.split(job).frames
    assert [np.unique(f.segmentation.labels).tolist() for f in frames] == [[0], [1]]
    assert [f.detections.class_names for f in frames] == [["red_thing"], ["green_thing"]]
    assert [f.segmentation.labels.shape for f in frames] == [(40, 60), (30, 50)]


def test_three_batches_in_flight_keep_their_own_inputs(multitask_engine):
    """A node prepares batch k+2 while the engine runs batch k+1 and batch k is split: each keeps its own inputs."""
    pipeline = MultiTaskPipeline(CountingEngine(multitask_engine), score_threshold=0.5)
    shapes = [(40, 60), (30, 50)]
    jobs = [pipeline.prepare([_colour(c, *s) for s in shapes], [BOTH] * 2) for c in range(3)]  # red, green, blue
    pipeline.infer(jobs[1])
    pipeline.infer(jobs[0])
    pipeline.infer(jobs[2])
    assert pipeline.engine.calls == [2, 2, 2] and not any(job.inputs for job in jobs)  # inputs released once run
    for channel, job in enumerate(jobs):
        frames = pipeline.split(job).frames
        assert [np.unique(f.segmentation.labels).tolist() for f in frames] == [[channel], [channel]]
        assert [f.segmentation.labels.shape for f in frames] == shapes
