"""Atomic file writes, and the fault-injection points that prove they are.

Every file a run writes goes through `write_atomically`: the content is written to a temporary
name in the destination folder and renamed into place with `os.replace`, so a reader (or a
resumed run) sees the old file or the new one, never half of one. A failed write (a full disk)
removes its temporary file before the error propagates.

Other steps that change what a run directory means (a checkpoint folder renamed into place, an
old checkpoint deleted, the INCOMPLETE marker removed) call `boundary(label)` once done.

Fault injection (tests/test_fault_injection.py): the environment variable METATUNE_FAULT
names one write boundary, counted from 1 in the order a process reaches them:
  kill@N     the process SIGKILLs itself right after boundary N is complete (what `kill -9`
             between two writes leaves behind)
  kill@label=TEXT  ... right after the first boundary whose label contains TEXT (a point
             named rather than counted: tests/test_multi_worker.py kills a worker after a
             given checkpoint without a first run to count the boundaries)
  term@label=TEXT  ... sends itself SIGTERM instead (a scheduler stopping it: the run ends
             with its ERROR line; tests/test_multi_worker.py checks a worker honours it)
  enospc@N   write N fails with OSError(ENOSPC) before anything is renamed into place (a full
             disk); a `boundary` with no write of its own (a deletion) cannot run out of space
             and completes as usual
METATUNE_FAULT_LOG names a file to which each boundary appends one line, "N<TAB>label<TAB>path",
so a test can enumerate a run's boundaries before injecting a fault at each of them.
Neither is set in normal use; then a boundary costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

FAULT_VARIABLE = "METATUNE_FAULT"
FAULT_LOG_VARIABLE = "METATUNE_FAULT_LOG"

_count = 0  # boundaries reached by this process


def _fault() -> tuple[str, int | str] | None:
    """(mode, boundary number or label text) of METATUNE_FAULT; None when unset."""
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return None
    mode, _, where = spec.partition("@")
    return (mode, where.removeprefix("label=")) if where.startswith("label=") else (mode, int(where))


def fault_setting_problem() -> str | None:
    """Why METATUNE_FAULT or METATUNE_FAULT_LOG cannot be used (the message to show), else None. Checked when a
    command starts (app/cli.run_safely): a value such as "kill" or a log in a missing folder was a ValueError or
    FileNotFoundError traceback at the run's first write, and an unknown mode ("kil@3") injected nothing."""
    spec = os.environ.get(FAULT_VARIABLE)
    if spec:
        mode, _, where = spec.partition("@")
        counted = where.isascii() and where.isdigit() and int(where) >= 1
        named = where.startswith("label=") and len(where) > len("label=")
        if mode not in ("kill", "term", "enospc") or not (counted or named):
            return (f"{FAULT_VARIABLE} must be kill@N, enospc@N (N from 1), kill@label=TEXT or term@label=TEXT: "
                    f"a test switch (data/atomic_write.py). Received: {FAULT_VARIABLE}={spec!r}. Unset it.")
    log = os.environ.get(FAULT_LOG_VARIABLE)
    if log:
        try:
            with open(log, "a", encoding="utf-8"):
                pass
        except OSError as error:
            return (f"{FAULT_LOG_VARIABLE} names a file this command cannot append to ({error.strerror or error}). "
                    f"Received: {FAULT_LOG_VARIABLE}={log!r}. Name a file in an existing folder, or unset it.")
    return None


def _reach(label: str, path: Path) -> tuple[str, int | str] | None:
    """Count one boundary, log it, and return the fault to inject here (None: none)."""
    global _count
    if not os.environ.get(FAULT_VARIABLE) and not os.environ.get(FAULT_LOG_VARIABLE):
        return None
    _count += 1
    if log := os.environ.get(FAULT_LOG_VARIABLE):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{_count}\t{label}\t{path}\n")
    fault = _fault()
    if fault is None:
        return None
    return fault if (fault[1] in label if isinstance(fault[1], str) else fault[1] == _count) else None


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by " + FAULT_VARIABLE + ")", str(path))


def _die(mode: str = "kill") -> None:
    os.kill(os.getpid(), signal.SIGTERM if mode == "term" else signal.SIGKILL)


def boundary(label: str, path: str | Path) -> None:
    """A step that changed the state on disk is complete (see the module docstring)."""
    fault = _reach(label, Path(path))
    if fault and fault[0] in ("kill", "term"):
        _die(fault[0])


TEMPORARY_PREFIX = ".tmp-"  # a name beginning so is taken for a temporary: a killed writer's is removed


