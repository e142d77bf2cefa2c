"""A command that fails in the middle of a tf.data pass exits at once with its one ERROR line (app/cli.py exit_command).

Before: a train.py or predict.py whose input file turned corrupt while other files were still being decoded (Pillow
inside tf.numpy_function) printed "ERROR ... An input file could not be read", then hung for good in Python's
finalization: the failed pass's iterator, kept alive by the exception's reference cycles, waited there for a decode
that a finalizing Python never lets finish. The same after a full disk (status 2) and a bug's traceback (status 1).
"""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import app.cli as cli
import data.atomic_write as atomic_write
import tiny_backbones  # noqa: F401  (registers tiny_image for the in-process runs)
import train
from app import run_dir as rd
from colour_folders import write_pillow_colour_folder

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60  # the subprocess imports TensorFlow, checks the folder and reaches its first decode
EXIT_BOUND_S = 20  # from that decode: the pass fails within a second, the exit took for ever

# An entry script run as a script, its Pillow decodes slowed (a slow disk): the first file the pass decodes turns
# corrupt under it (truly: the real decoder then fails on it), while the other decodes are in progress.
CORRUPTED_MID_PASS = """
import runpy, sys, threading, time
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
import tiny_backbones
import data.pipeline as pipeline

real_decode, lock, marker = pipeline.decode_rgb, threading.Lock(), Path({marker!r})


def slow_decode(path, size=None):
    with lock:
        if not marker.exists():
            Path(path).write_bytes(b"no longer an image")
            marker.write_text(path)
    time.sleep(0.5)
    return real_decode(path, size)


pipeline.decode_rgb = slow_decode
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def _run_corrupting_one_file(tmp_path: Path, script: str, args: list[str]) -> tuple[int, str, Path, float]:
    """(exit status, stderr, the file made corrupt, seconds from its corruption to the exit) of `script args`."""
    marker = tmp_path / "corrupted"
    child = CORRUPTED_MID_PASS.format(root=str(ROOT), tests=str(ROOT / "tests"), marker=str(marker),
                                      script=str(ROOT / script))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               METATUNE_CACHE_DIR=str(tmp_path / "cache"))  # no features cached: the pass decodes every file
    process = subprocess.Popen([sys.executable, "-c", child, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not marker.is_file():
            assert process.poll() is None, f"{script} ended (exit {process.returncode}):\n{process.stderr.read()}"
            assert time.monotonic() < deadline, f"{script} did not reach its first decode"
            time.sleep(0.05)
        corrupted = time.monotonic()
        try:
            _, err = process.communicate(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} did not exit within {EXIT_BOUND_S} s of the file turning corrupt (it hung)")
        return process.returncode, err, Path(marker.read_text()), time.monotonic() - corrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()


def _one_unreadable_error(err: str, path: Path) -> None:
    errors = [line for line in err.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
    assert len(errors) == 1 and "An input file could not be read" in errors[0] and str(path) in errors[0], err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def test_train_whose_file_turns_corrupt_mid_feature_pass_exits_promptly_and_resumes(tmp_path):
    data, run = write_pillow_colour_folder(tmp_path / "data", 8), tmp_path / "run"
    originals = {path: path.read_bytes() for path in data.rglob("*.png")}
    status, err, corrupted, took = _run_corrupting_one_file(
        tmp_path, "train.py", [str(data), "--backbone", "tiny_image", "--output", str(run), "--epochs", "1",
                               "--image-size", "16", "--batch-size", "4", "--refit", "no", "--seed", "3"])
    assert status == 2 and took < EXIT_BOUND_S, (status, took, err[-3000:])
    _one_unreadable_error(err, corrupted)
    assert (run / rd.INCOMPLETE_MARKER).exists() and (run / rd.CONFIG_FILE).exists()
    assert not [p for p in run.rglob("*") if p.name.startswith(atomic_write.TEMPORARY_PREFIX)]

    corrupted.write_bytes(originals[corrupted])  # the file as the run recorded it: the run continues
    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists() and (run / rd.MODEL_FILE).is_file()


def test_predict_whose_file_turns_corrupt_mid_pass_exits_promptly(tmp_path):
    data, run = write_pillow_colour_folder(tmp_path / "data", 8), tmp_path / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--output", str(run), "--epochs", "1", "--image-size",
                       "16", "--batch-size", "8", "--refit", "no", "--seed", "3", "--test-fraction", "0"]) == 0
    status, err, corrupted, took = _run_corrupting_one_file(tmp_path, "predict.py",
                                                            [str(run), str(data), "--batch-size", "4"])
    assert status == 2 and took < EXIT_BOUND_S, (status, took, err[-3000:])
    _one_unreadable_error(err, corrupted)


def test_a_bug_keeps_its_traceback_and_status_1_and_its_leftovers_are_released_before_the_exit(capsys):
    released = []

    class Leftover:  # in a reference cycle, as the failed pass's iterator is
        def __init__(self):
            self.me = self

        def __del__(self):
            released.append(True)

    def main():
        leftover = Leftover()  # noqa: F841  (held by the traceback's frame)
        raise RuntimeError("a bug")

    gc.disable()  # only exit_command's own collection may release it
    try:
        with pytest.raises(SystemExit) as exited:
            cli.exit_command(main)
    finally:
        gc.enable()
    assert exited.value.code == 1 and released == [True]
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: a bug" in err


def test_a_collection_that_does_not_end_ends_the_process_with_the_commands_status(monkeypatch):
    blocked, ended = threading.Event(), []
    monkeypatch.setattr(cli, "RELEASE_WAIT_S", 0.3)
    monkeypatch.setattr(cli.gc, "collect", lambda: blocked.wait(10))  # a decode that hangs (a hung file system)
    monkeypatch.setattr(cli.os, "_exit", lambda status: (ended.append(status), blocked.set()))
    started = time.monotonic()
    cli._release_leftovers(2)
    assert ended == [2] and time.monotonic() - started < 5

    monkeypatch.setattr(cli.gc, "collect", lambda: None)  # released in time: nothing else happens
    cli._release_leftovers(2)
    time.sleep(0.5)
    assert ended == [2]
