import cv2
import numpy as np
import pytest

from vlt_perception.metadata import ModelMetadata
from vlt_perception.preprocess import Preprocessor
from vlt_training.export.verify import compare_outputs, detection_agreement, images_from_checkpoint, \
    verification_batch

SEG = ModelMetadata(class_names=["a", "b"], input_height=8, input_width=16)
DET = ModelMetadata(task="detection", class_names=["a", "b"], input_height=8, input_width=16)


def det(boxes, scores, labels):
    return {"boxes": np.array([boxes], np.float32).reshape(1, -1, 4), "scores": np.array([scores], np.float32),
            "labels": np.array([labels], np.int64)}


def test_segmentation_agreement_and_diffs():
    ref = {"labels": np.zeros((1, 4, 5), np.uint8), "confidence": np.full((1, 4, 5), 0.5, np.float32)}
    out = {"labels": ref["labels"].copy(), "confidence": ref["confidence"] + 0.01}
    out["labels"][0, 0, :2] = 1
    agreement, diffs = compare_outputs(ref, out, SEG)
    assert agreement == pytest.approx(18 / 20)
    assert diffs["confidence"] == pytest.approx(0.01, rel=1e-3)


def test_missing_or_misshaped_outputs():
    ref = {"labels": np.zeros((1, 4, 5), np.uint8), "confidence": np.zeros((1, 4, 5), np.float32)}
    with pytest.raises(ValueError, match=r"lack \['confidence'\]"):
        compare_outputs(ref, {"labels": ref["labels"]}, SEG)
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(ref, {"labels": np.zeros((1, 4, 4), np.uint8), "confidence": ref["confidence"]}, SEG)


def test_detection_agreement():
    ref = det([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 1, 1]], [0.9, 0.8, 0.01], [0, 1, 1])
    same_reordered = det([[20, 20, 30, 30], [0, 0, 10, 10]], [0.8, 0.9], [1, 0])
    assert detection_agreement(ref, same_reordered) == 1.0
    wrong_label = det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [1, 1])
    assert detection_agreement(ref, wrong_label) == 0.5
    shifted = det([[0, 0, 10, 10], [25, 25, 35, 35]], [0.9, 0.8], [0, 1])
    assert detection_agreement(ref, shifted) == 0.5
    assert detection_agreement(ref, det([[0, 0, 1, 1]], [0.0], [0])) == 0.0
    degenerate = det([[5, 5, 5, 9]], [0.5], [1])  # zero width: IoU 0 even with itself
    assert detection_agreement(degenerate, degenerate) == 1.0
    assert detection_agreement(degenerate, det([[5, 5, 5, 19]], [0.5], [1])) == 0.0
    nothing = det([[0, 0, 1, 1]], [0.0], [0])
    assert detection_agreement(nothing, nothing) == 1.0
    agreement, diffs = compare_outputs(ref, ref, DET)
    assert agreement == 1.0 and diffs == {"boxes": 0.0, "scores": 0.0}


def test_images_from_a_folder(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    batch, source = verification_batch(SEG, image_dir=tmp_path, count=4)
    assert source == "folder" and batch.shape == (1, 3, 8, 16)
    np.testing.assert_allclose(batch, Preprocessor.from_metadata(SEG)(rgb))


def test_noise_fallback_warns(caplog):
    with caplog.at_level("WARNING"):
        batch, source = verification_batch(SEG, count=3)
    assert source == "noise" and batch.shape == (3, 3, 8, 16)
    assert "synthetic noise" in caplog.text


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="verification image folder not found"):
        verification_batch(SEG, image_dir=tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="no images"):
        verification_batch(SEG, image_dir=tmp_path)


def test_unreachable_checkpoint_dataset_falls_back(tmp_path):
    (tmp_path / "config.yaml").write_text("eval:\n  datasets:\n  - {name: cityscapes, root: /nonexistent, split: val}\n")
    assert images_from_checkpoint(tmp_path, 2) == []
    assert images_from_checkpoint(None, 2) == []


class _FixedEngine:
    """An engine stand-in that returns given outputs (verify_engine is the thing under test, not the engine)."""

    def __init__(self, outputs):
        from types import SimpleNamespace

        self.outputs = outputs
        self.info = SimpleNamespace(engine="fixed", precision="fp32")

    def infer(self, images):
        return self.outputs


def test_parity_on_no_detections_is_reported_not_silent(caplog):
    """detection_agreement is 1.0 with nothing to compare; verify_engine says how many detections it compared and
    warns when there were none."""
    from vlt_training.export.verify import count_detections, verify_engine

    images = np.zeros((1, 3, 8, 16), np.float32)
    some = det([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 1, 1]], [0.9, 0.8, 0.01], [0, 1, 1])
    assert count_detections(some) == 2
    report = verify_engine(_FixedEngine(some), some, images, "noise", DET)
    assert report.compared_detections == 2 and "over 2 detections" in report.summary()
    nothing = det([[0, 0, 1, 1]], [0.0], [0])
    with caplog.at_level("WARNING"):
        report = verify_engine(_FixedEngine(nothing), nothing, images, "noise", DET)
    assert report.passed and report.compared_detections == 0
    assert "no detections above 0.05" in caplog.text and "over 0 detections" in report.summary()
    seg = {"labels": np.zeros((1, 8, 16), np.uint8), "confidence": np.zeros((1, 8, 16), np.float32)}
    assert verify_engine(_FixedEngine(seg), seg, images, "noise", SEG).compared_detections is None
