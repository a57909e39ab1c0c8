"""Config loading: _base_ merging, dotted overrides, validation errors naming file and key, save round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlt_training.config import Config, ConfigError, load_config, load_raw, merge, save_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_is_deep_for_mappings_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    out = merge(base, {"a": {"y": [3]}, "c": 2})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert base["a"]["y"] == [1, 2]  # input untouched


def test_base_chain_relative_to_file(tmp_path):
    write(tmp_path / "bases" / "root.yaml", "train: {max_iters: 100, batch_size: 8}\noptim: {lr: 0.001}\n")
    write(tmp_path / "bases" / "mid.yaml", "_base_: root.yaml\ntrain: {batch_size: 4}\n")
    leaf = write(tmp_path / "exp" / "leaf.yaml", "_base_: ../bases/mid.yaml\nname: leaf\n")
    cfg = load_config(leaf)
    assert (cfg.name, cfg.train.max_iters, cfg.train.batch_size, cfg.optim.lr) == ("leaf", 100, 4, 0.001)
    assert cfg.train.amp == "none"  # untouched defaults survive


def test_dotted_overrides_parse_yaml_values(tmp_path):
    leaf = write(tmp_path / "c.yaml", "data:\n  train:\n    - {name: cityscapes, root: a, split: train}\n")
    cfg = load_config(leaf, ["train.max_iters=10", "data.crop_size=[64, 128]", "optim.lr=2e-4",
                             "data.train.0.limit=4", "model.overrides={num_queries: 5}", "train.clip_grad_norm=null",
                             "model.name=vltseg_vit_b16_mask2former"])
    assert cfg.train.max_iters == 10 and cfg.data.crop_size == [64, 128]
    assert cfg.optim.lr == pytest.approx(2e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.data.train[0].limit == 4 and cfg.model.overrides == {"num_queries": 5}
    assert cfg.train.clip_grad_norm is None and cfg.model.name == "vltseg_vit_b16_mask2former"


def test_override_value_is_never_evaluated():
    cfg = load_config(None, ["name=__import__('os').system('false')"])
    assert cfg.name == "__import__('os').system('false')"


@pytest.mark.parametrize("text, match", [
    ("train:\n  max_itres: 3\n", r"c\.yaml.*unknown key 'train\.max_itres'"),
    ("bogus: 1\n", r"unknown key 'bogus'"),
    ("data:\n  train:\n    - {name: x, rooot: y}\n", r"unknown key 'data\.train\.0\.rooot'"),
    ("train:\n  amp: fp8\n", r"'train\.amp' must be one of"),
    ("train:\n  max_iters: many\n", r"'train\.max_iters' must be int"),
    ("train: [1, 2]\n", r"'train' must be a mapping"),
    ("- just a list\n", r"top level must be a mapping"),
    ("train: {max_iters: 1\n", r"invalid YAML"),
])
def test_errors_name_file_and_key(tmp_path, text, match):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_override_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"overrides.*unknown key 'train\.max_itres'"):
        load_config(None, ["train.max_itres=3"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["train.max_iters"])
    with pytest.raises(ConfigError, match="has no element 5"):
        load_config(None, ["data.train.5.root=x"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_base_cycle_detected(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_raw(tmp_path / "a.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "config/train/cityscapes_acdc_eva02_l14.yaml", ["train.max_iters=7"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again == cfg and isinstance(again, Config)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.yaml"]  # no temporary file left


def test_shipped_configs_load():
    gta = load_config(REPO / "config/train/gta5_eva02_l14.yaml")
    assert gta.model.name == "vltseg_eva02_l14_mask2former" and gta.model.pretrained == "merged2b_s4b_b131k"
    assert (gta.data.crop_size, gta.train.batch_size, gta.train.max_iters) == ([512, 512], 16, 5000)
    assert [d.name for d in gta.eval.datasets][1:] == ["cityscapes", "bdd100k", "mapillary"]
    acdc = load_config(REPO / "config/train/cityscapes_acdc_eva02_l14.yaml")
    assert (acdc.train.batch_size, acdc.train.max_iters) == (8, 20000)
    assert acdc.eval.datasets[1].conditions == ["fog", "night", "rain", "snow"]
    assert acdc.optim.backbone_lr_mult == 0.1 and acdc.optim.lr == 1e-4  # inherited from the base
    tiny = load_config(REPO / "config/train/tiny_cpu.yaml")
    assert tiny.model.name == "vltseg_tiny_mask2former" and tiny.data.synthetic.enabled
