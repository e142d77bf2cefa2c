"""Quiet, honest output: one summary line per epoch, no control codes in logs, no TensorFlow start-up chatter."""

import pytest
import subprocess
import sys
from pathlib import Path

import numpy as np

import app.progress as progress
import train
from app.cli import START_UP_NOISE
from colour_folders import write_colour_folder

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

ROOT = Path(__file__).resolve().parents[2]


def test_a_redirected_log_has_one_line_per_epoch_and_no_control_codes(tmp_path, capfd):
    data = write_colour_folder(tmp_path / "data", per_class=8, size=16)
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "3", "--patience", "10",
                       "--strategy", "finetune", "--finetune-epochs", "2", "--output", str(tmp_path / "run")]) == 0
    out, err = capfd.readouterr()
    log = out + err
    assert "\x1b[" not in log and "\r" not in log and "\b" not in log  # no ANSI codes, carriage returns, backspaces
    assert "Epoch 1/" not in log  # Keras' own per-epoch lines are off: metatune's summary is the only one
    assert [line for line in log.splitlines() if " epoch 1/" in line].__len__() >= 2  # head and finetune phases
    for phase, epochs in (("head", 3), ("finetune", 2)):
        lines = [line for line in log.splitlines() if f"app.phases: {phase} epoch " in line]
        assert len(lines) == epochs, lines


def test_progress_bars_are_drawn_on_a_terminal_and_cleared(monkeypatch):
    import functools
    import io

    import keras

    stream = io.StringIO()
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "tqdm", functools.partial(progress.tqdm, file=stream, mininterval=0))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = progress.BatchProgress("Features")
    model.predict(np.zeros((64, 2), np.float32), batch_size=8, verbose=0, callbacks=[callback])
    drawn = stream.getvalue()
    assert "Features" in drawn and "8/8" in drawn  # a bar over the 8 batches, to the end
    assert drawn.endswith("\r") and callback._bar is None  # leave=False: the bar line is cleared when done

    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    stream.seek(0), stream.truncate()
    model.predict(np.zeros((64, 2), np.float32), batch_size=8, verbose=0, callbacks=[progress.BatchProgress("x")])
    assert stream.getvalue() == ""  # not a terminal: nothing drawn


def test_start_up_noise_is_filtered_and_other_stderr_kept():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1.2 1 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical",
        "I0000 00:00:1.2 1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
        "E0000 00:00:1.2 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    ]
    assert all(START_UP_NOISE.search(line) for line in noise)
    assert not START_UP_NOISE.search("ImportError: libcudnn.so.9: cannot open shared object file")
    # A fresh interpreter: importing an entry script imports TensorFlow and prints none of it.
    result = subprocess.run([sys.executable, "-c", "import predict"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert not any(START_UP_NOISE.search(line) for line in result.stderr.splitlines()), result.stderr
