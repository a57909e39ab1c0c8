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


def ship_tower(run_dir: str | Path, name: str, dest_root: str | Path | None = None, note: str | None = None) -> Path:
    """Copy a finished pretraining run's open_clip folder into the package as shipped tower ``name``.

    Copies ``open_clip_config.json``, ``open_clip_model.safetensors``, the run's resolved ``config.yaml`` and its
    ``report.md``, and writes ``PROVENANCE.json`` (command, config name, seed, step, sha256 of the weights, and
    ``note`` when given).
    """
    import shutil

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "open_clip_config.json").read_text())
    provenance = dict(config.get("vlt_provenance", {}))
    if "command" not in provenance:
        raise ValueError(f"{run_dir}/open_clip_config.json: no provenance; was it written by vlt_training.cli.pretrain?")
    dest = Path(dest_root or str(resources.files(__name__))) / name
    dest.mkdir(parents=True, exist_ok=True)
    for file in ("open_clip_config.json", "open_clip_model.safetensors", "config.yaml", "report.md"):
        if (run_dir / file).is_file():
            shutil.copyfile(run_dir / file, dest / file)
    provenance["sha256"] = sha256(dest / "open_clip_model.safetensors")
    if note:
        provenance["note"] = note
    from vlt_perception.atomic import atomic_write_text

    atomic_write_text(dest / PROVENANCE_FILE, json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return dest
