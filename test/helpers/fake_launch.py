"""Stand-ins for ``launch`` / ``launch_ros`` (not installable here) that record what a launch file builds.

    from helpers.fake_launch import load_launch_file

    module, created = load_launch_file(monkeypatch, ROOT / "launch" / "perception.launch.py")
    description = module.generate_launch_description()

Every launch action (``Node``, ``DeclareLaunchArgument``, ``OpaqueFunction``, event handlers ...) becomes a
:class:`Recorder` holding its constructor arguments; ``LaunchDescription`` becomes the plain list of its entities and
``LaunchConfiguration(name).perform(context)`` reads ``context[name]`` from a dict. The real ``ros2 launch`` of these
files is exercised by the install tier and the ROS graph tests where the tools exist.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


class Recorder:
    """Any launch action: keeps ``args`` / ``kwargs`` and appends itself to ``created``."""

    created: list = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        Recorder.created.append(self)


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


def install(monkeypatch) -> list:
    """Put the stand-in modules into ``sys.modules`` for this test; returns the list of created actions."""
    Recorder.created = []
    fakes = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda entities: list(entities)),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=Recorder, EmitEvent=Recorder,
                                                OpaqueFunction=Recorder, RegisterEventHandler=Recorder),
        "launch.event_handlers": types.SimpleNamespace(OnProcessExit=Recorder),
        "launch.events": types.SimpleNamespace(Shutdown=Recorder),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=Recorder),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    return Recorder.created


def load_launch_file(monkeypatch, path: Path):
    """Import the launch file at ``path`` against the stand-ins: ``(module, created actions)``."""
    created = install(monkeypatch)
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, created
