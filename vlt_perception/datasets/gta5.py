"""GTA5 (Playing for Data) reader: ``images/*.png`` + ``labels/*.png`` (Cityscapes labelIds)."""

from __future__ import annotations

from pathlib import Path

from vlt_perception.datasets._common import DatasetLayoutError, image_size, require_dir

GTA5_LAYOUT = "<root>/images/*.png + <root>/labels/*.png (same names; labels hold Cityscapes labelIds)"


def load_gta5(root: str | Path, split: str = "all") -> list[dict]:
    """Records of GTA5. ``split`` ``all`` reads every image; ``train`` / ``val`` / ``test`` read the official
    ``split.mat`` (needs scipy) and keep the images it lists.

    Note: a few official GTA5 label PNGs differ in size from their image; resize labels (nearest) when loading.
    """
    root = Path(root)
    image_dir = require_dir(root / "images", "gta5", GTA5_LAYOUT)
    label_dir = require_dir(root / "labels", "gta5", GTA5_LAYOUT)
    paths = sorted(image_dir.glob("*.png"))
    if split != "all":
        keep = _official_split(root, split)
        paths = [p for p in paths if int(p.stem) in keep] if keep is not None else paths
    records = []
    for path in paths:
        label = label_dir / path.name
        if not label.is_file():
            raise DatasetLayoutError(f"gta5: missing label file {label} for image {path}")
        height, width = image_size(path)
        records.append({"file_name": str(path), "image_id": path.stem, "height": height, "width": width,
                        "dataset": "gta5", "condition": "clear", "sem_seg_file_name": str(label),
                        "sem_seg_format": "cityscapes_label_ids"})
    if not records:
        raise DatasetLayoutError(f"gta5: no images for split {split!r} under {image_dir} (expected layout: {GTA5_LAYOUT})")
    return records


def _official_split(root: Path, split: str) -> set[int]:
    if split not in ("train", "val", "test"):
        raise ValueError(f"gta5: unknown split {split!r}; use all, train, val or test")
    mat = root / "split.mat"
    if not mat.is_file():
        raise DatasetLayoutError(f"gta5: split {split!r} needs the official {mat} (or use split='all')")
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise ImportError("reading GTA5's split.mat needs scipy: pip install scipy") from exc
    return {int(i) for i in loadmat(mat)[f"{split}Ids"].ravel()}
