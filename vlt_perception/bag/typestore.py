"""The rosbags type store: ROS 2 Kilted types plus vision_msgs 4.x registered from the repo's ``.msg`` files."""

from __future__ import annotations

import functools
from pathlib import Path

from vlt_perception.bag import BagError

# interfaces/vision_msgs/msg/*.msg at the repository root (upstream vision_msgs 4.x definitions).
DEFAULT_INTERFACES_DIR = Path(__file__).resolve().parents[2] / "interfaces"


def _import_rosbags_typesys():
    try:
        from rosbags import typesys
    except ImportError as exc:  # pragma: no cover - rosbags is a runtime requirement
        raise BagError("rosbags is not installed: pip install -r requirements/runtime.txt") from exc
    return typesys


@functools.lru_cache(maxsize=4)
def get_bag_typestore(interfaces_dir: str | None = None):
    """A rosbags ``Typestore`` for ROS 2 Kilted with every package under ``interfaces_dir`` registered.

    Each ``<interfaces_dir>/<package>/msg/<Name>.msg`` becomes ``<package>/msg/<Name>``.
    """
    typesys = _import_rosbags_typesys()
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    root = Path(interfaces_dir) if interfaces_dir else DEFAULT_INTERFACES_DIR
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
