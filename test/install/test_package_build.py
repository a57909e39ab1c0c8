"""The repository builds as a ROS 2 package with colcon and installs both package names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.install
def test_colcon_build_installs_executables_and_index_markers(tmp_path: Path) -> None:
    colcon = shutil.which("colcon")
    assert colcon, "colcon not on PATH: run the tests through ./vlt test"
    proc = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / "install" / "vlt_perception"
    for executable in ("segmentation_node", "detection_node", "bag_eval", "dataset_to_bag"):
        assert os.access(prefix / "lib" / "vlt_perception" / executable, os.X_OK), executable
    for verb in ("train", "evaluate", "export", "generate", "demo"):
        assert os.access(prefix / "lib" / "vlt_training" / verb, os.X_OK), verb
    assert (prefix / "share" / "vlt_training" / "package.xml").is_file()

    # Both names resolve through the ament index, as `ros2 pkg prefix` does.
    query = ("from ament_index_python.packages import get_package_prefix as p; "
             "print(p('vlt_perception')); print(p('vlt_training'))")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    out = subprocess.run([sys.executable, "-c", query], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(prefix), str(prefix)]

    # The installed `vlt_training train` entry point runs from the install space.
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = str(site)
    help_proc = subprocess.run([sys.executable, str(prefix / "lib" / "vlt_training" / "train"), "--help"],
                               env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert help_proc.returncode == 0, help_proc.stderr
    assert "--config" in help_proc.stdout

    # The project's open_clip model configs are package data: found inside the install space, not the source tree.
    probe = ("import open_clip, vlt_training; "
             "from vlt_training.modeling.backbone.clip_vit import register_open_clip_configs; "
             "register_open_clip_configs(); print(vlt_training.__file__); "
             "print(' '.join(m for m in open_clip.list_models() if m.startswith('vlt-')))")
    probe_proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
    assert probe_proc.returncode == 0, probe_proc.stderr
    package_file, models = probe_proc.stdout.splitlines()[-2:]
    assert Path(package_file).resolve().is_relative_to(site.resolve()), package_file
    assert {"vlt-tiny-vit", "vlt-tiny-clip"} <= set(models.split()), models
