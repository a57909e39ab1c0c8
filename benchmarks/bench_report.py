"""What every benchmark's JSON carries about where it ran, and how it is written.

    from bench_report import cpu_name, finish, machine_info, time_interleaved, write_json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlt_perception.atomic import atomic_write_text  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def engine_versions() -> dict[str, str | None]:
    """Versions of the CPU engines (None where one is not installed)."""
    versions = {}
    for module in ("onnxruntime", "openvino"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def machine_info(torch_module=None) -> dict:
    """CPU, cores, load and library versions, for the JSON of a figure (a figure carries its machine)."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(), **engine_versions()}
    if torch_module is not None:
        info.update(torch=torch_module.__version__, torch_threads=torch_module.get_num_threads())
    return info


def write_json(path: Path, result: dict) -> None:
    """Write ``result`` atomically: an interrupted run never leaves half a file where the last one was."""
    atomic_write_text(Path(path), json.dumps(result, indent=2, default=str))  # paths and the like as text


def finish(out: Path, result: dict, table: str) -> int:
    """The end of a benchmark's main(): the JSON written, the table printed; returns the exit status 0."""
    write_json(out, result)
    print(table)
    print(f"wrote {out}")
    return 0


def time_interleaved(calls: dict[str, Callable[[], object]], iters: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every entry, timed side by side: each round calls every entry once, the order rotated
    by one every round (with two entries: alternated), so drift in the machine's speed hits all of them alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(iters):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times
