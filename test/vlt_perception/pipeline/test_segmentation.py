"""SegmentationPipeline with a real ONNX model (tiny dominant-colour segmenter, see nodes/tiny_onnx.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine
from vlt_perception.pipeline.segmentation import PipelineError, SegmentationOutputs, SegmentationPipeline

_spec = importlib.util.spec_from_file_location("tiny_onnx", Path(__file__).parents[1] / "nodes" / "tiny_onnx.py")
tiny_onnx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_onnx)

ALL = SegmentationOutputs(labels=True, color=True, overlay=True, confidence=True)


class CountingEngine:
    """Wraps the real engine and counts infer calls (the pipeline, not the engine, is under test)."""

    def __init__(self, engine):
        self._engine = engine
        self.metadata, self.info, self.calls = engine.metadata, engine.info, 0

    def infer(self, images):
        self.calls += 1
        return self._engine.infer(images)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tiny_onnx.segmentation_model(tmp_path_factory.mktemp("seg") / "seg.onnx", height=16, width=32)
    return OnnxRuntimeEngine(path)


def _stripes(height=48, width=96):
    """Three vertical stripes: red, green, blue (each 1/3 of the width)."""
    rgb = np.full((height, width, 3), 40, dtype=np.uint8)
    third = width // 3
    for c in range(3):
        rgb[:, c * third : (c + 1) * third, c] = 220
    return rgb


def test_outputs_at_input_resolution(engine):
    rgb = _stripes()
    result = SegmentationPipeline(engine, overlay_alpha=0.5).process(rgb, ALL)
    assert result.labels.shape == (48, 96) and result.labels.dtype == np.uint8
    assert result.color.shape == (48, 96, 3) and result.color.dtype == np.uint8
    assert result.overlay.shape == (48, 96, 3) and result.confidence.shape == (48, 96)
    assert result.confidence.dtype == np.float32
    margin = 4  # stay away from the stripe borders, where resizing blends classes
    palette = np.array(engine.metadata.palette, dtype=np.uint8)
    for c in range(3):
        inner = slice(c * 32 + margin, (c + 1) * 32 - margin)
        assert np.all(result.labels[:, inner] == c)
        assert np.all(result.color[:, inner] == palette[c])
        expected_overlay = 0.5 * rgb[:, inner].astype(float) + 0.5 * palette[c].astype(float)
        assert np.abs(result.overlay[:, inner] - expected_overlay).max() <= 1
        assert np.all(result.confidence[:, inner] > 1 / 3) and np.all(result.confidence <= 1.0 + 1e-6)
    assert result.engine_ms > 0 and result.total_ms >= result.engine_ms


def test_labels_match_reference_at_network_size(engine):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    labels = SegmentationPipeline(engine).process(rgb, SegmentationOutputs(labels=True, color=False)).labels
    # Same normalisation on every channel, so the dominant normalised channel is the dominant raw channel.
    np.testing.assert_array_equal(labels, rgb.argmax(axis=2))


def test_only_requested_outputs_are_computed(engine):
    counting = CountingEngine(engine)
    pipeline = SegmentationPipeline(counting)
    result = pipeline.process(_stripes(), SegmentationOutputs(labels=False, color=True))
    assert result.labels is None and result.overlay is None and result.confidence is None
    assert result.color is not None
    nothing = pipeline.process(_stripes(), SegmentationOutputs(labels=False, color=False))
    assert counting.calls == 1  # no subscriber, no inference
    assert nothing.labels is None and nothing.color is None


def test_confidence_absent_from_model(tmp_path):
    path = tiny_onnx.segmentation_model(tmp_path / "noconf.onnx", confidence=False)
    result = SegmentationPipeline(OnnxRuntimeEngine(path)).process(_stripes(), ALL)
    assert result.confidence is None and result.labels is not None


def test_rejects_detection_model_and_bad_images(tmp_path, engine):
    det = tiny_onnx.detection_model(tmp_path / "det.onnx", np.zeros((1, 4)), np.zeros(1), np.zeros(1), ["car"])
    with pytest.raises(PipelineError, match="detection"):
        SegmentationPipeline(OnnxRuntimeEngine(det))
    with pytest.raises(ValueError, match="overlay_alpha"):
        SegmentationPipeline(engine, overlay_alpha=2.0)
    with pytest.raises(ValueError, match="uint8"):
        SegmentationPipeline(engine).process(np.zeros((8, 8, 3), np.float32))
