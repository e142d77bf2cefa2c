"""Helpers shared by the benchmark scripts: the machine description and writing the outputs."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `default`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def emit(section: str, results: dict, output: str | None, json_path: str | None) -> None:
    """Print the markdown section; write it (--output) and the raw results (--json) when asked."""
    print(section)
    if output:
        Path(output).write_text(section + "\n")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (high-water mark of its own address space), else getrusage.

    `getrusage().ru_maxrss` is kept in the pipeline results too, but on Linux it also
    counts the parent's RSS at fork time (it survives the exec), which inflates small workers.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
