"""The rosbags type store: ROS 2 Kilted types plus vision_msgs 4.x registered from the repo's ``.msg`` files."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from vlt_perception.bag import BagError

# interfaces/vision_msgs/msg/*.msg at the repository root (upstream vision_msgs 4.x definitions); an installed
# package has them under share/vlt_perception/interfaces (setup.py); VLT_INTERFACES_DIR overrides both.
DEFAULT_INTERFACES_DIR = Path(__file__).resolve().parents[2] / "interfaces"


def interfaces_dir() -> Path:
    """Where the ``.msg`` definitions are: $VLT_INTERFACES_DIR, the source tree, or the installed share folder."""
    if os.environ.get("VLT_INTERFACES_DIR"):
        return Path(os.environ["VLT_INTERFACES_DIR"])
    if any(DEFAULT_INTERFACES_DIR.glob("*/msg/*.msg")):
        return DEFAULT_INTERFACES_DIR
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        return Path(get_package_share_directory("vlt_perception")) / "interfaces"
    except (ImportError, PackageNotFoundError, LookupError, ValueError):
        return DEFAULT_INTERFACES_DIR


def _import_rosbags_typesys():
    try:
        from rosbags import typesys
    except ImportError as exc:  # pragma: no cover - rosbags is a runtime requirement
        raise BagError("rosbags is not installed: pip install -r requirements/runtime.txt") from exc
    return typesys


@functools.lru_cache(maxsize=4)
def get_bag_typestore(folder: str | None = None):
    """A rosbags ``Typestore`` for ROS 2 Kilted plus every package under ``folder`` (default :func:`interfaces_dir`).

    Each ``<folder>/<package>/msg/<Name>.msg`` becomes ``<package>/msg/<Name>``.
    """
    typesys = _import_rosbags_typesys()
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    root = Path(folder) if folder else interfaces_dir()
    msg_files = sorted(root.glob("*/msg/*.msg"))
    if not msg_files:
        raise BagError(f"{root}: no interface definitions (*/msg/*.msg); vision_msgs types cannot be registered")
    types = {}
    for path in msg_files:
        name = f"{path.parent.parent.name}/msg/{path.stem}"
        try:
            types.update(typesys.get_types_from_msg(path.read_text(), name))
        except Exception as exc:  # rosbags raises its own parser errors; name the file
            raise BagError(f"{path}: cannot parse message definition: {exc}") from exc
    store.register(types)
    return store
