"""Helpers shared by the benchmark scripts: the machine description and writing the outputs."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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


# --------------------------------------------------------------------------- measuring in subprocesses
# Every benchmark measures in fresh subprocesses (the script re-run with --worker KIND), so
# each measurement has its own peak RSS and no cache or memory carries over between them.

RESULT_PREFIX = "BENCH_RESULT "
REPO = Path(__file__).resolve().parent.parent


def add_standard_arguments(parser, workers: dict) -> None:
    """The options every benchmark script takes (and the hidden worker entry point)."""
    parser.add_argument("--quick", action="store_true", help="reduced sizes (bench/run_all.py --quick)")
    parser.add_argument("--output", help="write the markdown section here")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--from-json", help="re-render a --json file without measuring")
    parser.add_argument("--worker", choices=sorted(workers), help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)


def serve_worker(args, workers: dict) -> bool:
    """In a worker process (--worker KIND): measure, print the result line, return True."""
    if not args.worker:
        return False
    sys.path.insert(0, str(REPO))
    result = workers[args.worker](json.loads(args.params))
    result["peak_rss_mib"] = peak_rss_mib()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return True


def run_worker(script: str, kind: str, params: dict, env: dict | None = None) -> dict:
    """Run `script --worker kind` in a fresh process and return its result (with its peak RSS)."""
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    command = [sys.executable, script, "--worker", kind, "--params", json.dumps(params)]
    proc = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def timed_measure(script: str, quick: bool, measure, params: dict) -> dict:
    """Run `measure(params, log)` with a progress log (seconds since start) and stamp the results
    with the command, the machine and the wall time, as every section prints them."""
    import time

    started = time.perf_counter()
    results = measure(params, lambda message: print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True))
    results["command"] = f"python bench/{script}" + (" --quick" if quick else "")
    results["machine"] = f"{os.cpu_count()} CPU cores ({cpu_model()})"
    results["wall_min"] = (time.perf_counter() - started) / 60
    return results
