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

    check_installed_files(prefix, site)
    check_every_executable_runs(prefix, env, tmp_path)


def check_installed_files(prefix: Path, site: Path) -> None:
    """Launch files, node configs, training recipes and open_clip model configs are in the install space."""
    share = prefix / "share"
    expected = {
        share / "vlt_perception" / "launch": ROOT.glob("launch/*.launch.py"),
        share / "vlt_perception" / "config": [*ROOT.glob("config/*.yaml"), *ROOT.glob("config/*.xml")],
        share / "vlt_training" / "config" / "train": ROOT.glob("config/train/*.yaml"),
        share / "vlt_training" / "config" / "pretrain": ROOT.glob("config/pretrain/*.yaml"),
        site / "vlt_training" / "modeling" / "backbone" / "model_configs":
            ROOT.glob("vlt_training/modeling/backbone/model_configs/*.json"),
    }
    for folder, sources in expected.items():
        names = sorted(source.name for source in sources)
        assert names, f"nothing in the source tree for {folder}"
        missing = [name for name in names if not (folder / name).is_file()]
        assert not missing, f"not installed into {folder}: {missing}"


def check_every_executable_runs(prefix: Path, env: dict, cwd: Path) -> None:
    """Every installed executable of both package names starts from the install space and answers --help.

    A console entry point naming a module or function that does not exist installs fine and only fails here.
    """
    executables = sorted((prefix / "lib" / "vlt_perception").iterdir()) + \
        sorted((prefix / "lib" / "vlt_training").iterdir())
    names = {path.name for path in executables}
    assert {"segmentation_node", "detection_node", "evaluator_node", "bag_player_node", "bag_eval",
            "dataset_to_bag", "train", "evaluate", "export", "generate", "pretrain", "demo"} <= names, names
    failures = []
    for path in executables:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        proc = subprocess.run([sys.executable, str(path), "--help"], env=env, capture_output=True, text=True,
                              cwd=cwd, timeout=300)
        if proc.returncode != 0 or "usage" not in (proc.stdout + proc.stderr).lower():
            failures.append(f"{path.parent.name}/{path.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    assert not failures, "\n".join(failures)
