"""Write the whole procedural domain-shift benchmark folder.

``<out>/cityscapes``: the clean ``source`` domain, train and val, in the Cityscapes layout, plus
``annotations/instances_{train,val}.json`` (boxes, and masks as compressed RLE). ``<out>/acdc``: the *same* val
scenes rendered under each target condition, in the ACDC layout, plus ``annotations/instances_{condition}_val.json``;
so source-val mIoU and condition mIoU are measured on identical geometry and retention (target / source) compares
like with like.
``<out>/benchmark.json`` records the parameters that produced it.

Every image draws from its own generator seeded by (seed, split or condition, index), so the output does not depend
on the order of generation or on the number of workers, and the same seed gives identical bytes.
"""

from __future__ import annotations

import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlt_perception.labels import CITYSCAPES_THING_CLASSES
from vlt_training.synthetic.conditions import DEFAULT_STRENGTH, apply_condition, list_conditions
from vlt_training.synthetic.scene import DRAWN_CLASSES, SceneConfig, render_scene
from vlt_training.synthetic.writers import (CocoBuilder, instance_rle, write_acdc_sample, write_cityscapes_sample,
                                            write_json)

GENERATOR_VERSION = 2  # 2: the COCO json has segmentations


def image_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other (seed, stream, index)."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), int(index)])


def cityscapes_name(split: str, index: int) -> tuple[str, str]:
    """(city, name) of image ``index`` of ``split``: 100 images per synthetic city."""
    city = f"synth{split}{index // 100:02d}"
    return city, f"{city}_{index // 100:06d}_{index % 100:06d}"


def acdc_name(index: int) -> tuple[str, str]:
    """(sequence, name) in the ACDC layout of val scene ``index``."""
    seq = f"SYN{index // 100:04d}"
    return seq, f"{seq}_frame_{index:06d}"


@dataclass(frozen=True)
class _Job:
    out: str
    split: str
    index: int
    height: int
    width: int
    seed: int
    conditions: tuple[str, ...]
    strengths: tuple[float, ...]


def _run_job(job: _Job) -> dict:
    """Render one scene, write it (and its condition versions for val); return its COCO entries."""
    out = Path(job.out)
    scene = render_scene(image_rng(job.seed, job.split, job.index), job.height, job.width, SceneConfig())
    city, name = cityscapes_name(job.split, job.index)
    paths = write_cityscapes_sample(out / "cityscapes", job.split, city, name, scene.image, scene.label_ids,
                                    scene.instance_ids)
    # The COCO json carries each object's mask too (compressed RLE of the instance map), so Mask R-CNN trains on
    # the COCO layout as well as on the Cityscapes / ACDC instance maps.
    objects = [{**obj, "segmentation": instance_rle(scene.instance_ids, obj["instance_id"])} for obj in scene.objects]
    result = {"index": job.index, "objects": objects,
              "file_name": paths["image"].relative_to(out / "cityscapes").as_posix(), "conditions": {}}
    seq, acdc = acdc_name(job.index)
    for condition, strength in zip(job.conditions, job.strengths):
        rng = image_rng(job.seed, f"{job.split}/{condition}", job.index)
        image = apply_condition(condition, scene.image, rng, strength, depth=scene.depth)
        cpaths = write_acdc_sample(out / "acdc", condition, job.split, seq, acdc, image, scene.label_ids,
                                   scene.instance_ids)
        result["conditions"][condition] = cpaths["image"].relative_to(out / "acdc").as_posix()
    return result


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output folder {out} is not empty (pass overwrite=True / --overwrite to replace "
                                  "a previous benchmark there)")
        for name in ("cityscapes", "acdc"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        (out / "benchmark.json").unlink(missing_ok=True)


def generate_benchmark(out: str | Path, num_train: int = 8, num_val: int = 4, height: int = 512, width: int = 1024,
                       seed: int = 0, conditions: list[str] | None = None,
                       strengths: dict[str, float] | None = None, workers: int = 1, overwrite: bool = False) -> dict:
    """Write the benchmark under ``out`` (see the module docstring) and return its manifest.

    ``out`` must be empty or absent, unless ``overwrite``, which first removes a previous benchmark's
    ``cityscapes/``, ``acdc/`` and ``benchmark.json`` there (so no stale images from a larger run stay behind).
    """
    conditions = list_conditions() if conditions is None else list(conditions)
    unknown = [c for c in conditions if c not in list_conditions()]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; known: {list_conditions()}")
    if num_train < 0 or num_val < 0:
        raise ValueError("image counts must be >= 0")
    strengths = {c: float((strengths or {}).get(c, DEFAULT_STRENGTH[c])) for c in conditions}
    out = Path(out)
    _prepare(out, overwrite)
    jobs = [_Job(str(out), "train", i, height, width, seed, (), ()) for i in range(num_train)]
    jobs += [_Job(str(out), "val", i, height, width, seed, tuple(conditions), tuple(strengths[c] for c in conditions))
             for i in range(num_val)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run_job, jobs, chunksize=4))
    else:
        results = [_run_job(job) for job in jobs]

    coco = {"train": CocoBuilder("synthetic source train"), "val": CocoBuilder("synthetic source val")}
    coco_acdc = {c: CocoBuilder(f"synthetic {c} val") for c in conditions}
    for job, res in zip(jobs, results):
        coco[job.split].add_image(res["file_name"], height, width, res["objects"])
        for condition, file_name in res["conditions"].items():
            coco_acdc[condition].add_image(file_name, height, width, res["objects"])
    for split, builder in coco.items():
        builder.write(out / "cityscapes" / "annotations" / f"instances_{split}.json")
    for condition, builder in coco_acdc.items():
        builder.write(out / "acdc" / "annotations" / f"instances_{condition}_val.json")
    manifest = {
        "generator": "vlt_training.synthetic", "version": GENERATOR_VERSION, "seed": seed,
        "height": height, "width": width, "num_train": num_train, "num_val": num_val,
        "conditions": conditions, "strengths": strengths, "classes": list(DRAWN_CLASSES),
        "thing_classes": list(CITYSCAPES_THING_CLASSES),
        "datasets": {"source": {"name": "cityscapes", "root": "cityscapes", "splits": ["train", "val"]},
                     **{c: {"name": "acdc", "root": "acdc", "split": "val", "condition": c} for c in conditions}},
    }
    write_json(out / "benchmark.json", manifest)
    return manifest
