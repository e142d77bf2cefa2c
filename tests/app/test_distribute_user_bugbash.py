"""Bug-bash of --distribute and METATUNE_CPU_DEVICES as a laptop user tries them.

- METATUNE_CPU_DEVICES=2 with the default --distribute auto (the README's own example) trained on one device
  without a word: auto mirrors over GPUs only. Now a warning says so and what to pass; auto also says what it
  chose on a machine without GPUs.
- TF_CONFIG under any mode but multi-worker was ignored without a word (two machines each trained a run of
  their own). Now a warning.
- A Ctrl-C (or SIGTERM) that arrived while a finalizer ran (TensorFlow's ConcreteFunctionGarbageCollector.__del__,
  seen under --distribute mirrored) was dropped by Python with a traceback, and the run trained on to its end.

Fresh-process checks (two logical CPUs, two workers) live in tests/app/test_distribution.py and
tests/test_multi_worker.py; these run in this process, where the CPU is one device.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
import time

import pytest

import app.cli
import train
from app.cpu_devices import ENV_VAR
from app.distribution import resolve_distribution
from colour_folders import write_colour_folder

ONE_WORKER = json.dumps({"cluster": {"worker": ["127.0.0.1:20001"]}, "task": {"type": "worker", "index": 0}})
ONE_DEVICE = {"strategy": "none", "replicas": 1, "workers": 1}


def _resolve(caplog, mode: str, environ: dict, resume_dir: str | None = None) -> dict:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app.distribution"):
        return resolve_distribution(mode, 4, environ=environ, resume_dir=resume_dir).info.to_metadata()


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_a_cpu_split_that_trains_on_one_device_says_what_to_pass(caplog, mode):
    assert _resolve(caplog, mode, {ENV_VAR: "2"}) == ONE_DEVICE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert f"{ENV_VAR}=2 splits the CPU into 2 devices, but --distribute {mode} trains on one device" in warnings[0]
    assert "pass --distribute mirrored to train on the 2 logical CPUs" in warnings[0]


def test_a_resumed_run_is_not_told_to_pass_an_option_resume_refuses(caplog):
    """--resume takes no --distribute: the advice is a new run from the run's config."""
    _resolve(caplog, "auto", {ENV_VAR: "3"}, resume_dir="/runs/r")
    assert "python train.py --config /runs/r/config.json --distribute mirrored --output NEW_DIR" in caplog.text
    assert "pass --distribute mirrored" not in caplog.text


def test_auto_without_gpus_says_it_chose_one_device_and_none_stays_quiet(caplog):
    assert _resolve(caplog, "auto", {}) == ONE_DEVICE
    assert "--distribute auto: no GPU is visible, so training runs on one device (--distribute none)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert _resolve(caplog, "none", {}) == ONE_DEVICE
    assert caplog.text == ""  # the user chose one device: nothing to say


@pytest.mark.parametrize("mode", ["auto", "none", "mirrored"])
def test_tf_config_outside_multi_worker_is_said_to_be_ignored(caplog, mode):
    _resolve(caplog, mode, {"TF_CONFIG": ONE_WORKER})
    assert f"TF_CONFIG is set, but --distribute {mode} trains on this machine alone" in caplog.text
    assert "only --distribute multi-worker reads TF_CONFIG" in caplog.text
    _resolve(caplog, mode, {"TF_CONFIG": "  "})
    assert "TF_CONFIG" not in caplog.text


def test_train_with_a_cpu_split_and_the_default_distribute_warns_and_records_one_device(tmp_path, capsys,
                                                                                        monkeypatch):
    """The README's example as a user types it (no --distribute), TF_CONFIG left over in the shell too."""
    monkeypatch.setenv(ENV_VAR, "2")
    monkeypatch.setenv("TF_CONFIG", ONE_WORKER)
    folder = write_colour_folder(tmp_path / "colours", per_class=4, size=8)
    run = tmp_path / "run"
    assert train.main([str(folder), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "1",
                       "--refit", "no", "--output", str(run), "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert f"{ENV_VAR}=2 splits the CPU" in err and "TF_CONFIG is set, but --distribute auto" in err
    assert " ERROR " not in err and "Traceback" not in err
    assert json.loads((run / "metadata.json").read_text())["distribute"] == ONE_DEVICE


class _SignalInFinalizer:
    """Raises `signum` while it is being finalized, as a Ctrl-C that arrives during a __del__ of TensorFlow's."""

    def __init__(self, signum):
        self.signum = signum

    def __del__(self):
        signal.raise_signal(self.signum)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_that_lands_in_a_finalizer_still_stops_the_command(capsys, signum, status):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C is not Python's KeyboardInterrupt in this process")
    finished = []

    def command() -> int:
        _SignalInFinalizer(signum)  # dropped at once: the signal's exception is raised inside __del__
        gc.collect()
        deadline = time.monotonic() + 5  # the run "trains on": before the fix it reached its end
        while time.monotonic() < deadline:
            time.sleep(0.01)
        finished.append(True)
        return 0

    app.cli.setup_logging()  # onto this test's stderr, as train.main does
    started = time.monotonic()
    assert app.cli.run_safely(command) == status
    assert not finished and time.monotonic() - started < 3
    err = capsys.readouterr().err
    assert "Interrupted" in err and "Exception ignored" not in err and "Traceback" not in err
