"""The import contracts of setup.cfg ``[importlinter]`` hold, and an import against them breaks the check.

``lint-imports`` (import-linter) reads the whole import graph of both packages, imports inside functions included.
The planted cases copy the sources into a temporary folder, add one forbidden import, and expect the named contract
to break there: so a contract that silently checks nothing fails this test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vlt_training", "vlt_perception")


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    """Run lint-imports of this interpreter's environment on the packages under ``root``."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports is not installed: pip install -r requirements/test.txt"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([exe, "--no-cache", "--no-logo", str(config)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    result = lint_imports(ROOT, ROOT / "setup.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# (file, import planted at its end, contract reported broken)
PLANTED = [
    # an upward import between layers of vlt_training (the detection heads once imported the trainer's helpers)
    ("vlt_training/modeling/det_head/fcos.py", "from vlt_training.training.distributed import setup",
     "vlt_training: each layer imports only the layers below it"),
    # the same, hidden inside a function
    ("vlt_training/data/records.py", "def _late():\n    from vlt_training.tasks import registry",
     "vlt_training: each layer imports only the layers below it"),
    # an upward import between layers of vlt_perception
    ("vlt_perception/engines/factory.py", "from vlt_perception.pipeline import segmentation",
     "vlt_perception: each layer imports only the layers below it"),
    # a cycle between two modules of one package
    ("vlt_perception/engines/base.py", "def _late():\n    from vlt_perception.engines import _common",
     "No import cycles between sibling modules"),
    ("vlt_perception/pipeline/postprocess.py", "import torch",
     "vlt_perception imports torch only in the PyTorch engine"),
    ("vlt_perception/bag/report.py", "import vlt_training.config",
     "vlt_perception imports vlt_training only in the PyTorch engine's checkpoint"),
    ("vlt_training/export/model_metadata.py", "import rclpy", "vlt_training never imports rclpy"),
]


@pytest.mark.parametrize("path, planted, contract", PLANTED, ids=[p[0].rsplit("/", 1)[-1] + ":" + p[1].split()[-1]
                                                                  for p in PLANTED])
def test_a_forbidden_import_breaks_a_contract(tmp_path, path, planted, contract):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=lambda folder, names: [n for n in names if not (n.endswith(".py") or
                                                                               (Path(folder) / n).is_dir())])
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    target = tmp_path / path
    target.write_text(target.read_text() + "\n\n" + planted + "\n")
    result = lint_imports(tmp_path, tmp_path / "setup.cfg")
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
