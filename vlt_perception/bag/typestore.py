"""The rosbags type store: ROS 2 Kilted types plus vision_msgs 4.x registered from the repo's ``.msg`` files."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from vlt_perception.bag import BagError

def interfaces_dir() -> Path:
    """Where the ``.msg`` definitions are (upstream vision_msgs 4.x): $VLT_INTERFACES_DIR, else ``interfaces/``
    of the source checkout or of the installed share folder (setup.py data_files)."""
    if os.environ.get("VLT_INTERFACES_DIR"):
        return Path(os.environ["VLT_INTERFACES_DIR"])
    from vlt_perception.resources import ResourceNotFound, data_path

    try:
        return data_path("vlt_perception", "interfaces")
    except ResourceNotFound as exc:
        raise BagError(f"cannot find the vision_msgs definitions: {exc}; set VLT_INTERFACES_DIR") from exc


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
