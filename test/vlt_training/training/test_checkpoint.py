"""Checkpoint round-trip, atomicity, keep-last and error messages (tiny nn.Module following the model contract)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from vlt_perception.metadata import ModelMetadata
from vlt_training.training import checkpoint as ckpt_mod
from vlt_training.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)


class ContractNet(nn.Module):
    """Smallest model honouring the contract: model_name, init_kwargs, pixel_mean/std, class_names."""

    model_name = "test_contract_net"

    def __init__(self, num_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.init_kwargs = {"num_classes": num_classes, "width": width}
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.pixel_mean = (0.5, 0.5, 0.5)
        self.pixel_std = (0.25, 0.25, 0.25)
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Conv2d(width, num_classes, 1)
        self.register_buffer("text_embed", torch.randn(num_classes, width))

    def forward(self, images, targets=None):
        scores = self.head(torch.relu(self.conv(images)))  # B, C, H, W
        return {"sem_seg": scores}


@pytest.fixture
def factory(monkeypatch):
    """Route checkpoint rebuilding to ContractNet (the real registry is tested with the real models)."""

    def build(meta, source=None):
        assert meta["model_name"] == ContractNet.model_name
        return ContractNet(**meta["model_kwargs"])

    monkeypatch.setattr(ckpt_mod, "build_model", build)


def _save(run_dir, step, model, keep_last=None, state=None):
    meta = ModelMetadata(model_name=model.model_name, class_names=model.class_names, input_height=8, input_width=16)
    return save_checkpoint(run_dir, step, model, meta, "task: segmentation\n", state, keep_last=keep_last)


def test_round_trip_restores_weights_metadata_and_state(tmp_path, factory):
    torch.manual_seed(0)
    model = ContractNet(num_classes=3, width=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 8, 8))["sem_seg"].sum().backward()
    opt.step()
    path = _save(tmp_path, 7, model, state={"optimizer": opt.state_dict()})

    assert sorted(p.name for p in path.iterdir()) == [
        "config.yaml", "meta.json", "model.safetensors", "trainer_state.pt"]
    loaded, metadata = load_model(path)
    assert isinstance(loaded, ContractNet) and not loaded.training
    assert loaded.init_kwargs == {"num_classes": 3, "width": 5}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert metadata.class_names == ["c0", "c1", "c2"] and metadata.input_width == 16
    assert json.loads((path / "meta.json").read_text())["step"] == 7

    state = load_trainer_state(path)
    assert state["step"] == 7
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    model = ContractNet()
    path = _save(tmp_path, 1, model)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt_mod.set_rng_state(load_trainer_state(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_run_folder_resolves_to_newest_and_keep_last(tmp_path, factory):
    model = ContractNet()
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, model, keep_last=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000030", "step_00000040"]
    assert resolve_checkpoint(tmp_path).name == "step_00000040"
    # Nothing hidden left behind either.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == names
    _, metadata = load_model(tmp_path)
    assert metadata.model_name == "test_contract_net"


def test_crash_during_write_leaves_no_visible_checkpoint(tmp_path, monkeypatch):
    model = ContractNet()
    _save(tmp_path, 1, model)

    def exploding_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2, model)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    assert os.listdir(tmp_path / "checkpoints") == ["step_00000001"]
    assert latest_checkpoint(tmp_path).name == "step_00000001"


def test_stale_temporaries_are_removed_but_checkpoints_kept(tmp_path):
    _save(tmp_path, 1, ContractNet())
    (tmp_path / "checkpoints" / ".tmp_step_00000002_abc").mkdir()  # a write killed half-way
    (tmp_path / "checkpoints" / ".tmp_step_00000002_abc" / "model.safetensors").write_bytes(b"partial")
    removed = ckpt_mod.remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".tmp_step_00000002_abc"]
    assert os.listdir(tmp_path / "checkpoints") == ["step_00000001"]


def test_resave_same_step_replaces(tmp_path, factory):
    model = ContractNet()
    _save(tmp_path, 5, model)
    with torch.no_grad():
        model.head.bias.fill_(3.0)
    _save(tmp_path, 5, model)
    loaded, _ = load_model(tmp_path)
    assert torch.all(loaded.head.bias == 3.0)
    assert os.listdir(tmp_path / "checkpoints") == ["step_00000005"]


def test_errors_name_the_file(tmp_path, factory):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        load_model(tmp_path)
    path = _save(tmp_path, 1, ContractNet())

    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_model(path)

    _save(tmp_path, 1, ContractNet(width=4))
    meta = json.loads((path / "meta.json").read_text())
    meta["model_kwargs"]["width"] = 6  # architecture no longer matches the weights
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)

    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"meta\.json: corrupt JSON"):
        load_model(path)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta\.json: missing"):
        load_model(path)
    (path / "trainer_state.pt").write_bytes(b"\x00\x01")
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt: corrupt"):
        load_trainer_state(path)


def test_trainer_state_refuses_pickled_objects(tmp_path):
    path = _save(tmp_path, 1, ContractNet())
    torch.save({"step": 1, "evil": Path("/")}, path / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="trainer_state.pt"):
        load_trainer_state(path)


# --- model.init_from: another run's tensors under a prefix ----------------------------------------------------
class TwoHeadNet(ContractNet):
    """A ContractNet whose head has another shape: the same tower (``conv``), a different task head."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(num_classes=7, width=width)


