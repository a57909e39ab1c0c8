"""Where the packages' data files are (configs, launch files, interface definitions).

Two layouts hold the same relative paths:

* a colcon / ament install: ``<prefix>/share/vlt_perception/{config,launch,interfaces}`` and
  ``<prefix>/share/vlt_training/config/{train,pretrain}`` (``setup.py`` data_files);
* a source checkout: the repository root, with ``config/``, ``launch/``, ``interfaces/``.

The data that belongs to the code being run wins: when the package was imported from a source checkout, that
checkout's files are used (a developer edits them there); otherwise the package's ament share folder. The
lookup goes through ``importlib.resources`` and ``ament_index_python``, never through paths relative to this
file, so an installed package never reads a source tree that happens to sit next to it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

PACKAGES = ("vlt_perception", "vlt_training")


class ResourceNotFound(FileNotFoundError):
    """A packaged data file is neither in a source checkout nor in the package's ament share folder."""


def source_root() -> Path | None:
    """The repository root when ``vlt_perception`` is imported from a source checkout, else None."""
    package = Path(str(importlib.resources.files("vlt_perception")))
    root = package.parent
    manifest = root / "package.xml"
    if (root / "setup.py").is_file() and manifest.is_file() and "<name>vlt_perception</name>" in \
            manifest.read_text(errors="replace"):
        return root
    return None


def share_dir(package: str) -> Path:
    """The folder that holds ``package``'s data files: the source root, else its ament share folder."""
    if package not in PACKAGES:
        raise ValueError(f"unknown package {package!r}; expected one of {PACKAGES}")
    root = source_root()
    if root is not None:
        return root
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as exc:
        raise ResourceNotFound(f"{package} is not imported from a source checkout and ament_index_python is "
                               "missing: cannot find its share folder") from exc
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, LookupError, ValueError) as exc:
        raise ResourceNotFound(f"{package} is not imported from a source checkout and is not in the ament index "
                               "(AMENT_PREFIX_PATH); source the install space's setup.bash") from exc


def data_path(package: str, *parts: str, must_exist: bool = True) -> Path:
    """``share_dir(package) / parts``; with ``must_exist`` a missing file raises :class:`ResourceNotFound`."""
    path = share_dir(package).joinpath(*parts)
    if must_exist and not path.exists():
        raise ResourceNotFound(f"{path}: packaged file of {package} not found")
    return path


def resolve_config(path: str | Path, package: str = "vlt_training") -> Path:
    """A config path as the user gave it; a relative path that does not exist from the working directory is
    looked up in the package's data (``config/train/tiny_cpu.yaml`` works from any folder and from an install)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    try:
        candidate = share_dir(package) / path
    except ResourceNotFound:
        return path
    return candidate if candidate.exists() else path
