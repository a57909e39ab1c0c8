"""Calibration images for int8 engines: read from an image folder, a rosbag or a dataset config, preprocessed
exactly as deployment preprocesses camera frames (:class:`vlt_perception.preprocess.Preprocessor`).

One reader serves both int8 paths: the OpenVINO int8 export (NNCF post-training quantisation, in
``vlt_training.export.openvino_export``) and the TensorRT int8 calibrator (``tensorrt_engine``), so an int8 model
calibrated for one engine saw the same pixels as one calibrated for the other.

Sources (:func:`calibration_items`):

- an image folder: its images, searched recursively, sorted by path, at most ``max_images`` spread evenly over the
  sorted list (so a folder of sequences contributes frames from every sequence);
- a rosbag (a folder with ``metadata.yaml``, or an ``.mcap`` / ``.db3`` file): the image frames in order, every
  ``stride``-th one (the first ``max_images``);
- a dataset config (``.yaml``: a training config or a file with ``datasets: [{name, root, split}]``): the records
  of its evaluation datasets (else its training datasets), read with :mod:`vlt_perception.datasets`.

numpy + OpenCV (+ the bag reader for bags); never torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np

from vlt_perception.engines.base import EngineError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
CONFIG_SUFFIXES = (".yaml", ".yml")

# A calibration item: an image file, or an RGB frame (H, W, 3) uint8 already in memory (bag frames, dataset records).
CalibrationItem = Union[Path, np.ndarray]


def is_bag(path: Path) -> bool:
    """A rosbag: an ``.mcap`` / ``.db3`` file or a folder holding ``metadata.yaml``."""
    return path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())


def source_kind(source: str | Path) -> str:
    """'folder', 'bag' or 'config' for a calibration source, or EngineError naming it."""
    path = Path(source)
    if not path.exists():
        raise EngineError(f"{path}: calibration source not found (an image folder, a rosbag or a dataset config)")
    if is_bag(path):
        return "bag"
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in CONFIG_SUFFIXES:
        return "config"
    raise EngineError(f"{path}: not a calibration source; give an image folder, a rosbag (folder with metadata.yaml, "
                      ".mcap or .db3) or a dataset config (.yaml)")


def _spread(items: list, max_images: int) -> list:
    """At most ``max_images`` of ``items``, evenly spread over the list."""
    if len(items) <= max_images:
        return items
    step = len(items) / max_images
    return [items[int(i * step)] for i in range(max_images)]


def calibration_files(calib_dir: str | Path, max_images: int) -> list[Path]:
    """Sorted image files of a calibration folder, searched recursively (at most max_images, evenly spread)."""
    folder = Path(calib_dir)
    if not folder.is_dir():
        raise EngineError(f"{folder}: calibration folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise EngineError(f"{folder}: no calibration images ({', '.join(IMAGE_SUFFIXES)}, searched recursively)")
    return _spread(files, max_images)


def bag_frames(bag: str | Path, max_images: int, stride: int = 1) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of a rosbag's camera topic (``/camera/image_raw`` or its compressed form): every
    ``stride``-th decodable image, the first ``max_images``. Ground truth is not needed (a plain recording works);
    undecodable messages are skipped with a warning, as the bag evaluation does."""
    from vlt_perception.bag import BagError
    from vlt_perception.bag import messages as M
    from vlt_perception.bag.reader import open_bag
    from vlt_perception.bag.topics import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagTopics
    from vlt_perception.bag.typestore import get_bag_typestore

    if stride < 1:
        raise EngineError(f"calibration bag stride must be >= 1, got {stride}")
    topics = BagTopics()
    try:
        reader = open_bag(bag)
    except BagError as exc:
        raise EngineError(str(exc)) from exc
    try:
        available = {c.topic: c for c in reader.connections}
        conn = next((available[t] for t, kind in ((topics.image, IMAGE_TYPE),
                                                  (topics.compressed_image, COMPRESSED_IMAGE_TYPE))
                     if t in available and available[t].msgtype == kind), None)
        if conn is None:
            raise EngineError(f"{bag}: no camera topic {topics.image} (Image) or {topics.compressed_image} "
                              f"(CompressedImage) to calibrate on; topics: {sorted(available)}")
        store = get_bag_typestore()
        images, seen, skipped = [], 0, 0
        for _, _, raw in reader.messages(connections=[conn]):
            try:
                rgb = M.decode_image(store.deserialize_cdr(raw, conn.msgtype))
            except Exception:  # a corrupt or unsupported message: skip it, as the evaluation does
                skipped += 1
                continue
            if seen % stride == 0:
                images.append(rgb)
            seen += 1
            if len(images) == max_images:
                break
    finally:
        reader.close()
    if skipped:
        log.warning("%s: %d camera messages could not be decoded and were skipped", bag, skipped)
    if not images:
        raise EngineError(f"{bag}: the bag has no decodable image frames to calibrate on")
    return images


