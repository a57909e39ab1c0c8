"""Towers shipped in the package, each made by the project's own ``pretrain`` command.

Every tower is an open_clip model folder (``open_clip_config.json`` + ``open_clip_model.safetensors``) with
``PROVENANCE.json`` (the config, seed and command that made it, and the sha256 of the weights) beside it. Use one as
``model.pretrained: vlt-pretrained:<name>`` (VLTSeg / VLTDet) or load it with open_clip alone:
``open_clip.create_model_and_transforms(f"local-dir:{shipped_tower('vlt-tiny-clip')}")``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

PROVENANCE_FILE = "PROVENANCE.json"


def list_shipped() -> list[str]:
    """Names of the shipped towers."""
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "open_clip_config.json").is_file())


def shipped_tower(name: str) -> Path:
    """The folder of shipped tower ``name`` (found through the installed package)."""
    folder = Path(str(resources.files(__name__) / name))
    if not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"no shipped tower {name!r} in {folder.parent} (shipped: {list_shipped()})")
    return folder


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tower(name: str) -> dict:
    """Check the weights of shipped tower ``name`` against the sha256 in its provenance; returns the provenance."""
    folder = shipped_tower(name)
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    actual = sha256(folder / "open_clip_model.safetensors")
    if actual != provenance["sha256"]:
        raise ValueError(f"{folder}/open_clip_model.safetensors: sha256 {actual} does not match "
                         f"{provenance['sha256']} in {PROVENANCE_FILE}")
    return provenance
