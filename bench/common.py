"""What every benchmark script shares: the worker harness, the machine description, the `main()`
skeleton and the markdown helpers. How to add a section with them: bench/README.md ("Adding a section").

- Measuring: `run_worker(script, kind, params)` runs one measurement in a fresh process (the script
  re-run with `--worker KIND`, answered by `serve_worker`), so each has its own peak RSS and nothing
  carries over; `run_script(args)` runs a product command (train.py, evaluate.py, ...) the same way.
- Describing the machine: `machine_description()` (a dict every section stores) and `machine_summary()`
  (the short line sections print).
- The skeleton: a script describes itself as a `Section` (its measure and render functions, its
  workers and options) and calls `main(SECTION, argv)`: standard options, `--from-json` re-rendering,
  the measurement stamped with its command, machine and wall time, then `emit`.
- Rendering: `markdown_table(headers, rows, align)` and `median_range(values)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Mapping, Sequence

RESULT_PREFIX = "BENCH_RESULT "
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the library, for the workers and for its atomic writes

from data.atomic_write import write_bytes_atomically  # noqa: E402

# The packages whose versions every machine description records (and BENCHMARKS.md's header lists).
PACKAGES = ["tensorflow", "keras", "keras-hub", "numpy", "pillow", "scikit-learn", "tensorboard"]


# --------------------------------------------------------------------------- the machine

def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `default`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_description() -> dict:
    """The machine a section ran on: cores, CPU model, RAM, kernel, Python and package versions, date.

    The keys `nproc`, `cpu`, `ram_gib`, `python`, `platform` and the package names are also what
    bench_pipeline's results have always stored under meta.machine, so its old JSON still renders.
    """
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(platform.processor() or platform.machine() or "unknown"),
        "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "kernel": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{package: package_version(package) for package in PACKAGES},
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def shared_machine(results: dict) -> str:
    """The machine of a section's results, for the sections measured on a shared one; results written
    before the machine was recorded in them were all measured on 2 shared cores."""
    return f"{results['machine']}, shared" if "machine" in results else "2 shared cores"


def machine_summary(machine: dict | None = None) -> str:
    """The short form every section prints: "2 CPU cores (model name)"."""
    machine = machine or machine_description()
    return f"{machine['nproc']} CPU cores ({machine['cpu']})"


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (high-water mark of its own address space), else getrusage.

    `getrusage().ru_maxrss` is kept in the results too (`ru_maxrss_mib`), but on Linux it also
    counts the parent's RSS at fork time (it survives the exec), which inflates small workers.
    """
    peak = _status_mib("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mib() -> float:
    """This process's resident memory now (VmRSS), NaN where /proc is missing."""
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- writing the outputs

def write_atomically(path: str | Path, text: str) -> None:
    """The library's atomic write (a temporary name in the same folder, then one rename): a reader, or a
    run killed by its time limit, never sees half a file."""
    write_bytes_atomically(path, text.encode("utf-8"))


def emit(section: str, results: dict, output: str | None, json_path: str | None) -> None:
    """Print the markdown section; write it (--output) and the raw results (--json) when asked."""
    print(section)
    if output:
        write_atomically(output, section + "\n")
    if json_path:
        write_atomically(json_path, json.dumps(results, indent=2))


# --------------------------------------------------------------------------- measuring in subprocesses
# Every benchmark measures in fresh subprocesses (the script re-run with --worker KIND), so
# each measurement has its own peak RSS and no cache or memory carries over between them.

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
    os.chdir(REPO)
    result = workers[args.worker](json.loads(args.params))
    result["peak_rss_mib"] = peak_rss_mib()
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return True


def _system_busy_s() -> float:
    """CPU seconds all processes on the machine have been busy (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_and_children_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 0.5) -> float:
    """Wait (at most `max_wait_s`) until other processes use less than `threshold_cores`; returns seconds waited.

    The machine is shared (tests may run beside the benchmark); this avoids starting
    a measurement in the middle of someone else's burst. It cannot prevent one.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        busy0, mine0 = _system_busy_s(), _own_and_children_cpu_s()
        time.sleep(window_s)
        if (_system_busy_s() - busy0 - (_own_and_children_cpu_s() - mine0)) / window_s < threshold_cores:
            break
    return time.perf_counter() - started


def _environment(env: dict | None) -> dict:
    """The child's environment: ours, TensorFlow's backend and quiet C++ logs, then the caller's `env`."""
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            **(env or {})}


def run_worker(script: str, kind: str, params: dict, env: dict | None = None, *, max_wait_s: float = 0.0,
               timeout_s: float | None = None) -> dict:
    """Run `script --worker kind` in a fresh process and return its result.

    A worker that fails raises RuntimeError (its exit status and the end of its output); one that
    runs past `timeout_s` is killed and raises subprocess.TimeoutExpired.

    The result carries the worker's peak RSS (`peak_rss_mib`, VmHWM), the process's wall time
    (`process_s`), the CPU other processes used meanwhile (`other_cores`: the machine is shared)
    and, with `max_wait_s`, how long it first waited for a quiet machine (`waited_for_quiet_s`).
    """
    waited = wait_for_quiet(max_wait_s) if max_wait_s > 0 else 0.0
    command = [sys.executable, str(Path(script).resolve()), "--worker", kind, "--params", json.dumps(params)]
    busy0, mine0, started = _system_busy_s(), _own_and_children_cpu_s(), time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=_environment(env), capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - started
    other = (_system_busy_s() - busy0 - (_own_and_children_cpu_s() - mine0)) / wall
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {kind} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_s"] = wall
    result["other_cores"] = max(0.0, other)
    result["waited_for_quiet_s"] = waited
    return result