def temporary_name(path: Path) -> Path:
    """Hidden, unique to this process, same folder (so the rename stays on one filesystem); it
    ends with the final name because some writers look at the suffix (np.savez appends ".npz"
    otherwise; Keras wants ".keras" and ".weights.h5")."""
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def write_atomically(path: str | Path, write: Callable[[Path], None], label: str | None = None) -> None:
    """`write(temporary_path)` writes the content; it then replaces `path` in one rename."""
    path = Path(path)
    temporary = temporary_name(path)
    fault = _reach(label or path.name, path)
    try:
        with _in_progress(temporary):
            write(temporary)
            if fault and fault[0] == "enospc":
                raise _disk_full(path)
            os.replace(temporary, path)
    except BaseException as error:  # Ctrl-C included: no temporary file is left behind
        _remove(temporary)
        if isinstance(error, OSError) and (error.filename is None or str(temporary) in str(error.filename)):
            error.filename = str(path)  # the user knows the file, not its temporary name (writers may give none)
        raise
    if fault and fault[0] in ("kill", "term"):
        _die(fault[0])


# The writes in progress (their temporary names), for a process that ends itself: app/interrupt_watchdog.py ends
# one whose main thread does not act on Ctrl-C or SIGTERM, and first lets these finish (`stop_writes`).
_writes = threading.Condition()
_writing: list[Path] = []
_stopping = False


@contextmanager
def _in_progress(temporary: Path):
    with _writes:
        while _stopping:  # the process is ending itself: a write started now would be cut short
            _writes.wait()
        _writing.append(temporary)
    try:
        yield
    finally:
        with _writes:
            _writing.remove(temporary)
            _writes.notify_all()


def stop_writes(timeout_s: float) -> list[Path]:
    """For a process about to end itself with os._exit: start no new write (one that begins blocks until the end),
    wait up to `timeout_s` for those in progress to finish, and return the temporary names of those still unfinished
    (left as they are: removing one while its writer renames it could cut a final file short; a temporary name is
    never taken for a final file, and a resume removes it as it does a `kill -9`'s)."""
    global _stopping
    with _writes:
        _stopping = True
        _writes.wait_for(lambda: not _writing, timeout_s)
        return list(_writing)


def write_bytes_atomically(path: str | Path, data: bytes, label: str | None = None) -> None:
    write_atomically(path, lambda temporary: temporary.write_bytes(data), label)


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the error being raised matters more than a leftover temporary file


_TEMPORARY = re.compile(re.escape(TEMPORARY_PREFIX) + r"(\d+)-(.+)", re.DOTALL)


def _others_temporaries(folder: Path) -> dict[tuple[str, int], Path]:
    """{(NAME, PID): path} of `folder`'s `.tmp-PID-NAME` entries of other processes than this one: another PID, or
    this one's number on an entry last changed before this process started (a killed process's, whose number came
    back: a container restarted runs its command under the same small PID)."""
    found = {}
    for entry in folder.glob(TEMPORARY_PREFIX + "*") if folder.is_dir() and not folder.is_symlink() else ():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and (int(match[1]) != os.getpid() or _changed_before_start(entry, os.getpid())):
            found[match[2], int(match[1])] = entry
    return found


def dead_temporaries(folder: Path) -> dict[tuple[str, int], Path]:
    """{(NAME, PID): path} of `folder`'s `.tmp-PID-NAME` entries (`temporary_name`'s, and the staging folders
    named the same way) whose process PID no longer runs: what a process killed mid-write (kill -9, a power
    cut) left. PIDs are this machine's: writers on other machines into one shared folder are not told apart."""
    return {key: entry for key, entry in _others_temporaries(folder).items() if not _writer_alive(key[1], entry)}


def live_temporaries(folder: Path) -> dict[tuple[str, int], Path]:
    """{(NAME, PID): path} of `folder`'s `.tmp-PID-NAME` entries that another running process is writing."""
    return {key: entry for key, entry in _others_temporaries(folder).items() if _writer_alive(key[1], entry)}


def _writer_alive(pid: int, entry: Path) -> bool:
    """Whether process `pid` runs and may be the writer of `entry`: a process that started after the entry was last
    changed is another one under a reused number (Linux gives out at most 32768 by default; fewer in a container),
    and took a killed evaluation's leftover for a live one ("Another evaluation (PID N) is writing") for as long as
    it ran."""
    return process_alive(pid) and not _changed_before_start(entry, pid)


# Clock skew allowed between a file's change time (the wall clock) and a process's start (the boot clock).
_START_SLACK_S = 1.0


def _changed_before_start(entry: Path, pid: int) -> bool:
    """Whether `entry` was last changed (its ctime: a write, a rename, never set back by a copy) before process
    `pid` started, by more than the clocks' slack; False when either is unknown (not Linux: as before)."""
    try:
        after_paren = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        started_ago = float(Path("/proc/uptime").read_text().split()[0]) - int(after_paren[19]) / os.sysconf(
            "SC_CLK_TCK")
        changed_ago = time.time() - os.lstat(entry).st_ctime
    except (OSError, ValueError, IndexError):
        return False
    return changed_ago > started_ago + _START_SLACK_S


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (what a temporary name's PID is checked against before its
    leftover is removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
