"""Only regular files are opened: a FIFO, socket or device among the inputs is skipped, never opened.

Why: open() of a FIFO (named pipe) blocks until something writes to it, and read() of a device such as
/dev/zero or a terminal never ends. The data doctor opens files in worker threads, so train.py, predict.py and
evaluate.py hung there for good, and SIGTERM did not stop them either (Python runs its handler in the main
thread, which then waits for the stuck worker). A file's kind is in its stat, known without opening it.
"""

from __future__ import annotations

import os
import stat

# (test on st_mode, what the skip reason calls it): os.walk and a folder listing put all of these among the files.
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


class NotRegularFileError(OSError):
    """A file that must not be opened for reading (see the module's docstring): "PATH: not a regular file (...)"."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason  # not .filename: OSError would then print "[Errno None]"


def kind_reason(mode: int) -> str | None:
    """Why a file of this st_mode is not read ("not a regular file (a FIFO)"), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "an unknown kind of file")
    return f"not a regular file ({kind})"


def not_regular_reason(path) -> str | None:
    """kind_reason of `path` with symbolic links followed (a link to a regular file is one, a link to a FIFO is
    not); None too when it cannot be stat'ed: opening it then fails at once with its own error, never blocks."""
    try:
        return kind_reason(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a name holding a NUL byte
        return None


def open_regular(path):
    """open(path, "rb") for a regular file; NotRegularFileError, without opening it, for any other kind."""
    if (reason := not_regular_reason(path)) is not None:
        raise NotRegularFileError(path, reason)
    return open(path, "rb")


def read_regular_bytes(path) -> tuple[bytes | None, str]:
    """(the bytes of `path`, "") for a regular file; (None, why not) for another kind of file, left unopened, or
    one that cannot be read."""
    if (reason := not_regular_reason(path)) is not None:
        return None, reason
    try:
        with open(path, "rb") as handle:
            return handle.read(), ""
    except OSError as error:
        return None, f"cannot read file ({error.strerror or error})"