@dataclass(frozen=True)
class ScriptRun:
    """A product command run by `run_script`: its exit status and wall time (the whole process)."""

    returncode: int
    seconds: float


def run_script(args: Sequence[str], env: dict | None = None, allowed: tuple[int, ...] = (0,)) -> ScriptRun:
    """A command of the product (train.py, evaluate.py, export.py, a data generator) in its own process,
    from the repository root, timed from start to exit; any other exit status than `allowed` raises
    with the end of its stderr."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=_environment(env), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in allowed:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return ScriptRun(proc.returncode, seconds)


def progress_log(started: float | None = None) -> Callable[[str], None]:
    """The progress log measure functions get: each message prefixed with the seconds since `started`."""
    started = time.perf_counter() if started is None else started
    return lambda message: print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True)


def stamp(results: dict, script: str, quick: bool, started: float) -> dict:
    """Add what every section prints about its run, unless the measurement set it itself: the
    command, the machine (short line, and the full description under `machine_info`), the wall time."""
    results.setdefault("command", f"python bench/{script}" + (" --quick" if quick else ""))
    machine = machine_description()
    results.setdefault("machine", machine_summary(machine))
    results.setdefault("machine_info", machine)
    results.setdefault("wall_min", (time.perf_counter() - started) / 60)
    return results


# --------------------------------------------------------------------------- the main() skeleton

class UsageError(Exception):
    """Options that do not go together: `main` reports it as argparse does (usage, message, exit 2)."""


@dataclass(frozen=True)
class Section:
    """One benchmark section, as `main` runs it.

    script:  its file name ("bench_carveout.py"): the worker entry point and the default command line.
    doc:     its --help text (the module docstring).
    params:  the parsed options -> the measurement's parameters (say FULL or QUICK); may raise UsageError.
    measure: (params, log) -> results, a JSON-able dict; it may set "command" (else the skeleton's).
    render:  results -> the markdown section; it must work on any results --json ever wrote.
    workers: {kind: function(params) -> dict} that run_worker may ask for.
    add_arguments: adds the section's own options to the parser.
    revise:  with --from-json, (args, stored results) -> results to render and write (re-measure a part,
             re-label...); default: render them as stored.
    """

    script: str
    doc: str
    params: Callable[[argparse.Namespace], dict]
    measure: Callable[[dict, Callable[[str], None]], dict]
    render: Callable[[dict], str]
    workers: Mapping[str, Callable[[dict], dict]] = field(default_factory=dict)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    revise: Callable[[argparse.Namespace, dict], dict] | None = None


def read_results(path: str | Path) -> dict:
    """Results a --json run wrote; a missing or damaged file is a UsageError (one line, not a traceback)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read results from {path}: {error}") from error


def main(section: Section, argv: Sequence[str] | None = None) -> int:
    """Every script's main(): standard options, worker dispatch, measure or re-render, emit."""
    parser = argparse.ArgumentParser(prog=section.script, description=section.doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_standard_arguments(parser, dict(section.workers))
    if section.add_arguments:
        section.add_arguments(parser)
    args = parser.parse_args(argv)
    if serve_worker(args, dict(section.workers)):
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.from_json:
            results = read_results(args.from_json)
            if section.revise:
                results = section.revise(args, results)
        else:
            params = section.params(args)
            started = time.perf_counter()
            results = stamp(section.measure(params, progress_log(started)), section.script, args.quick, started)
            if args.json:  # before rendering: a rendering slip must not cost the measurements (--from-json)
                write_atomically(args.json, json.dumps(results, indent=2))
    except UsageError as error:
        parser.error(str(error))
    emit(section.render(results), results, args.output, args.json)
    return 0


# --------------------------------------------------------------------------- rendering

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table, one line per row (no trailing newline).

    align: one letter per column, "l" (the default for missing letters), "r" or "c". Cells are
    written with str() as they are: a "|" inside a cell must come escaped ("\\|").
    """
    if len(align) > len(headers):
        raise ValueError(f"align {align!r} has more letters than the {len(headers)} columns")
    unknown = set(align) - set(_ALIGN)
    if unknown:
        raise ValueError(f"align letters must be l, r or c; got {sorted(unknown)}")
    letters = align.ljust(len(headers), "l")
    lines = [_row(headers), "|" + "|".join(_ALIGN[a] for a in letters) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {list(row)}")
        lines.append(_row(row))
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"


def median_range(values: Sequence[float], digits: int = 1, thousands: bool = True) -> str:
    """"median (min – max)" of the values, the cell most tables print; `thousands` adds 1,234 commas."""
    spec = f"{',' if thousands else ''}.{digits}f"
    return (f"{statistics.median(values):{spec}} ({min(values):{spec}} – {max(values):{spec}})")
