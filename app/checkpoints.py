"""Checkpoints that survive `kill -9`, and the callbacks that write them.

Layout under RUN_DIR/checkpoints/:
  <phase>-epoch-NNNN/   model.weights.h5, optimizer.npz, state.json (one completed epoch)
  latest.json           which of those folders is the newest complete one
  best.weights.h5       weights of the best validation epoch so far (early stopping)

Every checkpoint folder is written under a temporary name and renamed into place
when complete; `latest.json` and `best.weights.h5` are replaced with os.replace.
A crash at any moment therefore leaves `latest.json` pointing at a complete
checkpoint (the previous one until the new one is in place), and older folders
are deleted only after the pointer moved on.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np

from app import run_dir as rd
from app.errors import UserError

logger = logging.getLogger(__name__)
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest.json"
BEST_WEIGHTS = "best.weights.h5"
MODEL_WEIGHTS = "model.weights.h5"
OPTIMIZER_STATE = "optimizer.npz"
STATE = "state.json"


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.root = Path(run_dir) / CHECKPOINTS_DIR

    def save(self, state: dict, model: keras.Model, optimizer=None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".tmp-{uuid.uuid4().hex}"
        temporary.mkdir()
        model.save_weights(temporary / MODEL_WEIGHTS)
        if optimizer is not None and optimizer.built:
            arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
            np.savez(temporary / OPTIMIZER_STATE, **arrays)
        rd.write_json(temporary / STATE, state)
        final = self.root / f"{state['phase']}-epoch-{state['epoch']:04d}"
        if final.exists():  # left by a run that crashed after this epoch's rename: same epoch, replace it
            shutil.rmtree(final)
        os.rename(temporary, final)
        rd.write_json(self.root / LATEST, {"checkpoint": final.name})
        self._remove_all_but(final.name)
        return final

    def _remove_all_but(self, keep: str) -> None:
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    def save_best(self, model: keras.Model) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".tmp-{uuid.uuid4().hex}.weights.h5"
        model.save_weights(temporary)
        os.replace(temporary, self.root / BEST_WEIGHTS)

    def latest(self) -> tuple[dict, Path] | None:
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        folder = self.root / rd.read_json(pointer)["checkpoint"]
        if not (folder / STATE).is_file():
            raise UserError(f"The checkpoint {str(folder)!r} named by {str(pointer)!r} is missing or incomplete; "
                            "this run cannot be resumed. Start a new run.")
        return rd.read_json(folder / STATE), folder

    def best_weights(self, model: keras.Model) -> list | None:
        """The saved best weights as a list (model keeps its current weights), or None."""
        path = self.root / BEST_WEIGHTS
        if not path.is_file():
            return None
        current = model.get_weights()
        model.load_weights(path)
        best = model.get_weights()
        model.set_weights(current)
        return best

    @staticmethod
    def restore(folder: Path, model: keras.Model, optimizer=None) -> None:
        if optimizer is not None and not optimizer.built:
            # Its slots must exist before values can be assigned; meta learners update a subset.
            optimizer.build(getattr(model, "outer_variables", model.trainable_variables))
        model.load_weights(folder / MODEL_WEIGHTS)
        if optimizer is None or not (folder / OPTIMIZER_STATE).is_file():
            return
        # Keras' weights file may carry optimizer variables too, but only when the model was
        # compiled at save time and loads them only into an identical optimizer; this file is
        # the explicit, checked copy.
        with np.load(folder / OPTIMIZER_STATE, allow_pickle=False) as saved:
            values = [saved[name] for name in sorted(saved.files)]
        if len(values) != len(optimizer.variables):
            raise UserError(f"The optimizer state in {str(folder)!r} does not match this model "
                            f"({len(values)} vs {len(optimizer.variables)} variables); the run cannot be resumed.")
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose progress (best value, epochs waited, best weights) survives a resume."""

    def __init__(self, *args, resume_state: dict | None = None, resume_best_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_state = resume_state
        self._resume_best_weights = resume_best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.wait = self._resume_state["wait"]
            self.best = self._resume_state["best"]
            self.best_epoch = self._resume_state["best_epoch"]
            self.best_weights = self._resume_best_weights

    def state(self) -> dict:
        return {"wait": self.wait, "best": None if self.best is None else float(self.best), "best_epoch": self.best_epoch}


class EpochCheckpoint(keras.callbacks.Callback):
    """After each finite epoch: record its metrics and write a checkpoint (and the best weights).

    Must come after the early-stopping callback in the list, so that its state
    already includes this epoch.
    """

    def __init__(self, checkpoints: Checkpoints, phase: str, history: list[dict], early_stopping: ResumableEarlyStopping,
                 extra_state: dict, epoch_offset: int = 0):
        super().__init__()
        self.checkpoints, self.phase, self.history = checkpoints, phase, history
        self.early_stopping, self.extra_state = early_stopping, extra_state
        self.epoch_offset = epoch_offset  # epochs of earlier phases: fit() counts epochs across the whole run

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        if not all(math.isfinite(v) for v in logs.values()):
            return  # never checkpoint a diverged model: the last good checkpoint stays "latest"
        self.history.append({"epoch": epoch + 1, "phase": self.phase, "phase_epoch": epoch + 1 - self.epoch_offset,
                             **logs})
        if self.early_stopping.best_epoch == epoch:
            self.checkpoints.save_best(self.model)
        state = {"phase": self.phase, "epoch": epoch + 1 - self.epoch_offset, "history": self.history,
                 "early_stopping": self.early_stopping.state(), **self.extra_state}
        self.checkpoints.save(state, self.model, self.model.optimizer)


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where it happened, so the run can say so clearly."""

    def __init__(self):
        super().__init__()
        self.stopped_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True
