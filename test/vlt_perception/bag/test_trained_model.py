"""bag_eval on a real (tiny, random-weight) VLTSeg training checkpoint through the torch engine, checked against
the model run directly on the dataset images (no bag, no engine, no pipeline)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.writer import write_records_bag

pytestmark = pytest.mark.cli
HEIGHT, WIDTH = 32, 64  # network input; the 16x24 frames are resized up to it and the labels back down


def direct_predictions(model, metadata, images, size=(HEIGHT, WIDTH)) -> list[np.ndarray]:
    """Labels = argmax of the model's eval-mode ``sem_seg`` scores on images resized and normalised here, mapped
    back with nearest neighbours."""
    mean, std = np.asarray(metadata.mean), np.asarray(metadata.std)
    out = []
    for image in images:
        x = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR) / 255.0  # h, w, 3
        x = torch.from_numpy(((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))  # 1, 3, h, w
        with torch.no_grad():
            scores = model(x)["sem_seg"]  # 1, C, h, w
        labels = scores[0].argmax(0).numpy().astype(np.uint8)  # h, w
        out.append(cv2.resize(labels, image.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    return out


def miou(preds, gts, num_classes) -> float:
    pred, gt = np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts])
    valid = gt != 255
    ious = [np.sum((pred == c) & (gt == c) & valid) / union for c in range(num_classes)
            if (union := np.sum(((pred == c) | (gt == c)) & valid))]
    return float(np.mean(ious))


def test_torch_checkpoint_matches_the_model_run_directly(fx, tmp_path):
    from vlt_training.training.checkpoint import save_checkpoint
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    # One frame per condition: the tiny model still takes seconds per forward on these CPUs.
    records = fx.write_cityscapes(tmp_path / "cs", {"clear": 1, "fog": 1})
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former").eval()
    metadata = metadata_for_model(model, HEIGHT, WIDTH)
    checkpoint = save_checkpoint(tmp_path / "run", 1, model, metadata, "task: segmentation\n")

    report = evaluate_bags([tmp_path / "bag"], checkpoint, tmp_path / "torch", engine="torch", precision="fp32",
                           figures=False)
    assert report["model"]["engine"] == "torch" and report["model"]["precision"] == "fp32"
    assert report["bags"]["bag"]["counts"]["matched"] == len(records)
    for condition in ("clear", "fog"):
        chosen = [r for r in records if r["condition"] == condition]
        preds = direct_predictions(model, metadata, [r["expected_image"] for r in chosen])
        want = miou(preds, [r["expected_labels"] for r in chosen], len(metadata.class_names))
        assert report["conditions"][condition]["segmentation"]["mIoU"] == pytest.approx(want, abs=0.005)


def test_bag_eval_cli_with_tta_scores_the_tta_predictions(fx, tmp_path, capsys):
    """``bag_eval --engine torch --tta`` end to end: the report says TTA and its mIoU is that of the multi-scale
    + flip averaged predictions (``TTASemantic``), not of one pass."""
    from vlt_perception.cli import bag_eval
    from vlt_training.training.checkpoint import save_checkpoint
    from vlt_training.evaluation.tta import TTASemantic
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    records = fx.write_cityscapes(tmp_path / "cs", {"clear": 2})
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former").eval()
    size = (64, 128)  # TTA's 0.5 scale needs a patch grid of at least 2 x 4 at the smallest scale
    metadata = metadata_for_model(model, *size)
    checkpoint = save_checkpoint(tmp_path / "run", 1, model, metadata, "task: segmentation\n")
    out = tmp_path / "report"
    assert bag_eval.main(["--bag", str(tmp_path / "bag"), "--model", str(checkpoint), "--engine", "torch",
                          "--precision", "fp32", "--tta", "--no-figures", "--out", str(out)]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["model"]["tta"] is True
    images = [r["expected_image"] for r in records]
    gts = [r["expected_labels"] for r in records]
    tta_preds = direct_predictions(TTASemantic(model), metadata, images, size)
    plain_preds = direct_predictions(model, metadata, images, size)
    want, one_pass = (miou(p, gts, len(metadata.class_names)) for p in (tta_preds, plain_preds))
    assert abs(want - one_pass) > 0.004  # this seed's random model: TTA changes the score (0.0121 vs 0.0065)
    got = report["conditions"]["clear"]["segmentation"]["mIoU"]
    assert got == pytest.approx(want, abs=1e-3)
