"""A checkpoint's state.json: where training stood when the checkpoint was written, as one type.

The phase runner (app/phases.py) writes a `CheckpointState` after every epoch and at the end
of each phase; a resume reads it back (`Checkpoints.latest()` returns a `ResumePoint`). The
fields every state has are required; the rest default, so states written by earlier
versions still load, and keys this version does not know are kept in `extra`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import UserError


@dataclass
class CheckpointState:
    phase: str  # app/phases.py: head, finetune, meta, refit_head, refit_finetune
    epoch: int  # epochs of this phase completed (1-based count)
    history: list[dict]  # every completed epoch of the run, all phases
    done: bool = False  # the phase ended (its best weights restored): the next phase starts from here
    early_stopping: dict | None = None  # ResumableEarlyStopping.state(): wait, best, best_epoch
    best_weights: str | None = None  # the file (in checkpoints/) holding this phase's best epoch so far
    steps_per_epoch: int | None = None
    epoch_offset: int | None = None  # epochs of earlier phases: fit() counts epochs across the whole run
    step_offset: int | None = None  # optimizer steps of earlier phases (TensorBoard's step axis)
    selection: dict | None = None  # the refit: what the first model left (app/refit.py)
    # time.time() when the checkpoint was written: every TensorBoard event logged after it belongs to work a resume
    # from it does again, and is dropped then (app/tensorboard_logging.drop_events_after). None: an earlier version's.
    logged_until: float | None = None
    elapsed_s: float | None = None  # the run's training time up to this checkpoint, earlier sessions' included
    extra: dict = field(default_factory=dict)  # keys this version does not know: kept, never read

    def to_dict(self) -> dict:
        """The JSON object; defaults are left out, as earlier versions wrote them."""
        written = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name != "extra" and value is not None and not (item.name == "done" and not value):
                written[item.name] = value
        return written | self.extra

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    @classmethod
    def from_dict(cls, data) -> "CheckpointState":
        """The state in `data` (a parsed state.json); ValueError saying what is wrong with it."""
        if problem := _problem(data):
            raise ValueError(problem)
        known = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        return cls(**{key: value for key, value in data.items() if key in known},
                   extra={key: value for key, value in data.items() if key not in known})

    @classmethod
    def read(cls, path: Path) -> "CheckpointState":
        """state.json at `path`; UserError naming the file when it is unreadable or not a state."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UserError(f"{str(path)!r} is missing.") from None
        except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError, from_dict
            raise UserError(f"{str(path)!r} is damaged ({error}).") from None


def _problem(data) -> str | None:
    if not isinstance(data, dict) or not {"phase", "epoch", "history"} <= set(data):
        return "not a checkpoint state"
    if not isinstance(data["phase"], str) or not isinstance(data["epoch"], int) or \
            not isinstance(data["history"], list):
        return (f"phase, epoch and history must be a name, a count and a list. Received: phase={data['phase']!r:.80}, "
                f"epoch={data['epoch']!r:.80}, history of type {type(data['history']).__name__}")
    return None


@dataclass
class ResumePoint:
    """The checkpoint a resumed run continues from."""

    state: CheckpointState
    folder: Path


@dataclass
class TrainingClock:
    """How long a run has trained, over every session of it (a first run and its `--resume`s).

    A session counts from its start; the sessions before it count as recorded by the checkpoint it resumes from
    (`CheckpointState.elapsed_s`, which every checkpoint stamps with `total_s()`), so a kill loses none of the time
    up to a session's last checkpoint. What a killed session did after it is done again, and counted, by the next."""

    started: float = field(default_factory=time.perf_counter)  # this session's start
    earlier_s: float | None = 0.0  # the sessions before this one; None: its checkpoint (an earlier version's) lacks it

    def resume_from(self, state: CheckpointState) -> None:
        self.earlier_s = state.elapsed_s

    def session_s(self) -> float:
        return time.perf_counter() - self.started

    def total_s(self) -> float:
        """This session and the earlier ones (those of unknown time as none)."""
        return (self.earlier_s or 0.0) + self.session_s()
