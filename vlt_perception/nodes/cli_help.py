"""``--help`` for the ROS 2 node executables (``ros2 run vlt_perception segmentation_node --help``).

A ROS node reads its settings as parameters (``--ros-args -p name:=value``), not as command-line options, so
``--help`` would otherwise be ignored and the node would start. This prints the node's description and its
parameters with their defaults, without importing rclpy or starting anything.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence

HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    """``-h`` / ``--help`` among the arguments before ``--ros-args`` (after it, everything is rclpy's)."""
    args = list(argv)
    if "--ros-args" in args:
        args = args[: args.index("--ros-args")]
    return any(a in HELP_FLAGS for a in args)


def format_help(executable: str, doc: str | None, parameters: Sequence[tuple[str, str, str]]) -> str:
    lines = [f"usage: ros2 run vlt_perception {executable} [--ros-args -p NAME:=VALUE ... -r FROM:=TO ...]", ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("parameters (default):")
    for name, default, description in parameters:
        lines.append(f"  {name} ({default})")
        lines += textwrap.wrap(description, width=100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def maybe_print_help(executable: str, doc: str | None, parameters: Sequence[tuple[str, str, str]],
                     argv: Sequence[str] | None = None) -> bool:
    """Print the help and return True when it was asked for (the caller then exits 0)."""
    if not wants_help(sys.argv[1:] if argv is None else argv):
        return False
    print(format_help(executable, doc, parameters))
    return True
