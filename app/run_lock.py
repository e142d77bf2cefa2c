"""An exclusive lock on a run directory, held by the one process that trains, resumes or finishes it.

Why: two `train.py --resume RUN_DIR` at once both wrote the same checkpoints and model; one
marked the run complete while the other was still replacing model.keras, leaving a "finished"
run whose model did not load. `fcntl.flock` on RUN_DIR/.lock makes the second process stop
with one ERROR line naming the first one's PID. The kernel releases the lock when its holder
exits in any way, `kill -9` included, so a crashed run never stays locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from app.errors import UserError
from app.run_dir import LOCK_FILE, lock_file_pid, lock_holder


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._handle: int | None = None

    def __enter__(self) -> "RunLock":
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_exclusively(handle)
        except BlockingIOError:
            holder = lock_file_pid(handle)
            os.close(handle)
            raise _in_use(self.path.parent, holder) from None
        # The PID goes into the locked file itself, not through an atomic rename: the lock belongs
        # to this inode, and a reader only ever needs it while the lock is held.
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        self._handle = handle
        _held[_key(self.path.parent)] = self
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            _held.pop(_key(self.path.parent), None)
            os.close(self._handle)  # closing the last descriptor releases the flock
            self._handle = None

    def require_in_place(self) -> None:
        """A UserError when RUN_DIR/.lock is no longer the file this lock holds: the run directory was moved, renamed
        or removed while this process trained it. Its next write (a checkpoint, model.keras) made the old path
        again, and a run of model.keras and metadata.json without config.json, manifest.json or INCOMPLETE was
        called "Done" there, while the moved folder stayed INCOMPLETE."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            on_disk = None
        held = os.fstat(self._handle)
        if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino):
            return
        run_dir = self.path.parent
        raise UserError(f"The run directory {str(run_dir)!r} was moved, renamed or removed while this process trained "
                        "it, so it stops here: its model and checkpoints would have nowhere to go. If it was moved, continue it "
                        "where it is now (python train.py --resume NEW_PATH: it stays INCOMPLETE, with its last "
                        "checkpoint); if it was deleted, start a new run. Leave a run directory in place while a "
                        "command trains it.")


# The run directories this process holds (absolute path: lock), for require_still_held.
_held: dict[str, RunLock] = {}


def _key(run_dir: Path) -> str:
    return os.path.abspath(run_dir)


def require_still_held(run_dir: str | Path) -> None:
    """RunLock.require_in_place for the lock this process holds on `run_dir`; nothing when it holds none."""
    lock = _held.get(_key(Path(run_dir)))
    if lock is not None:
        lock.require_in_place()


def refuse_if_held(run_dir: str | Path) -> None:
    """The UserError a RunLock on `run_dir` would raise while another process holds it, only looking (nothing is
    written): a second `--resume` of a run in training was refused only after its data scan and backbone build."""
    holder = lock_holder(Path(run_dir))
    if holder is not None:
        raise _in_use(Path(run_dir), holder)


def _in_use(run_dir: Path, holder: str) -> UserError:
    return UserError(f"{str(run_dir)!r} is in use by another metatune process (PID {holder}), which is training, "
                     "resuming or finishing it. Wait for it to end (or stop it), then try again.")


# A reader that only looks (app/run_dir.lock_holder: who trains an unfinished run) holds a shared lock for a few
# microseconds; a trainer arriving then waits it out instead of being refused as if another trainer held the run.
_LOOK_RETRIES, _LOOK_WAIT_S = 5, 0.02


def _lock_exclusively(handle: int) -> None:
    for attempt in range(_LOOK_RETRIES):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _LOOK_RETRIES - 1:
                raise
            time.sleep(_LOOK_WAIT_S)
