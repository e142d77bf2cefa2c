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
from app.run_dir import LOCK_FILE, lock_file_pid


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
            raise UserError(f"{str(self.path.parent)!r} is in use by another metatune process (PID {holder}), which "
                            "is training, resuming or finishing it. Wait for it to end (or stop it), then try "
                            "again.") from None
        # The PID goes into the locked file itself, not through an atomic rename: the lock belongs
        # to this inode, and a reader only ever needs it while the lock is held.
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing the last descriptor releases the flock
            self._handle = None


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
