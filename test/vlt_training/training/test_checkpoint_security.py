"""A checkpoint folder is data: its meta.json may set the architecture, never make the loader fetch or read files.

Crafted ``meta.json`` files ask open_clip / timm to download (``timm_model_pretrained`` with a
``pretrained_cfg_overlay`` URL and a ``cache_dir``), to go to the Hugging Face hub (``hf-hub:``, ``hf_*``) or to
read a folder (``local-dir:``). Each must be refused with a :class:`CheckpointError` naming the file and the key
before any connection is attempted: a socket tripwire records every attempt, and the URLs point at a local port.
The same rule holds for a training config's ``model.overrides``.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from torch import nn

from vlt_perception.metadata import ModelMetadata
from vlt_training.config import ConfigError, load_config
from vlt_training.modeling import registry
from vlt_training.training import checkpoint as ckpt_mod
from vlt_training.training.checkpoint import CheckpointError, load_model

UNROUTABLE = "http://127.0.0.1:9/weights.pth"  # discard port: nothing answers, and the tripwire fires first


@pytest.fixture
def connections(monkeypatch):
    """Every connection attempt (and name lookup) of the process, refused and recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during a checkpoint rebuild")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a, **k))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _crafted(folder, model_name: str, model_kwargs: dict):
    """A checkpoint folder holding nothing but a meta.json."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = ModelMetadata(model_name=model_name, class_names=["road", "car"], input_height=32, input_width=64)
    (folder / "meta.json").write_text(json.dumps({
        "format_version": 1, "model_name": model_name, "model_kwargs": model_kwargs,
        "metadata": meta.to_dict(), "step": 1}))
    return folder


def _eva(vision_cfg_overrides: dict) -> dict:
    """A tiny timm (EVA02) tower: the path on which timm's own download arguments apply."""
    return {"clip_model": "vlt-tiny-eva02", "class_names": ["road", "car"], "text_guidance": False,
            "vision_cfg_overrides": vision_cfg_overrides}


def _attacks(tmp_path):
    cache = str(tmp_path / "cache")
    overlay = {"url": UNROUTABLE, "hf_hub_id": None}
    local_tower = tmp_path / "tower"
    local_tower.mkdir()
    (local_tower / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 64, "vision_cfg": {"timm_model_name": "eva02_tiny_patch14_224", "timm_model_pretrained": True},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}}))
    return {
        "timm_download": (_eva({"timm_model_pretrained": True, "timm_kwargs": {
            "pretrained_cfg_overlay": overlay, "cache_dir": cache}}), r"vision_cfg_overrides\.timm_model_pretrained"),
        "timm_cache_dir": (_eva({"timm_kwargs": {"depth": 2, "cache_dir": cache}}),
                           r"vision_cfg_overrides\.timm_kwargs\.cache_dir"),
        "timm_overlay": (_eva({"timm_kwargs": {"pretrained_cfg_overlay": overlay}}),
                         r"vision_cfg_overrides\.timm_kwargs\.pretrained_cfg_overlay"),
        "timm_hub_name": (_eva({"timm_model_name": "hf-hub:someone/eva"}), r"vision_cfg_overrides\.timm_model_name"),
        "clip_model_hub": ({"clip_model": "hf-hub:someone/tower", "text_guidance": False}, r"'clip_model'"),
        "clip_model_local_dir": ({"clip_model": f"local-dir:{local_tower}", "text_guidance": False}, r"'clip_model'"),
        "hf_text_tower": ({"text_cfg_overrides": {"hf_model_name": "someone/bert", "hf_model_pretrained": True},
                           "text_guidance": False}, r"text_cfg_overrides\.hf_model_name"),
        "checkpoint_path": ({"checkpoint_path": UNROUTABLE, "text_guidance": False}, r"'checkpoint_path'"),
    }


