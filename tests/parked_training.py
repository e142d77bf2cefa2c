"""Start `train.py` in a subprocess and SIGKILL it (or send another signal) inside the epoch after a given
checkpoint.

Event-driven, not timed: the subprocess's batch hook looks at the checkpoint pointer after every
training batch; once the pointer names the wanted checkpoint, the hook writes a marker file and
parks there for good. The test waits for the marker (the process is then, for certain, inside
the next epoch, with nothing of that epoch checkpointed) and kills it. No fixed delay decides
where the kill lands, so a loaded machine cannot move it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.checkpoints import CHECKPOINTS_DIR

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240  # the subprocess imports TensorFlow and trains up to the wanted checkpoint

PARKING_TRAIN = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import tests.tiny_backbones
import app.phases as phases

pointer, marker, wanted = Path({pointer!r}), Path({marker!r}), {wanted!r}


def park_once_checkpointed(self, batch, logs=None):
    try:
        latest = json.loads(pointer.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return
    if latest.endswith(wanted):
        marker.write_text(latest)
        while True:  # parked inside the next epoch until the test kills the process
            time.sleep(1)


phases.EpochSummary.on_train_batch_end = park_once_checkpointed
import train
sys.exit(train.main(sys.argv[1:]))
"""


def kill_inside_epoch_after(args: list[str], run: Path, wanted: str, tmp_path: Path,
                            sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Run `train.py args` (output `run`), send it `sig` (SIGKILL) in the epoch after checkpoint `wanted`;
    (its exit status, its stderr)."""
    marker = tmp_path / "parked"
    script = PARKING_TRAIN.format(root=str(ROOT), pointer=str(run / CHECKPOINTS_DIR / "latest.json"),
                                  marker=str(marker), wanted=wanted)
    process = subprocess.Popen([sys.executable, "-c", script, *args], env=dict(os.environ, KERAS_BACKEND="tensorflow"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not marker.is_file():
            if process.poll() is not None:
                raise AssertionError(f"training ended (exit {process.returncode}) before it reached checkpoint "
                                     f"{wanted!r}:\n{process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"training did not reach checkpoint {wanted!r} within {START_TIMEOUT_S} s")
            time.sleep(0.05)
        os.kill(process.pid, sig)
        _, err = process.communicate(timeout=120)
        return process.returncode, err
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
