"""Regression tests for the crash-safety defects of issue 22 (resume, lock, checkpoints, damaged state).

A crash is simulated in-process by raising `Crash` (a BaseException: nothing in metatune catches
it, so no clean-up code runs, as with `kill -9`) at the exact point a defect needed; the real
`kill -9` at every write boundary is tests/test_fault_injection.py.
"""

from __future__ import annotations

import pytest

import train
from app import run_dir as rd
from app.checkpoint_state import CheckpointState
from app.checkpoints import Checkpoints
from app.errors import UserError
from app.run_lock import RunLock
from colour_folders import write_colour_folder
from models.task_model import load_task_model
from tensorboard_events import scalar_points

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

OPTIONS = ["--backbone", "tiny_image", "--strategy", "finetune", "--epochs", "2", "--finetune-epochs", "1",
           "--refit", "no", "--image-size", "16", "--batch-size", "8", "--seed", "3", "--patience", "5"]


class Crash(BaseException):
    """Stands for the process dying here."""


@pytest.fixture
def tiny_folder(tmp_path):
    return write_colour_folder(tmp_path / "data")


def _crash_when(monkeypatch, predicate, method: str = "save"):
    """Make Checkpoints.<method> die (before doing anything) the first time `predicate(args)` holds."""
    real = getattr(Checkpoints, method)

    def patched(self, *args, **kwargs):
        if predicate(*args):
            raise Crash()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Checkpoints, method, patched)


def _resume_and_check(run):
    earlier = Checkpoints(run).latest().state.elapsed_s  # the killed session's time, up to its last checkpoint
    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, len(history) + 1))
    assert [e["phase"] for e in history].count("finetune") == 1
    load_task_model(str(run / rd.MODEL_FILE))
    # The run's training time is every session's, not only the resumed one's (it was the resumed one's alone).
    times = rd.read_json(run / rd.METADATA_FILE)["metrics"]
    assert earlier > 0 and times["wall_time_earlier_sessions_s"] == pytest.approx(earlier, abs=0.01)
    assert times["wall_time_s"] == pytest.approx(earlier + times["wall_time_this_session_s"], abs=0.02)


@pytest.mark.parametrize("phase", ["head", "finetune"])
def test_resume_after_the_last_epoch_checkpoint_and_before_the_phase_end(tiny_folder, tmp_path, monkeypatch, phase):
    """Defect 1: fit() is skipped when every epoch is done, so the early-stopping state must be
    restored without it (it was not: AttributeError on best_epoch, forever)."""
    run = tmp_path / "run"
    _crash_when(monkeypatch, lambda state, *rest: state.done and state.phase == phase)
    with pytest.raises(Crash):
        train.main([str(tiny_folder), "--output", str(run), *OPTIONS])
    monkeypatch.undo()
    state = Checkpoints(run).latest().state
    assert state.phase == phase and not state.done
    # data_report.json lost (head) or damaged (finetune) while the run was stopped: the resume writes it again,
    # the same report (it was marked complete with none, or with the damaged one).
    written = rd.read_json(run / rd.DATA_REPORT_FILE)
    assert written["label_issues"] is not None
    if phase == "head":
        (run / rd.DATA_REPORT_FILE).unlink()
    else:
        (run / rd.DATA_REPORT_FILE).write_text('{"label_issues": [')
    _resume_and_check(run)
    assert rd.read_json(run / rd.DATA_REPORT_FILE) == written


def test_resume_between_the_first_best_weights_of_a_phase_and_its_first_checkpoint(tiny_folder, tmp_path, monkeypatch,
                                                                                     capsys):
    """Defect 3: phase 2's best weights replaced phase 1's before any phase-2 checkpoint named
    them; the resume then refused forever ("holds weights of another model").
    And the crash comes after the epoch's TensorBoard events were flushed, before its checkpoint: the resume
    trains that epoch again, and TensorBoard showed it twice at the same step (the killed run's and the
    resumed run's points); it must show each epoch and each optimizer step once, the resumed run's."""
    run = tmp_path / "run"
    _crash_when(monkeypatch, lambda state, *rest: state.phase == "finetune" and not state.done)
    with pytest.raises(Crash):
        train.main([str(tiny_folder), "--output", str(run), *OPTIONS])
    monkeypatch.undo()
    assert list((run / "checkpoints").glob("finetune-best-*"))  # written, named by no checkpoint yet
    killed_epochs = [step for step, _ in scalar_points(run, "train", "epoch_loss")]
    capsys.readouterr()
    _resume_and_check(run)
    assert " s in all, " in capsys.readouterr().out  # train.py's last lines say the total, this session's beside it
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    assert len(killed_epochs) == len(history)  # the finetune epoch was logged before the crash, and is again
    for subdir, tag in [("train", "epoch_loss"), ("train", "phase"), ("validation", "epoch_accuracy")]:
        points = scalar_points(run, subdir, tag)
        assert [step for step, _ in points] == list(range(len(history))), (subdir, tag)
    losses = [value for _, value in scalar_points(run, "train", "epoch_loss")]
    assert losses == pytest.approx([entry["loss"] for entry in history])  # the points history.json holds
    steps = [step for step, _ in scalar_points(run, "train", "learning_rate")]
    assert steps == list(range(1, len(steps) + 1))  # every optimizer step once, those before the crash kept