def config_frames(config_path: str | Path, max_images: int) -> list[np.ndarray]:
    """RGB frames of the datasets a config names: ``eval.datasets``, else ``data.train``, else ``datasets``."""
    import yaml

    from vlt_perception.datasets import get_dataset, read_image

    config_path = Path(config_path)
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EngineError(f"{config_path}: not a readable YAML dataset config: {exc}") from exc
    if not isinstance(config, dict):
        raise EngineError(f"{config_path}: a dataset config must be a mapping")
    data = config.get("data") or {}
    datasets = ((config.get("eval") or {}).get("datasets") or data.get("train") or config.get("datasets") or [])
    if not datasets:
        raise EngineError(f"{config_path}: names no datasets (eval.datasets, data.train or datasets)")
    records = []
    for ds in datasets:
        root = ds.get("root", "")
        base = data.get("root") or config.get("root")
        if base and not os.path.isabs(root):
            root = os.path.join(base, root)
        try:
            records += list(get_dataset(ds["name"], root, ds.get("split", "val"), **(ds.get("options") or {})))
        except (KeyError, OSError, ValueError) as exc:
            raise EngineError(f"{config_path}: dataset {ds.get('name')!r} at {root!r} is not readable: {exc}") from exc
    if not records:
        raise EngineError(f"{config_path}: its datasets hold no images")
    return [read_image(r) for r in _spread(records, max_images)]


def calibration_items(source: str | Path, max_images: int, *, bag_stride: int = 1) -> list[CalibrationItem]:
    """The calibration images of ``source`` (see the module docstring): image paths for a folder, RGB frames for
    a bag or a dataset config."""
    if max_images < 1:
        raise EngineError(f"calibration needs at least one image, max_images={max_images}")
    kind = source_kind(source)
    if kind == "folder":
        return list(calibration_files(source, max_images))
    if kind == "bag":
        return list(bag_frames(source, max_images, bag_stride))
    return list(config_frames(source, max_images))


def source_sha256(source: str | Path, max_images: int, batch_size: int = 1) -> str:
    """sha256 over what a calibration would read: the folder's chosen images (names and contents), the bag's or
    config's file bytes, and the batch size (cache keys of int8 engines)."""
    path = Path(source)
    digest = hashlib.sha256(f"batch={batch_size};max={max_images}".encode())
    kind = source_kind(path)
    if kind == "folder":
        files = calibration_files(path, max_images)
        base = path
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        base = path if path.is_dir() else path.parent
    for file in files:
        digest.update(f"\n{file.relative_to(base)}:{file_sha256(file)}".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB (H, W, 3) uint8, or EngineError naming it."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EngineError(f"{path}: unreadable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _rgb(item: CalibrationItem) -> np.ndarray:
    return item if isinstance(item, np.ndarray) else read_rgb(Path(item))


class CalibrationBatches:
    """Fixed-size preprocessed batches (B, 3, H, W) float32 of calibration items (image paths or RGB frames); a
    partial last batch is dropped because TensorRT calibrators must deliver exactly ``batch_size`` images per
    batch. Iterating again starts over (NNCF reads the data set more than once)."""

    def __init__(self, files: Sequence[CalibrationItem], preprocessor, batch_size: int) -> None:
        if batch_size <= 0:
            raise EngineError(f"calibration batch size must be positive, got {batch_size}")
        if len(files) < batch_size:
            raise EngineError(f"{len(files)} calibration images are fewer than one batch of {batch_size}")
        self.files = list(files)
        self.preprocessor = preprocessor
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, 3, self.preprocessor.height, self.preprocessor.width)

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in range(len(self)):
            chunk = self.files[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.preprocessor.batch([_rgb(item) for item in chunk])
