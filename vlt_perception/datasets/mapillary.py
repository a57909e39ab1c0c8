"""Mapillary Vistas v1.2 reader (``{split}/images/*.jpg`` + ``{split}/labels/*.png``, 66 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlt_perception.datasets._common import DatasetLayoutError, image_size, require_dir
from vlt_perception.labels import CITYSCAPES_CLASSES, IGNORE_INDEX

MAPILLARY_LAYOUT = "<root>/{training,validation}/images/*.jpg + <root>/{training,validation}/labels/*.png"
_SPLIT_FOLDERS = {"train": "training", "val": "validation", "test": "testing"}

# The 66 Mapillary Vistas v1.2 classes, in label-index order (config.json of the release).
MAPILLARY_V12_CLASSES: tuple[str, ...] = (
    "animal--bird", "animal--ground-animal", "construction--barrier--curb", "construction--barrier--fence",
    "construction--barrier--guard-rail", "construction--barrier--other-barrier", "construction--barrier--wall",
    "construction--flat--bike-lane", "construction--flat--crosswalk-plain", "construction--flat--curb-cut",
    "construction--flat--parking", "construction--flat--pedestrian-area", "construction--flat--rail-track",
    "construction--flat--road", "construction--flat--service-lane", "construction--flat--sidewalk",
    "construction--structure--bridge", "construction--structure--building", "construction--structure--tunnel",
    "human--person", "human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider",
    "marking--crosswalk-zebra", "marking--general", "nature--mountain", "nature--sand", "nature--sky",
    "nature--snow", "nature--terrain", "nature--vegetation", "nature--water", "object--banner", "object--bench",
    "object--bike-rack", "object--billboard", "object--catch-basin", "object--cctv-camera",
    "object--fire-hydrant", "object--junction-box", "object--mailbox", "object--manhole", "object--phone-booth",
    "object--pothole", "object--street-light", "object--support--pole", "object--support--traffic-sign-frame",
    "object--support--utility-pole", "object--traffic-light", "object--traffic-sign--back",
    "object--traffic-sign--front", "object--trash-can", "object--vehicle--bicycle", "object--vehicle--boat",
    "object--vehicle--bus", "object--vehicle--car", "object--vehicle--caravan", "object--vehicle--motorcycle",
    "object--vehicle--on-rails", "object--vehicle--other-vehicle", "object--vehicle--trailer",
    "object--vehicle--truck", "object--vehicle--wheeled-slow", "void--car-mount", "void--ego-vehicle",
    "void--unlabeled",
)

# Mapillary class -> Cityscapes class, the usual domain-generalisation convention: drivable surfaces and their
# markings are road; curbs, curb cuts and pedestrian areas are sidewalk; every support / street light is pole;
# only sign *fronts* are traffic sign; riders of any kind are rider; rail vehicles are train. Everything else
# (parking, rail track, bridge, tunnel, water, snow, banners, benches, sign backs, caravans, trailers, ...) is
# ignored, as are the three void classes.
MAPILLARY_TO_CITYSCAPES: dict[str, str] = {
    "construction--flat--road": "road", "construction--flat--service-lane": "road",
    "construction--flat--bike-lane": "road", "construction--flat--crosswalk-plain": "road",
    "marking--crosswalk-zebra": "road", "marking--general": "road", "object--manhole": "road",
    "object--pothole": "road", "object--catch-basin": "road",
    "construction--flat--sidewalk": "sidewalk", "construction--barrier--curb": "sidewalk",
    "construction--flat--curb-cut": "sidewalk", "construction--flat--pedestrian-area": "sidewalk",
    "construction--structure--building": "building",
    "construction--barrier--wall": "wall",
    "construction--barrier--fence": "fence",
    "object--support--pole": "pole", "object--support--utility-pole": "pole", "object--street-light": "pole",
    "object--support--traffic-sign-frame": "pole",
    "object--traffic-light": "traffic light",
    "object--traffic-sign--front": "traffic sign",
    "nature--vegetation": "vegetation",
    "nature--terrain": "terrain", "nature--sand": "terrain", "nature--mountain": "terrain",
    "nature--sky": "sky",
    "human--person": "person",
    "human--rider--bicyclist": "rider", "human--rider--motorcyclist": "rider", "human--rider--other-rider": "rider",
    "object--vehicle--car": "car",
    "object--vehicle--truck": "truck",
    "object--vehicle--bus": "bus",
    "object--vehicle--on-rails": "train",
    "object--vehicle--motorcycle": "motorcycle",
    "object--vehicle--bicycle": "bicycle",
}


def mapillary_lookup_table() -> np.ndarray:
    """(256,) uint8: Mapillary v1.2 label index -> Cityscapes train ID, 255 for ignored classes."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, name in enumerate(MAPILLARY_V12_CLASSES):
        target = MAPILLARY_TO_CITYSCAPES.get(name)
        if target is not None:
            table[index] = CITYSCAPES_CLASSES.index(target)
    return table


def load_mapillary(root: str | Path, split: str = "val") -> list[dict]:
    """Records of Mapillary Vistas v1.2 ``split`` (``train`` / ``val`` or the folder names ``training`` /
    ``validation``); labels are the 66-class index PNGs (``sem_seg_format`` ``mapillary``)."""
    root = Path(root)
    folder = root / _SPLIT_FOLDERS.get(split, split)
    image_dir = require_dir(folder / "images", "mapillary", MAPILLARY_LAYOUT)
    label_dir = require_dir(folder / "labels", "mapillary", MAPILLARY_LAYOUT)
    records = []
    for path in sorted(image_dir.glob("*.jpg")):
        label = label_dir / f"{path.stem}.png"
        if not label.is_file():
            raise DatasetLayoutError(f"mapillary: missing label file {label} for image {path}")
        height, width = image_size(path)
        records.append({"file_name": str(path), "image_id": path.stem, "height": height, "width": width,
                        "dataset": "mapillary", "condition": "clear", "sem_seg_file_name": str(label),
                        "sem_seg_format": "mapillary"})
    if not records:
        raise DatasetLayoutError(f"mapillary: no *.jpg images under {image_dir} (expected layout: {MAPILLARY_LAYOUT})")
    return records
