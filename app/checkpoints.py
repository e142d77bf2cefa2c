"""Checkpoints that survive `kill -9` and full disks, and the callbacks that write them.

Layout under RUN_DIR/checkpoints/:
  NNNNNN-<phase>-epoch-EEEE/  model.weights.npz, optimizer.npz, state.json: one completed epoch
  NNNNNN-<phase>-end/         the same at a phase's end (best weights restored)
  <phase>-best-epoch-EEEE.weights.npz   weights of that phase's best validation epoch so far;
                              a checkpoint's state.json names the one it goes with
  latest.json                 {"checkpoint": newest folder, "previous": the one before}
NNNNNN is a sequence number: folder names never repeat, so nothing is ever replaced in place.

The weights files hold only the weights training can change: every weight except those of
layers frozen (`trainable=False`) when the file is written. A resumed run rebuilds the same
backbone from the same weights before restoring, so the frozen ones are already in place, and
each file carries a digest of them that the restore checks. Why: a frozen text backbone is most
of the model (all-MiniLM-L6-v2: 22.7M weights, 3.6M trainable with `--unfreeze 2`); writing
all of it after every epoch took 0.3–0.6 s (twice when the epoch was the best so far), a
quarter of a 2 s fine-tuning epoch; the trainable part takes 0.02 s.

Why a crash at any moment leaves a complete checkpoint to resume from (tests/test_fault_injection.py
kills a run after every write and fails every write with ENOSPC to prove it):
- a checkpoint folder is written under a temporary name and renamed into place when complete;
  `latest.json` and the best-weights files are replaced atomically (data/atomic_write.py);
- `latest.json` moves to the new folder before anything old is deleted, and the previous folder
  (with the best-weights file its state names) is kept, so a damaged newest checkpoint falls back
  to the one before;
- `latest()` checks every file of a checkpoint (JSON parses, archive CRCs) before choosing it,
  and takes the newest complete one, whatever `latest.json` says (it may name the one before, when
  the process died between the rename and the pointer update).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from app import run_dir as rd
from app.checkpoint_state import CheckpointState, ResumePoint, TrainingClock
from app.errors import UserError
from app.run_lock import require_still_held
from data.atomic_write import boundary, write_atomically
from models.layer_walk import flat_layers

logger = logging.getLogger(__name__)
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest.json"
MODEL_WEIGHTS = "model.weights.npz"
OPTIMIZER_STATE = "optimizer.npz"
STATE = "state.json"
KEPT_CHECKPOINTS = 2  # the newest and an intact one before it, for falling back
_FOLDER = re.compile(r"^(\d{6})-(.+)-(epoch-\d{4}|end)$")
_BEST = re.compile(r"^.+-best-epoch-\d{4}\.weights\.npz$")


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
    def __init__(self, run_dir: Path, clock: TrainingClock | None = None):
        self.root = Path(run_dir) / CHECKPOINTS_DIR
        self._weights = _WeightsFile()
        self.clock = clock  # the run's training time, recorded in every checkpoint (None: not recorded)

    def _folders(self) -> list[Path]:
        """Complete checkpoint folders (renamed into place), newest first."""
        if not self.root.is_dir():
            return []
        found = [entry for entry in self.root.iterdir() if entry.is_dir() and _FOLDER.match(entry.name)]
        return sorted(found, key=lambda entry: entry.name, reverse=True)

    def _next_name(self, state: CheckpointState) -> str:
        folders = self._folders()
        number = int(_FOLDER.match(folders[0].name).group(1)) + 1 if folders else 1
        stage = "end" if state.done else f"epoch-{state.epoch:04d}"
        return f"{number:06d}-{state.phase}-{stage}"

    def save(self, state: CheckpointState, model: keras.Model, optimizer=None) -> Path:
        # Stamped here, the one place every checkpoint goes through: the callbacks that log an epoch to TensorBoard
        # flushed it before (app/phases.py lists this callback last), so what comes after is not in this checkpoint.
        state = dataclasses.replace(state, logged_until=time.time(),
                                    elapsed_s=self.clock.total_s() if self.clock else state.elapsed_s)
        require_still_held(self.root.parent)  # a run directory moved away: mkdir made its old path again
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / self._next_name(state)
        previous = self._folders()[:1]

        def write_folder(temporary: Path) -> None:
            temporary.mkdir()
            self._weights.save(model, temporary / MODEL_WEIGHTS)
            if optimizer is not None and optimizer.built:
                arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
                with open(temporary / OPTIMIZER_STATE, "wb") as handle:
                    np.savez(handle, **arrays)
            (temporary / STATE).write_text(state.to_json(), encoding="utf-8")

        write_atomically(final, write_folder, label=f"checkpoint {final.name}")
        rd.write_json(self.root / LATEST, {"checkpoint": final.name,
                                           "previous": previous[0].name if previous else None})
        self._remove_old()
        return final

    def _remove_old(self) -> None:
        """Delete what neither the newest checkpoint nor the newest intact one before it needs
        (older folders, their best weights, temporary files a killed process left), only after
        `latest.json` moved on. "Intact": after a resume that fell back past a damaged checkpoint,
        the damaged one is not the one to keep for the next fallback."""
        newest, *older = self._folders()
        kept = [newest] + [folder for folder in older if self._problem(folder) is None][:KEPT_CHECKPOINTS - 1]
        needed = {folder.name for folder in kept}
        for folder in kept:
            try:
                needed.add(CheckpointState.read(folder / STATE).best_weights)
            except UserError:
                pass  # a damaged state names nothing: its best weights are not needed either
        removed = []
        for entry in self.root.iterdir():
            if entry.name in needed:
                continue
            if entry.is_dir() and (_FOLDER.match(entry.name) or entry.name.startswith(".")):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
            elif entry.is_file() and (_BEST.match(entry.name) or entry.name.startswith(".")):
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        if removed:
            boundary("remove old checkpoints", self.root)

    def save_best(self, model: keras.Model, phase: str, epoch: int) -> str:
        """Write the best weights of `phase` so far (its epoch `epoch`); returns the file's name."""
        require_still_held(self.root.parent)
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{phase}-best-epoch-{epoch:04d}.weights.npz"
        write_atomically(self.root / name, lambda temporary: self._weights.save(model, temporary))
        return name

    def _problem(self, folder: Path) -> tuple[str, str] | None:
        """(damaged file, what is wrong with it) for the first unusable file of a checkpoint, or None."""
        try:
            data = json.loads((folder / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return str(folder / STATE), "missing"
        except (OSError, ValueError) as error:
            return str(folder / STATE), f"unreadable ({error})"
        try:
            state = CheckpointState.from_dict(data)
        except ValueError as error:
            return str(folder / STATE), str(error)
        files = [folder / MODEL_WEIGHTS]
        if (folder / OPTIMIZER_STATE).exists():  # phase-end checkpoints carry no optimizer state
            files.append(folder / OPTIMIZER_STATE)
        if state.best_weights:
            files.append(self.root / state.best_weights)
        for path in files:
            if problem := rd.archive_problem(path):
                return str(path), problem
        return None

    def latest(self) -> ResumePoint | None:
        """The state and folder of the newest checkpoint whose every file is intact; None when there is
        none yet. A damaged newest one is reported and the one before used; UserError when every
        checkpoint is damaged."""
        damaged = []
        for folder in self._folders():
            problem = self._problem(folder)
            if problem is None:
                if damaged:
                    logger.warning("Skipping damaged checkpoint(s): %s. Resuming from %s instead.",
                                   "; ".join(damaged), folder.name)
                return ResumePoint(CheckpointState.read(folder / STATE), folder)
            damaged.append(f"{problem[0]} is {problem[1]}")
        if damaged:
            raise UserError(f"Every checkpoint of this run is damaged: {'; '.join(damaged)}. The run cannot be "
                            f"resumed. Start a new run with the same settings: python train.py --config "
                            f"{rd.shell_path(self.root.parent / rd.CONFIG_FILE)} --output NEW_RUN_DIR")
        return None

    def best_weights(self, model: keras.Model, state: CheckpointState) -> list | None:
        """The best weights `state` goes with, as a list (model keeps its current weights), or None."""
        return None if not state.best_weights else self._weights.load(model, self.root / state.best_weights)

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
        boundary("remove checkpoints", self.root)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose progress (best value, epochs waited, best weights) survives a resume."""

    def __init__(self, *args, resume_state: dict | None = None, resume_best_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_state = resume_state
        self._resume_best_weights = resume_best_weights
        self.best_epoch = 0
        self._restore()  # already here: a phase resumed after its last epoch never calls fit()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._restore()

    def _restore(self) -> None:
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
                 extra_state: dict, epoch_offset: int = 0, best_weights: str | None = None):
        super().__init__()
        self.checkpoints, self.phase, self.history = checkpoints, phase, history
        self.early_stopping, self.extra_state = early_stopping, extra_state
        self.epoch_offset = epoch_offset  # epochs of earlier phases: fit() counts epochs across the whole run
        self.best_weights = best_weights  # the file holding this phase's best epoch so far

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        if not all(math.isfinite(v) for v in logs.values()):
            return  # never checkpoint a diverged model: the last good checkpoint stays "latest"
        self.history.append({"epoch": epoch + 1, "phase": self.phase, "phase_epoch": epoch + 1 - self.epoch_offset,
                             **logs})
        if self.early_stopping.best_epoch == epoch:
            self.best_weights = self.checkpoints.save_best(self.model, self.phase, epoch + 1 - self.epoch_offset)
        state = CheckpointState(self.phase, epoch + 1 - self.epoch_offset, self.history,
                                early_stopping=self.early_stopping.state(), best_weights=self.best_weights,
                                **self.extra_state)
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
