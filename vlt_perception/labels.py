"""Label spaces shared by training, deployment and evaluation.

The Cityscapes 19-class train-ID space is the common target of every driving dataset the project reads
(GTA5, BDD100K, Mapillary and ACDC are mapped onto it). 255 marks pixels that are ignored in losses and metrics.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# The official Cityscapes colours, indexed by train ID.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Countable objects ("things"): the default detection classes of VLTDet.
CITYSCAPES_THING_CLASSES: tuple[str, ...] = (
    "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

# Cityscapes labelIds (gtFine_labelIds.png, also GTA5's label PNGs) -> train IDs. Unlisted ids map to 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_TRAIN_ID_TO_LABEL_ID: dict[int, int] = {v: k for k, v in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items()}


def lookup_table(mapping: dict[int, int], size: int = 256, default: int = IGNORE_INDEX) -> np.ndarray:
    """A uint8 lookup table of ``size`` entries: ``table[src] = mapping.get(src, default)``."""
    table = np.full(size, default, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelId image (H, W) to train IDs (H, W) uint8, 255 for void classes."""
    return lookup_table(CITYSCAPES_LABEL_ID_TO_TRAIN_ID)[label_ids.astype(np.int64).clip(0, 255)]


def palette_array(palette=CITYSCAPES_PALETTE, size: int = 256) -> np.ndarray:
    """A (size, 3) uint8 colour table; ids past the palette (255 = ignore) are black."""
    table = np.zeros((size, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table


def colorize(labels: np.ndarray, palette=CITYSCAPES_PALETTE) -> np.ndarray:
    """Labels (H, W) uint8 -> colour image (H, W, 3) uint8."""
    return palette_array(palette)[labels]