def test_init_from_copies_only_the_prefixed_tensors(tmp_path):
    torch.manual_seed(0)
    source = ContractNet(num_classes=3, width=4)
    _save(tmp_path / "seg_run", 5, source)
    torch.manual_seed(1)
    target = TwoHeadNet(width=4)
    head_before = target.head.weight.detach().clone()

    copied = ckpt_mod.init_from_checkpoint(target, tmp_path / "seg_run", ["conv."])  # a run folder: its newest

    assert copied == 2  # conv.weight, conv.bias
    assert torch.equal(target.conv.weight, source.conv.weight) and torch.equal(target.conv.bias, source.conv.bias)
    assert torch.equal(target.head.weight, head_before)  # the other task's head (other shape) is left alone


def test_init_from_refuses_another_tower(tmp_path):
    _save(tmp_path / "narrow", 1, ContractNet(width=4))
    with pytest.raises(CheckpointError, match=r"conv\.weight is \(4, 3, 3, 3\).*\(6, 3, 3, 3\).*not the same tower"):
        ckpt_mod.init_from_checkpoint(ContractNet(width=6), tmp_path / "narrow", ["conv."])
    with pytest.raises(CheckpointError, match="has no.*backbone.*not the same tower"):
        nested = nn.Module()
        nested.backbone = nn.Linear(2, 2)
        ckpt_mod.init_from_checkpoint(nested, tmp_path / "narrow", ["backbone."])
    with pytest.raises(CheckpointError, match=r"no tensors under \['decoder\.'\]"):
        ckpt_mod.init_from_checkpoint(ContractNet(width=4), tmp_path / "narrow", ["decoder."])
    with pytest.raises(CheckpointError, match="no such checkpoint or run folder"):
        ckpt_mod.init_from_checkpoint(ContractNet(width=4), tmp_path / "absent", ["conv."])


def test_rebuilding_a_checkpoint_does_not_log_random_init(caplog):
    """open_clip warns "initialized randomly" for every tower built without weights; rebuilding a checkpoint's
    architecture (whose weights load next) must not put that in evaluate / export logs, building one does."""
    from vlt_training.modeling import create_model

    meta = {"model_name": "vltseg_tiny_mask2former",
            "model_kwargs": {"class_names": ["road", "car"], "pretrained": "vlt-pretrained:vlt-tiny-clip"}}
    with caplog.at_level(logging.WARNING):
        ckpt_mod.build_model(meta)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    with caplog.at_level(logging.WARNING):
        create_model("vltseg_tiny_mask2former", class_names=["road", "car"])
    assert [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_a_failed_resave_keeps_the_old_step(tmp_path, factory, monkeypatch):
    """Re-saving a step replaces it only once the new copy is complete: a crash mid-write keeps the old one."""
    model = ContractNet()
    with torch.no_grad():
        model.head.bias.fill_(1.0)
    _save(tmp_path, 5, model)
    with torch.no_grad():
        model.head.bias.fill_(2.0)

    def exploding_save(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", exploding_save)
        with pytest.raises(OSError, match="disk full"):
            _save(tmp_path, 5, model)
    assert os.listdir(tmp_path / "checkpoints") == ["step_00000005"]
    loaded, _ = load_model(tmp_path)
    assert torch.all(loaded.head.bias == 1.0)