ATTACKS = ["timm_download", "timm_cache_dir", "timm_overlay", "timm_hub_name", "clip_model_hub",
           "clip_model_local_dir", "hf_text_tower", "checkpoint_path"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_crafted_meta_json_is_refused_before_any_download(tmp_path, connections, attack):
    model_kwargs, key = _attacks(tmp_path)[attack]
    folder = _crafted(tmp_path / "ckpt", "vltseg_tiny_mask2former", model_kwargs)
    with pytest.raises(CheckpointError, match=rf"{folder / 'meta.json'}: model_kwargs refused.*{key}"):
        load_model(folder)
    assert connections == []
    assert not (tmp_path / "cache").exists()


def test_keys_outside_the_architecture_are_refused(tmp_path):
    folder = _crafted(tmp_path / "ckpt", "vltseg_tiny_mask2former", {
        "text_guidance": False, "loader": "x", "vision_cfg_overrides": {"layers": 2, "weights": "x"}})
    with pytest.raises(CheckpointError, match=r"'loader' is not an argument of VLTSeg.*"
                                              r"'vision_cfg_overrides\.weights' is not an architecture key"):
        load_model(folder)


def test_the_rebuild_runs_offline_without_pretrained_weights(monkeypatch):
    """What the constructor sees during a rebuild: pretrained=None and Hugging Face's offline switches, which are
    restored afterwards."""
    seen = {}

    def offline_probe(pretrained=None, width: int = 4) -> nn.Module:
        seen.update(pretrained=pretrained, env={k: os.environ.get(k) for k in ("HF_HUB_OFFLINE",
                                                                               "TRANSFORMERS_OFFLINE")})
        return nn.Linear(width, 1)

    monkeypatch.setitem(registry._MODELS, "offline_probe", offline_probe)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ckpt_mod.build_model({"model_name": "offline_probe",
                          "model_kwargs": {"pretrained": "laion2b_s34b_b88k", "width": 3}})
    assert seen == {"pretrained": None, "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
    assert "HF_HUB_OFFLINE" not in os.environ


def test_a_checkpoint_of_a_model_built_from_a_pretrained_folder_still_loads(tmp_path):
    """Today's meta.json of such a model records the folder as ``pretrained`` (VLTDet) and the folder's input
    size as ``vision_cfg_overrides``: both pass, and the rebuild does not read the folder again."""
    from vlt_training.modeling import create_model
    from vlt_training.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("vltdet_tiny_fcos", class_names=["car"], pretrained="vlt-pretrained:vlt-tiny-clip")
    assert model.init_kwargs["pretrained"] and model.init_kwargs["vision_cfg_overrides"]
    meta = ModelMetadata(model_name=model.model_name, class_names=["car"], input_height=32, input_width=64,
                         task="detection")
    path = save_checkpoint(tmp_path, 1, model, meta, "task: detection\n")
    loaded, _ = load_model(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("override, key", [
    ("model.overrides={vision_cfg_overrides: {timm_kwargs: {cache_dir: /tmp/x}}}",
     r"model\.overrides\.vision_cfg_overrides\.timm_kwargs\.cache_dir"),
    ("model.overrides={vision_cfg_overrides: {timm_model_pretrained: true}}",
     r"model\.overrides\.vision_cfg_overrides\.timm_model_pretrained"),
    ("model.overrides={clip_model: 'hf-hub:someone/tower'}", r"model\.overrides\.clip_model"),
    ("model.overrides={pretrained: openai}", r"model\.overrides\.pretrained"),
])
def test_training_config_overrides_follow_the_same_rule(tmp_path, override, key):
    path = tmp_path / "train.yaml"
    path.write_text("model: {name: vltseg_tiny_mask2former}\n")
    with pytest.raises(ConfigError, match=rf"{path}.*{key}.*model\.pretrained"):
        load_config(path, [override])
    # architecture overrides and the sanctioned source of weights still pass
    cfg = load_config(path, ["model.overrides={clip_model: vlt-tiny-eva02, vision_cfg_overrides: "
                             "{timm_kwargs: {depth: 2}, timm_model_pretrained: false}}",
                             "model.pretrained=vlt-pretrained:vlt-tiny-clip"])
    assert cfg.model.overrides["vision_cfg_overrides"]["timm_kwargs"] == {"depth": 2}
