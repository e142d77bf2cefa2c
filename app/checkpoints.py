"""Checkpoints that survive `kill -9`, and the callbacks that write them.

Layout under RUN_DIR/checkpoints/:
  <phase>-epoch-NNNN/   model.weights.npz, optimizer.npz, state.json (one completed epoch)
  latest.json           which of those folders is the newest complete one
  best.weights.npz      weights of the best validation epoch so far (early stopping)

The weights files hold only the weights training can change: every weight except those of
layers frozen (`trainable=False`) when the file is written. A resumed run rebuilds the same
backbone from the same weights before restoring, so the frozen ones are already in place, and
each file carries a digest of them that the restore checks. Why: a frozen text backbone is most
of the model (all-MiniLM-L6-v2: 22.7M weights, 3.6M trainable with `--unfreeze 2`); writing
all of it after every epoch took 0.3–0.6 s (twice when the epoch was the best so far), a
quarter of a 2 s fine-tuning epoch; the trainable part takes 0.02 s.

Every checkpoint folder is written under a temporary name and renamed into place
when complete; `latest.json` and `best.weights.npz` are replaced with os.replace.
A crash at any moment therefore leaves `latest.json` pointing at a complete
checkpoint (the previous one until the new one is in place), and older folders
are deleted only after the pointer moved on.
"""

from __future__ import annotations

import hashlib
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
from models.layer_walk import flat_layers

logger = logging.getLogger(__name__)
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest.json"
BEST_WEIGHTS = "best.weights.npz"
MODEL_WEIGHTS = "model.weights.npz"
OPTIMIZER_STATE = "optimizer.npz"
STATE = "state.json"


def frozen_weight_indices(model: keras.Model) -> list[int]:
    """Positions in `model.weights` of the weights no training step can change: those of a layer
    with `trainable=False` (Keras runs frozen BatchNormalization in inference mode, so even
    its moving statistics stay put)."""
    frozen = {id(w) for layer in flat_layers(model) if not layer.trainable for w in layer.weights}
    return [i for i, w in enumerate(model.weights) if id(w) in frozen]


class _WeightsFile:
    """The trainable part of a model's weights, and a digest of the frozen rest."""

    def __init__(self):
        self._frozen_digests: dict[tuple, str] = {}  # frozen weights never change: hash them once

    def _frozen_digest(self, model: keras.Model, frozen: list[int]) -> str:
        key = (id(model), tuple(frozen))
        if key not in self._frozen_digests:
            digest = hashlib.sha256()
            for index in frozen:
                digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(model.weights[index])).tobytes())
            self._frozen_digests[key] = digest.hexdigest()
        return self._frozen_digests[key]

    def save(self, model: keras.Model, path: Path) -> None:
        frozen = frozen_weight_indices(model)
        kept = sorted(set(range(len(model.weights))) - set(frozen))
        arrays = {f"w{i:05d}": keras.ops.convert_to_numpy(model.weights[i]) for i in kept}
        with open(path, "wb") as handle:  # np.savez on a path would append ".npz" to a temporary name
            np.savez(handle, num_weights=len(model.weights), frozen=np.asarray(frozen, np.int64),
                     frozen_sha256=self._frozen_digest(model, frozen), **arrays)

    def load(self, model: keras.Model, path: Path) -> list:
        """All of `model`'s weight values with the file's applied (the model itself is left as is)."""
        with np.load(path, allow_pickle=False) as saved:
            if int(saved["num_weights"]) != len(model.weights):
                raise UserError(f"The checkpoint {str(path)!r} holds weights of another model "
                                f"({int(saved['num_weights'])} weights, this one has {len(model.weights)}); "
                                "the run cannot be resumed.")
            frozen = saved["frozen"].tolist()
            if self._frozen_digest(model, frozen) != str(saved["frozen_sha256"]):
                raise UserError(f"The frozen weights of this model differ from those the checkpoint {str(path)!r} "
                                "was written with (were the backbone's weights file or preset changed since?); "
                                "the run cannot be resumed. Start a new run.")
            values = model.get_weights()
            for name in saved.files:
                if name.startswith("w"):
                    index = int(name[1:])
                    if saved[name].shape != values[index].shape:
                        raise UserError(f"The checkpoint {str(path)!r} does not match this model (weight {index}: "
                                        f"{saved[name].shape} vs {values[index].shape}); the run cannot be resumed.")
                    values[index] = saved[name]
        return values


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.root = Path(run_dir) / CHECKPOINTS_DIR
        self._weights = _WeightsFile()

    def save(self, state: dict, model: keras.Model, optimizer=None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".tmp-{uuid.uuid4().hex}"
        temporary.mkdir()
        self._weights.save(model, temporary / MODEL_WEIGHTS)
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
        temporary = self.root / f".tmp-{uuid.uuid4().hex}.weights.npz"
        self._weights.save(model, temporary)
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
        return self._weights.load(model, path)

    def restore(self, folder: Path, model: keras.Model, optimizer=None) -> None:
        if optimizer is not None and not optimizer.built:
            # Its slots must exist before values can be assigned; meta learners update a subset.
            optimizer.build(getattr(model, "outer_variables", model.trainable_variables))
        model.set_weights(self._weights.load(model, folder / MODEL_WEIGHTS))
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
