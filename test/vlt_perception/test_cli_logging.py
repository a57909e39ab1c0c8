"""The command-line tools log the project's INFO messages and only warnings from other libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
if sys.argv[1] == "project":
    from vlt_perception.cli_logging import configure_cli_logging
    configure_cli_logging()
else:  # what the tools did before: every library's INFO
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
import open_clip
open_clip.get_tokenizer("ViT-B-32")  # open_clip logs its progress with logging.info on the root logger
logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
logging.getLogger("vlt_training.export").info("exported model.onnx")
logging.getLogger("vlt_perception.engines.factory").info("engine auto -> onnxruntime")
logging.getLogger("onnxruntime").warning("a library warning")
"""


def _stderr(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.cli
def test_project_info_and_library_warnings_only():
    plain, ours = _stderr("plain"), _stderr("project")
    assert "INFO root:" in plain and "fontManager" in plain  # the noise this configuration removes
    assert "INFO root:" not in ours and "fontManager" not in ours
    assert "INFO vlt_training.export: exported model.onnx" in ours
    assert "INFO vlt_perception.engines.factory: engine auto -> onnxruntime" in ours
    assert "WARNING onnxruntime: a library warning" in ours
