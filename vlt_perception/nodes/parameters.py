"""Node parameters, declared one way for every node of the package.

The table of each node (:data:`vlt_perception.launch_config.NODE_PARAMS`) says what a parameter is; its default
lives in ``config/<node>.yaml``. :func:`declare_table` declares all of them with a descriptor built from the table
(type, description, range or choices, read-only), after checking what the command line and the ``--params-file``
files give the node:

- a key under the node's name (or ``/**``) that the node does not have is a start-up error naming the key and the
  file: a typo (``input_typ``) must not leave the node running on a default;
- a value of the wrong type or out of range is a start-up error naming the parameter and the file;
- a ``--params-file`` that does not exist or does not parse is one clear line before ``rclpy.init`` (which would
  raise an ``RCLError`` traceback).
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from vlt_perception.launch_config import ConfigError, ParamSpec, load_defaults, read_params_file, specs

_ROS_TYPES = {
    "bool": (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    "int": (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    "double": (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    "string": (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    "string_array": (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
}
# Parameters every node may be given besides its table: rclpy's own, and the QoS overrides, which are declared
# only when the publisher or subscription they name is created.
_ROS_PREFIXES = ("qos_overrides.",)

# The arguments the process was started with (rclpy.init's ``args``): where a parameter value came from is read
# from here, to name the file in an error. Set by :func:`vlt_perception.nodes.runner.run_node`.
_command_line: list[str] | None = None


def set_command_line(args: Sequence[str] | None) -> None:
    global _command_line
    _command_line = list(args) if args is not None else None


def _argv() -> list[str]:
    return list(sys.argv) if _command_line is None else list(_command_line)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """A ParameterDescriptor from the spec table (ranges and read-only are enforced by rclpy itself)."""
    desc = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type][0], description=spec.description,
                               read_only=spec.read_only)
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(repr(c) for c in spec.choices))
    if spec.read_only:
        constraints.append("read-only: set at start-up (command line, params file, launch file)")
    elif not spec.dynamic:
        constraints.append("applied at the next configure/activate")
    desc.additional_constraints = "; ".join(constraints)
    if spec.type == "double" and spec.min is not None and spec.max is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max))]
    if spec.type == "int" and spec.min is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max or 2**62), step=1)]
    return desc


# --- the command line ------------------------------------------------------------------------------------------


def _ros_arguments(argv: Sequence[str]) -> list[str]:
    """The tokens of every ``--ros-args ... [--]`` block."""
    out, inside = [], False
    for token in argv:
        if token == "--ros-args":
            inside = True
        elif token == "--":
            inside = False
        elif inside:
            out.append(token)
    return out


def params_files(argv: Sequence[str]) -> list[str]:
    """The ``--params-file`` paths, in command-line order."""
    ros = _ros_arguments(argv)
    return [ros[i + 1] for i, token in enumerate(ros[:-1]) if token == "--params-file"]


def command_line_parameters(argv: Sequence[str]) -> dict[str, str]:
    """``{name: value text}`` of the ``-p name:=value`` rules (without a node-name prefix, or with one)."""
    ros = _ros_arguments(argv)
    out = {}
    for i, token in enumerate(ros[:-1]):
        if token in ("-p", "--param") and ":=" in ros[i + 1]:
            name, value = ros[i + 1].split(":=", 1)
            out[name.split(":")[-1]] = value
    return out


def check_params_files(argv: Sequence[str]) -> None:
    """ConfigError naming the file when a ``--params-file`` is missing, unreadable or not a ROS 2 parameter file."""
    for path in params_files(argv):
        if not Path(path).is_file():
            raise ConfigError(f"--params-file {path}: no such file")
        read_params_file(path)  # ConfigError naming the file when it does not parse


def _section_matches(key: str, fqn: str) -> bool:
    """Whether a params-file section ``key`` applies to the node ``fqn`` (rcl's ``*`` / ``**`` wildcards)."""
    key = key if key.startswith("/") else "/" + key
    pattern = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                      for part in re.split(r"(\*\*|\*)", key))
    return re.fullmatch(pattern, fqn) is not None