def test_a_locked_run_is_refused_with_the_holders_pid(tiny_folder, tmp_path, monkeypatch, capsys):
    """Defect 2: a second process on the same run stops with one ERROR line naming the holder."""
    import os

    run = tmp_path / "run"
    _crash_when(monkeypatch, lambda state, *rest: state.phase == "finetune")
    with pytest.raises(Crash):
        train.main([str(tiny_folder), "--output", str(run), *OPTIONS])
    monkeypatch.undo()
    with RunLock(run):  # flock locks conflict between open files, even in one process
        assert train.main(["--resume", str(run)]) == 2
        error = capsys.readouterr().err
        assert f"PID {os.getpid()}" in error and "in use by another metatune process" in error
        assert "Traceback" not in error
        # A new run given the held folder as --output names the holder too (it said "not empty").
        assert train.main([str(tiny_folder), "--output", str(run), *OPTIONS]) == 2
        assert f"in use by another metatune process (PID {os.getpid()})" in capsys.readouterr().err
    assert (run / rd.INCOMPLETE_MARKER).exists()
    _resume_and_check(run)  # the lock went with its holder


def test_a_model_that_does_not_read_back_never_replaces_model_keras(tmp_path):
    """Defect 2's other half: a corrupt archive never becomes model.keras, nor the run complete."""
    import keras

    class Garbling(keras.Sequential):
        def save(self, path, *args, **kwargs):
            super().save(path, *args, **kwargs)
            data = bytearray(open(path, "rb").read())
            data[len(data) // 2] ^= 0xFF
            open(path, "wb").write(bytes(data))

    run = rd.create_run_dir(tmp_path / "run")
    model = Garbling([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(UserError, match="does not read back"):
        rd.save_model(model, run)
    assert sorted(p.name for p in run.iterdir()) == [rd.INCOMPLETE_MARKER]  # no model, no temporary


def _tiny_model():
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])


def test_checkpoint_replacement_always_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    """Defect 4: the phase-end checkpoint (same phase and epoch as the last epoch's) used to
    delete the old folder before renaming the new one into place. Names never repeat now, and
    nothing old is deleted before latest.json moved on."""
    model = _tiny_model()
    checkpoints = Checkpoints(tmp_path)
    first = checkpoints.save(CheckpointState("head", 3, []), model)
    real = rd.write_json
    monkeypatch.setattr(rd, "write_json", lambda path, payload: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):  # dies between renaming the phase-end folder and moving latest.json
        checkpoints.save(CheckpointState("head", 3, [], done=True), model)
    monkeypatch.setattr(rd, "write_json", real)
    assert first.is_dir()  # the old one is still there
    resume = Checkpoints(tmp_path).latest()  # the new one is complete: it is used
    assert resume.state.done and resume.folder != first and resume.folder.name.endswith("head-end")


def test_a_damaged_newest_checkpoint_falls_back_and_all_damaged_is_an_error(tmp_path, caplog):
    """Defect 5: truncated or garbled checkpoint files gave raw BadZipFile / JSONDecodeError."""
    model = _tiny_model()
    checkpoints = Checkpoints(tmp_path)
    older = checkpoints.save(CheckpointState("head", 1, [{"epoch": 1}]), model)
    newer = checkpoints.save(CheckpointState("head", 2, [{"epoch": 1}, {"epoch": 2}]), model)
    weights = newer / "model.weights.npz"
    weights.write_bytes(weights.read_bytes()[:40])
    resume = checkpoints.latest()
    assert resume.folder == older and resume.state.epoch == 1
    assert "model.weights.npz" in caplog.text and "damaged" in caplog.text
    (older / "state.json").write_text("{not json")
    with pytest.raises(UserError, match=r"(?s)Every checkpoint.*model\.weights\.npz.*state\.json.*--config"):
        checkpoints.latest()
    (tmp_path / "checkpoints" / "latest.json").write_text("garbage")  # never needed to choose
    with pytest.raises(UserError, match="Every checkpoint"):
        checkpoints.latest()


def test_after_a_fallback_the_next_checkpoint_keeps_the_intact_one_not_the_damaged_one(tmp_path):
    model = _tiny_model()
    checkpoints = Checkpoints(tmp_path)
    intact = checkpoints.save(CheckpointState("head", 1, []), model)
    damaged = checkpoints.save(CheckpointState("head", 2, []), model)
    (damaged / "state.json").write_text("{")
    assert checkpoints.latest().folder == intact  # the resume falls back ...
    newest = checkpoints.save(CheckpointState("head", 2, []), model)  # ... and trains on
    assert sorted(p.name for p in checkpoints.root.iterdir() if p.is_dir()) == [intact.name, newest.name]
