"""Ctrl-C and SIGTERM stop a command within seconds, even while its main thread waits inside TensorFlow.

Why: Python runs a signal's handler in the main thread only, between two bytecodes. A main thread inside one long
call into TensorFlow's C++ runs none until that call returns: waiting for a tf.data batch whose files decode
slowly (Pillow inside tf.numpy_function, the frozen backbone's feature pass) or are read from a slow or hung
network file system. A SIGTERM sent during a feature pass whose files took 8 s each to decode was acted on 32 s
later, one sent while a decode hung never: a scheduler's grace period (Slurm, Kubernetes) then ended in SIGKILL,
with no word said.

How: Python's own C-level handler writes the signal's number to its wakeup descriptor (signal.set_wakeup_fd) the
moment the signal arrives, whatever the main thread is doing; a daemon thread waits on that descriptor. When the
command has not ended GRACE_S after the first Ctrl-C or SIGTERM (a second one changes nothing: the main thread acts
on it as before, or the same deadline ends the process), that thread calls `end(signum)`: app/cli.py lets the atomic
writes in progress finish (data/atomic_write.stop_writes), says the one line the main thread would have said and
ends the process with the same status (os._exit). What it leaves is what `kill -9` between two writes leaves, which
a resume continues from (tests/test_fault_injection.py). A command that acts on the signal in time is unchanged, and
so is one that receives none.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

logger = logging.getLogger(__name__)
# How long the main thread has to act on Ctrl-C or SIGTERM: it takes well under a second when it runs Python code,
# and schedulers wait longer before SIGKILL (Kubernetes 30 s by default, Slurm's KillWait 30 s).
GRACE_S = 5.0
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
_STOP = b"\0"  # written by the block's end: no signal has the number 0


class InterruptWatch:
    """What the main thread and the watchdog share: which of them says the interrupt's line (one of them, once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said = False

    def first_to_report(self) -> bool:
        with self._lock:
            said, self._said = self._said, True
        return not said


@contextmanager
def unanswered_interrupts_end_the_process(end: Callable[[int, InterruptWatch], None]) -> Iterator[InterruptWatch]:
    """Inside the block, `end(signum, watch)` is called from a daemon thread when a Ctrl-C or SIGTERM is not followed
    by the block's end within GRACE_S (see the module's docstring); `end` must not return. Outside the main thread, or
    where a wakeup descriptor is already set (an asyncio loop around the command), nothing is watched."""
    watch = InterruptWatch()
    reader, writer = os.pipe()
    os.set_blocking(writer, False)  # set_wakeup_fd requires it: a signal handler must never block
    try:
        previous = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(reader)
        os.close(writer)
        yield watch
        return
    threading.Thread(target=_watch, args=(reader, end, watch), name="metatune-interrupt-watchdog",
                     daemon=True).start()
    try:
        yield watch
    finally:
        signal.set_wakeup_fd(-1)
        try:
            os.write(writer, _STOP)
        except OSError:  # the watchdog has already ended (its `end` returned, in a test): nothing to stop
            pass
        os.close(writer)  # the watchdog reads _STOP (or the end of the pipe) and closes the reader


def _watch(reader: int, end: Callable[[int, InterruptWatch], None], watch: InterruptWatch) -> None:
    """The watchdog thread: wait for an interrupt's byte, then for the block's end until the deadline."""
    signum, deadline = None, None
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([reader], [], [], timeout)[0]:  # the deadline passed: the command did not end
                logger.debug("The main thread did not act on signal %d within %.0f s: ending the process", signum,
                             GRACE_S)
                end(signum, watch)
                return
            received = os.read(reader, 64)
            if not received or _STOP in received:
                return
            if signum is None:
                signum = next((number for number in received if number in _INTERRUPTS), None)
                if signum is not None:
                    deadline = time.monotonic() + GRACE_S
    finally:
        os.close(reader)
