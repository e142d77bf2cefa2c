"""Ctrl-C and SIGTERM stop a run within seconds even while its main thread waits inside tf.data (app/interrupt_watchdog.py).

Before: a SIGTERM sent while train.py waited for a batch whose files decode slowly (Pillow inside tf.numpy_function,
a slow or hung network file system) was acted on only once the batch came (32 s with 8 s decodes, never with a hung
one), and a run that did act on it printed its ERROR line, then hung for good in Python's finalization (a tf.data
iterator waiting for a decode that could no longer take Python's lock), until the scheduler's SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf

import app.interrupt_watchdog as watchdog
import data.atomic_write as atomic_write
import tiny_backbones  # noqa: F401  (registers tiny_image for the in-process resume)
import train
from app import run_dir as rd
from colour_folders import write_pillow_colour_folder

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 40  # the subprocess imports TensorFlow, checks the folder and reaches the feature pass
STOP_BOUND_S = 15

# train.py run as a script, with Pillow's decode parked for good once it starts: a file on a hung file system.
PARKED_DECODE = """
import runpy, sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import tiny_backbones
import data.pipeline as pipeline


def parked_decode(path, size=None):
    Path({marker!r}).write_text(path)
    while True:
        time.sleep(1)


pipeline.decode_rgb = parked_decode
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name="__main__")
"""


def test_sigterm_during_a_hung_feature_pass_stops_the_run_within_seconds_and_resume_finishes_it(tmp_path):
    data, run, marker = write_pillow_colour_folder(tmp_path / "data", 5), tmp_path / "run", tmp_path / "parked"
    script = PARKED_DECODE.format(root=str(ROOT), tests=str(ROOT / "tests"), marker=str(marker),
                                  train=str(ROOT / "train.py"))
    args = [str(data), "--backbone", "tiny_image", "--output", str(run), "--epochs", "1", "--image-size", "16",
            "--batch-size", "8", "--refit", "no", "--seed", "3"]
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, KERAS_BACKEND="tensorflow"),
                               start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not marker.is_file():
            assert process.poll() is None, f"train.py ended (exit {process.returncode}):\n{process.stderr.read()}"
            assert time.monotonic() < deadline, "train.py did not reach the feature pass"
            time.sleep(0.05)
        time.sleep(0.3)  # inside TensorFlow's wait for the batch
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        process.send_signal(signal.SIGTERM)  # a second one, as an impatient scheduler or user sends: no harm
        _, err = process.communicate(timeout=STOP_BOUND_S)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert took < STOP_BOUND_S and process.returncode == 143, (took, process.returncode, err[-2000:])
    errors = [line for line in err.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
    assert len(errors) == 1 and "Interrupted (SIGTERM)." in errors[0], err[-2000:]
    assert f"stays INCOMPLETE: continue it with python train.py --resume {run}." in errors[0]
    assert "Traceback" not in err
    assert (run / rd.INCOMPLETE_MARKER).exists() and (run / rd.CONFIG_FILE).exists()
    assert not [p for p in run.rglob("*") if p.name.startswith(atomic_write.TEMPORARY_PREFIX)]

    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists() and (run / rd.MODEL_FILE).is_file()


def _blocked_in_tensorflow(released: threading.Event):
    """A dataset whose first element waits (in a TensorFlow thread) until `released`: the main thread that asks for
    it sits in TensorFlow's C++ and runs no signal handler."""
    def wait(x):
        released.wait(10)
        return x

    return tf.data.Dataset.range(1).map(lambda x: tf.numpy_function(wait, [x], tf.int64))


@pytest.fixture
def short_grace(monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C is not Python's KeyboardInterrupt in this process")
    monkeypatch.setattr(watchdog, "GRACE_S", 0.5)


def test_an_unanswered_ctrl_c_calls_the_end_from_the_watchdog(short_grace):
    released, ended = threading.Event(), []

    def end(signum, watch):  # in the real command: os._exit; here it lets the main thread go
        ended.append((signum, watch.first_to_report(), time.monotonic()))
        released.set()

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with watchdog.unanswered_interrupts_end_the_process(end) as watch:
            list(_blocked_in_tensorflow(released))  # the handler runs once this returns
    assert len(ended) == 1 and ended[0][:2] == (signal.SIGINT, True)
    assert 0.7 < ended[0][2] - started < 3  # the signal at 0.3 s, then the grace period
    assert not watch.first_to_report()  # the main thread, late, leaves the line to the watchdog


def test_an_interrupt_the_main_thread_acts_on_and_no_interrupt_leave_the_end_uncalled(short_grace):
    ended = []
    with watchdog.unanswered_interrupts_end_the_process(lambda signum, watch: ended.append(signum)) as watch:
        time.sleep(0.7)  # no signal: nothing happens
    with pytest.raises(KeyboardInterrupt):
        with watchdog.unanswered_interrupts_end_the_process(lambda signum, watch: ended.append(signum)) as watch:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted at once
    time.sleep(0.7)  # past the grace period: the watchdog was stopped with the block
    assert ended == [] and watch.first_to_report()
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup descriptor was put back


def test_a_process_ending_itself_lets_a_write_in_progress_finish_and_starts_no_new_one(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_write, "_stopping", False)
    writing, go_on = threading.Event(), threading.Event()

    def slow_write(temporary: Path) -> None:
        writing.set()
        go_on.wait(10)
        temporary.write_text("whole")

    first = threading.Thread(target=atomic_write.write_atomically, args=(tmp_path / "first.txt", slow_write))
    first.start()
    writing.wait(10)
    assert atomic_write.stop_writes(0.2) == [atomic_write.temporary_name(tmp_path / "first.txt")]  # unfinished
    later = threading.Thread(target=atomic_write.write_bytes_atomically, args=(tmp_path / "later.txt", b"x"),
                             daemon=True)
    later.start()
    threading.Timer(0.3, go_on.set).start()
    assert atomic_write.stop_writes(5) == []  # waited for it
    first.join(5)
    assert (tmp_path / "first.txt").read_text() == "whole"
    later.join(0.3)
    assert later.is_alive() and not (tmp_path / "later.txt").exists()  # held back: the process is ending
    with atomic_write._writes:  # let it go, as the test's process goes on
        atomic_write._stopping = False
        atomic_write._writes.notify_all()
    later.join(5)
    assert (tmp_path / "later.txt").read_bytes() == b"x"
