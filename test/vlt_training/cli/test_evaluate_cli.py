"""evaluate / train CLI argument and error handling (in-process, no training)."""

from __future__ import annotations

from pathlib import Path

from vlt_training.cli import evaluate, train

TINY = str(Path(__file__).resolve().parents[3] / "config/train/tiny_cpu.yaml")


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "nope")]) == 2
    assert "nope: no such checkpoint or run folder" in capsys.readouterr().err


def test_evaluate_empty_run_folder(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path)]) == 2
    assert "neither a checkpoint folder" in capsys.readouterr().err


def test_train_rejects_unknown_override_before_doing_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--config", TINY, "--out", str(out), "train.max_iter=3"]) == 2
    assert "unknown key 'train.max_iter'" in capsys.readouterr().err
    assert not out.exists()


def test_train_missing_dataset_is_a_clear_error(tmp_path, capsys):
    rc = train.main(["--config", TINY, "--out", str(tmp_path / "run"), f"data.root={tmp_path / 'none'}",
                     "data.synthetic.enabled=false"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: dataset 'cityscapes' split 'train'" in err and "none" in err