def value_source(name: str, fqn: str, argv: Sequence[str] | None = None) -> str:
    """Where the value of ``name`` for the node ``fqn`` came from: ``-p`` on the command line, or a params file
    and its section (the last one that sets it, as ROS applies them in order)."""
    argv = _argv() if argv is None else argv
    if name in command_line_parameters(argv):
        return f"the command line (-p {name}:=...)"
    found = []
    for path in params_files(argv):
        try:
            sections = read_params_file(path)
        except ConfigError:
            continue
        for key, section in sections.items():
            if name in section and _section_matches(key, fqn):
                found.append(f"{path} [{key}]")
    return found[-1] if found else "the node's parameter overrides"


# --- declaring -------------------------------------------------------------------------------------------------


def _overrides(node) -> dict[str, Parameter]:
    # What rclpy collected for this node from --params-file and -p (the values declare_parameter will take).
    # rclpy keeps it in this attribute on every distribution since Foxy; it has no public accessor.
    return dict(getattr(node, "_parameter_overrides", {}) or {})


def _check_override_values(node, key: str, table: dict[str, ParamSpec]) -> None:
    fqn = node.get_fully_qualified_name()
    for name, param in _overrides(node).items():
        spec = table.get(name)
        if spec is None or param.type_ == Parameter.Type.NOT_SET:
            continue  # NOT_SET: an empty YAML list, which declare_table fills in with the typed default
        reason = spec.check(param.value, from_file=True)
        if reason:
            raise ConfigError(f"{value_source(name, fqn)}: {key} parameter {reason}")


def _check_unknown_overrides(node, key: str, table: dict[str, ParamSpec]) -> None:
    fqn = node.get_fully_qualified_name()
    for name in sorted(_overrides(node)):
        if name in table or node.has_parameter(name) or name.startswith(_ROS_PREFIXES):
            continue
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{value_source(name, fqn)}: unknown {key} parameter {name!r}{hint}; known: "
                          f"{', '.join(sorted(table))}")


def declare_table(node, key: str, check: Callable[[str, Any], str | None] | None = None) -> dict[str, ParamSpec]:
    """Declare every parameter of table ``key`` on ``node`` (defaults from ``config/<key>.yaml``).

    Raises ConfigError naming the file for unknown keys and bad values given at start-up. ``check(name, value)``
    is node-specific validation beyond the table, applied with the table's to every later SetParameters request.
    """
    table = specs(key)
    defaults = load_defaults(key)
    _check_override_values(node, key, table)

    def on_set(params: list[Parameter]) -> SetParametersResult:
        for p in params:
            spec = table.get(p.name)
            if spec is None or p.type_ == Parameter.Type.NOT_SET:
                continue  # qos_overrides.*, use_sim_time, ...: rclpy validates those
            value = float(p.value) if spec.type == "double" and isinstance(p.value, int) else p.value
            reason = spec.check(value) or (check(p.name, value) if check else None)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    # Validation first, so that values given on the command line / in params files are checked on declare.
    node.add_on_set_parameters_callback(on_set)
    overrides = _overrides(node)
    for name, spec in table.items():
        if spec.type != "string_array":
            node.declare_parameter(name, defaults[name], descriptor(spec))
            continue
        # rclpy infers BYTE_ARRAY from [] and takes an empty YAML list as "not set": a list parameter is declared
        # with the type alone when it is empty (get_parameter then reads None; see :func:`value`).
        override = overrides.get(name)
        given = override is not None and override.type_ != Parameter.Type.NOT_SET
        items = list(override.value) if given else list(defaults[name])
        node.declare_parameter(name, items if items else Parameter.Type.STRING_ARRAY, descriptor(spec),
                               ignore_override=True)
    _check_unknown_overrides(node, key, table)
    return table


def value(node, name: str, spec: ParamSpec | None = None) -> Any:
    """The value of a declared parameter; an empty list parameter (declared by type, unset) reads as []."""
    try:
        current = node.get_parameter(name).value
    except ParameterUninitializedException:
        current = None
    if current is None and (spec is None or spec.type == "string_array"):
        return []
    return current


def values(node, table: dict[str, ParamSpec]) -> dict[str, Any]:
    """``{name: value}`` of every parameter of ``table`` (for nodes that read them once, at start-up)."""
    return {name: value(node, name, spec) for name, spec in table.items()}
