"""The shipped tower: made by the pretrain command, checksummed, loadable through open_clip alone."""

from __future__ import annotations

import json

import pytest
import torch

from vlt_training.pretrained import PROVENANCE_FILE, list_shipped, sha256, shipped_tower, verify_tower


def test_the_vl_tower_is_shipped_with_its_provenance():
    assert "vlt-tiny-clip" in list_shipped()
    folder = shipped_tower("vlt-tiny-clip")
    provenance = verify_tower("vlt-tiny-clip")  # raises if the weights' sha256 differs from the recorded one
    assert provenance["sha256"] == sha256(folder / "open_clip_model.safetensors")
    assert provenance["command"].startswith("python -m vlt_training.cli.pretrain --config config/pretrain/")
    assert provenance["task"] == "clip_pretrain" and "seed" in provenance and provenance["corpus"]["seed"] == 0
    assert (folder / "config.yaml").is_file() and (folder / "report.md").is_file()
    assert (folder / "open_clip_model.safetensors").stat().st_size <= 10 * 2**20


def test_the_shipped_tower_loads_through_open_clip_alone():
    import open_clip  # nothing of vlt_training is needed to load it

    folder = shipped_tower("vlt-tiny-clip")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.zeros(1, 3, 128, 256), normalize=True)
        text = model.encode_text(tokenizer(["a foggy street with two cars", "a car at night"]), normalize=True)
    assert image.shape == (1, 64) and text.shape == (2, 64)
    assert torch.isfinite(image).all() and not torch.allclose(text[0], text[1])


def test_a_tampered_tower_fails_its_checksum(tmp_path, monkeypatch):
    import shutil

    import vlt_training.pretrained as shipped

    copy = tmp_path / "vlt-tiny-clip"
    shutil.copytree(shipped_tower("vlt-tiny-clip"), copy)
    provenance = json.loads((copy / PROVENANCE_FILE).read_text())
    (copy / PROVENANCE_FILE).write_text(json.dumps({**provenance, "sha256": "0" * 64}))
    monkeypatch.setattr(shipped, "shipped_tower", lambda name: copy)
    with pytest.raises(ValueError, match="sha256"):
        shipped.verify_tower("vlt-tiny-clip")
