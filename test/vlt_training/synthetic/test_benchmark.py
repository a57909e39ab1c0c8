"""The benchmark folder writer, the layout writers and the generate CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlt_perception.datasets import instance_masks, load_acdc, load_cityscapes, load_coco
from vlt_training.cli import generate
from vlt_training.synthetic import writers
from vlt_training.synthetic.benchmark import generate_benchmark

KW = dict(num_train=2, num_val=2, height=48, width=96)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    manifest = generate_benchmark(out, seed=5, **KW)
    return out, manifest


def test_layout(bench):
    out, manifest = bench
    files = tree_bytes(out)
    city = "cityscapes/gtFine/val/synthval00/synthval00_000000_000001"
    for suffix in ("labelIds", "labelTrainIds", "instanceIds"):
        assert f"{city}_gtFine_{suffix}.png" in files
    assert "cityscapes/leftImg8bit/train/synthtrain00/synthtrain00_000000_000001_leftImg8bit.png" in files
    for condition in manifest["conditions"]:
        assert f"acdc/rgb_anon/{condition}/val/SYN0000/SYN0000_frame_000001_rgb_anon.png" in files
        assert f"acdc/gt/{condition}/val/SYN0000/SYN0000_frame_000001_gt_labelTrainIds.png" in files
        assert f"acdc/annotations/instances_{condition}_val.json" in files
    assert {"cityscapes/annotations/instances_train.json", "benchmark.json"} <= set(files)
    assert not [f for f in files if f.endswith(".tmp")]
    assert json.loads(files["benchmark.json"])["seed"] == 5


def test_same_seed_identical_bytes_any_worker_count(bench, tmp_path):
    out, _ = bench
    generate_benchmark(tmp_path, seed=5, workers=2, **KW)
    assert tree_bytes(tmp_path) == tree_bytes(out)


def test_different_seed_differs(bench, tmp_path):
    out, _ = bench
    generate_benchmark(tmp_path, seed=6, conditions=[], **KW)
    name = "cityscapes/leftImg8bit/train/synthtrain00/synthtrain00_000000_000000_leftImg8bit.png"
    assert (tmp_path / name).read_bytes() != (out / name).read_bytes()


def test_conditions_keep_the_source_labels_and_change_the_image(bench):
    import cv2

    out, manifest = bench
    src_img = cv2.imread(str(out / "cityscapes/leftImg8bit/val/synthval00/synthval00_000000_000000_leftImg8bit.png"))
    src_lbl = (out / "cityscapes/gtFine/val/synthval00/synthval00_000000_000000_gtFine_labelIds.png").read_bytes()
    for condition in manifest["conditions"]:
        gt = out / "acdc/gt" / condition / "val/SYN0000/SYN0000_frame_000000_gt_labelIds.png"
        assert gt.read_bytes() == src_lbl
        img = cv2.imread(str(out / "acdc/rgb_anon" / condition / "val/SYN0000/SYN0000_frame_000000_rgb_anon.png"))
        assert np.abs(img.astype(int) - src_img).mean() > 3


def test_coco_json_is_valid_for_pycocotools(bench):
    from pycocotools.coco import COCO

    out, _ = bench
    coco = COCO(str(out / "cityscapes/annotations/instances_val.json"))
    assert len(coco.getImgIds()) == 2
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())][:3] == ["person", "rider", "car"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(a["bbox"][2] > 0 and a["bbox"][3] > 0 and a["iscrowd"] == 0 for a in anns)


def _objects_with_masks(record: dict) -> list[tuple]:
    """(category, box, mask bytes) of every object of a record, masks from ``instance_masks``, sorted."""
    masks = instance_masks(record)
    assert masks is not None and masks.shape[1:] == (KW["height"], KW["width"]), record["file_name"]
    return sorted((a["category_id"], tuple(float(v) for v in a["bbox"]), m.tobytes())
                  for a, m in zip(record["annotations"], masks))


def test_coco_masks_are_the_instance_maps(bench):
    """The COCO json's segmentations decode (through the COCO loader and ``instance_masks``) to exactly the masks
    the Cityscapes / ACDC instance maps give, object for object, and their area is the json's ``area``."""
    from pycocotools import mask as mask_utils

    out, manifest = bench
    condition = manifest["conditions"][0]
    pairs = [(load_coco(out / "cityscapes", "val"), load_cityscapes(out / "cityscapes", "val")),
             (load_coco(out / "acdc", f"{condition}_val"), load_acdc(out / "acdc", "val", conditions=condition))]
    compared = 0
    for coco_records, map_records in pairs:
        maps = {Path(r["file_name"]).name: r for r in map_records}
        assert len(coco_records) == len(maps) == KW["num_val"]
        for record in coco_records:
            from_rle = _objects_with_masks(record)
            assert len(from_rle) == len(record["annotations"])
            assert from_rle == _objects_with_masks(maps[Path(record["file_name"]).name])  # the loaders' orders differ
            compared += len(from_rle)
    assert compared > 0
    coco = json.loads((out / "cityscapes/annotations/instances_val.json").read_text())
    assert all(mask_utils.area(a["segmentation"]) == a["area"] > 0 for a in coco["annotations"])


def test_write_png_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "a" / "x.png"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(writers.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        writers.write_png(target, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.rglob("*")) == [tmp_path / "a"]  # neither the PNG nor a temporary file


def test_unknown_condition_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown condition"):
        generate_benchmark(tmp_path, conditions=["hail"], **KW)


@pytest.mark.cli
def test_cli_main(tmp_path, capsys):
    assert generate.main(["--out", str(tmp_path), "--num-train", "1", "--num-val", "1", "--height", "32",
                          "--width", "64", "--conditions", "fog,night", "--strength", "fog=0.9"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "benchmark.json").read_text())
    assert manifest["conditions"] == ["fog", "night"] and manifest["strengths"]["fog"] == 0.9
    assert not (tmp_path / "acdc/rgb_anon/rain").exists()


@pytest.mark.cli
@pytest.mark.parametrize("args, message", [
    (["--conditions", "hail"], "unknown condition"),
    (["--strength", "fog"], "COND=VALUE"),
    (["--strength", "fog=2"], "outside"),
    (["--height", "4"], "at least 16"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        generate.main(["--out", str(tmp_path)] + args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.cli
def test_cli_as_module(tmp_path):
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "vlt_training.cli.generate", "--out", str(tmp_path),
                           "--num-train", "1", "--num-val", "0", "--height", "32", "--width", "64"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cityscapes/leftImg8bit/train/synthtrain00/synthtrain00_000000_000000_leftImg8bit.png").is_file()


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    generate_benchmark(tmp_path, num_train=2, num_val=0, height=32, width=64, conditions=[])
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        generate_benchmark(tmp_path, num_train=1, num_val=0, height=32, width=64, conditions=[])
    generate_benchmark(tmp_path, num_train=1, num_val=0, height=32, width=64, conditions=[], overwrite=True)
    images = list((tmp_path / "cityscapes/leftImg8bit").rglob("*.png"))
    assert len(images) == 1  # the second image of the first run is gone


@pytest.mark.cli
def test_cli_non_empty_out(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert generate.main(["--out", str(tmp_path), "--num-train", "1", "--num-val", "0", "--height", "32",
                          "--width", "64"]) == 2
    assert "not empty" in capsys.readouterr().err
