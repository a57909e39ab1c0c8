"""The export command on a broken checkpoint: one clear line and exit 2, as train and evaluate (no traceback)."""

import torch

from vlt_training.cli.export import main
from vlt_training.export.model_metadata import metadata_for_model
from vlt_training.modeling import create_model
from vlt_training.training.checkpoint import WEIGHTS_FILE, save_checkpoint


def test_truncated_weights_are_one_clear_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("vltseg_tiny_mask2former")
    ckpt = save_checkpoint(tmp_path / "run", 1, model, metadata_for_model(model, 64, 128), "")
    weights = ckpt / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy that stopped half-way
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert WEIGHTS_FILE in err and "corrupt" in err
    assert not (tmp_path / "m.onnx").exists()
