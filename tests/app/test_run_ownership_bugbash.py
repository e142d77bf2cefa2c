"""One owner per run directory, while another command works on the same run: a run in training refused by every
other command, and the run directory moved or removed under a command that reads or writes it (one ERROR line,
nothing half-written presented as complete), leftovers of killed evaluations whose PID came back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import evaluate
import export
import predict
import train
from app import run_dir as rd
from app.run_lock import RunLock
from colour_folders import write_colour_folder
from error_lines import one_error_line


def _train(data: Path, run: Path, *extra: str) -> Path:
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--seed", "1", "--output", str(run),
                       *extra]) == 0
    return run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("ownership")
    data = write_colour_folder(base / "data", per_class=8)
    return _train(data, base / "run"), data


def _copy(run: Path, into: Path) -> Path:
    shutil.copytree(run, into, ignore=shutil.ignore_patterns("eval", "export"))
    return into


def _park_at(monkeypatch, module, name: str, action) -> None:
    """`module.name` runs `action()` first, on its first call only."""
    original, done = getattr(module, name), []

    def wrapped(*args, **kwargs):
        if not done:
            done.append(action())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_a_new_run_holds_its_lock_before_its_incomplete_marker_exists(finished, tmp_path, monkeypatch):
    """Two commands started together with one --output: the marker came before the lock, so the second one found it
    with no lock held and was told the folder was "an unfinished run: --resume it" instead of who trains it."""
    import app.training

    _, data = finished
    seen, original = [], rd.create_run_dir

    def create_run_dir(path, typed=True):
        seen.append((rd.lock_holder(Path(path)), (Path(path) / rd.INCOMPLETE_MARKER).exists()))
        return original(path, typed)

    monkeypatch.setattr(app.training.rd, "create_run_dir", create_run_dir)
    _train(data, tmp_path / "new")
    assert seen == [(str(os.getpid()), False)]


def test_every_command_is_refused_on_a_run_another_process_trains(finished, tmp_path, monkeypatch, capsys):
    import app.training

    run, data = finished
    training = _copy(run, tmp_path / "training")
    (training / rd.INCOMPLETE_MARKER).write_text("")
    other = _copy(run, tmp_path / "other")
    image = next((data / "red").iterdir())
    commands = [
        (evaluate.main, [str(training), str(data)], "is being trained right now"),
        (evaluate.main, [str(other), str(data), "--compare", str(training)], "is being trained right now"),
        (predict.main, [str(training), str(image)], "is being trained right now"),
        (export.main, [str(training)], "is being trained right now"),
        (train.main, [str(data), "--backbone", str(training), "--output", str(tmp_path / "b")], "--backbone"),
        (train.main, [str(data), "--backbone", "tiny_image", "--output", str(training)], "is in use"),
    ]
    with RunLock(training):  # what train.py holds (another open file description: flock locks conflict)
        capsys.readouterr()
        for main, argv, fragment in commands:
            assert main(argv) == 2, argv
            one_error_line(capsys.readouterr().err, fragment, f"PID {os.getpid()}")
        # A second --resume was refused only after the data scan and the backbone build (minutes on a big folder).
        monkeypatch.setattr(app.training, "_prepare", lambda config: pytest.fail("prepared before the refusal"))
        assert train.main(["--resume", str(training)]) == 2
        one_error_line(capsys.readouterr().err, "is in use", f"PID {os.getpid()}")
    # Nothing was written into it (no eval/, no export/, no new run's files).
    assert sorted(p.name for p in training.iterdir()) == sorted(
        [p.name for p in run.iterdir() if p.name not in ("eval", "export")] + [rd.INCOMPLETE_MARKER])
    assert not (tmp_path / "b").exists() and not (other / "eval").exists()


def test_a_run_moved_while_it_trains_stops_and_is_not_called_done_at_its_old_path(finished, tmp_path, monkeypatch,
                                                                                capsys):
    import app.phases as phases

    _, data = finished
    run, moved = tmp_path / "run", tmp_path / "moved"
    original = phases.EpochSummary.on_train_batch_end

    def move_once(self, batch, logs=None):
        if run.is_dir() and not moved.exists():
            os.rename(run, moved)
        return original(self, batch, logs)

    monkeypatch.setattr(phases.EpochSummary, "on_train_batch_end", move_once)
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--output", str(run)]) == 2
    one_error_line(capsys.readouterr().err, "was moved, renamed or removed while this process trained it",
                   "--resume NEW_PATH")
    # Before: the next checkpoint made the old path again, and a run without config.json, manifest.json or INCOMPLETE
    # was written there and called "Done" (exit 0), while the moved folder stayed INCOMPLETE.
    for name in (rd.MODEL_FILE, rd.METADATA_FILE, "checkpoints"):
        assert not (run / name).exists(), name
    with pytest.raises(rd.UserError):
        rd.require_complete_run(run)
    assert (moved / rd.INCOMPLETE_MARKER).is_file() and (moved / rd.CONFIG_FILE).is_file()
    assert rd.lock_holder(moved) is None  # released: the moved run can be continued where it is
    monkeypatch.setattr(phases.EpochSummary, "on_train_batch_end", original)
    assert train.main(["--resume", str(moved)]) == 0
    rd.require_complete_run(moved)


def test_ctrl_c_leaves_the_run_incomplete_and_unlocked(finished, tmp_path, monkeypatch, capsys):
    import app.phases as phases

    _, data = finished
    run = tmp_path / "run"

    def interrupt(self, batch, logs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(phases.EpochSummary, "on_train_batch_end", interrupt)
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--output", str(run)]) == 130
    one_error_line(capsys.readouterr().err, "Interrupted", "stays INCOMPLETE", "--resume")
    assert (run / rd.INCOMPLETE_MARKER).is_file() and not (run / rd.MODEL_FILE).exists()
    assert rd.lock_holder(run) is None
    assert evaluate.main([str(run), str(data)]) == 2  # not "being trained right now": nobody holds it
    one_error_line(capsys.readouterr().err, "is an unfinished run (training did not complete)", "--resume")


def _moved_away(run: Path, moved: Path):
    return lambda: os.rename(run, moved)


@pytest.mark.parametrize("where", ["plot_confusion_matrix", "classification_metrics", "choose_evaluation_set"])
def test_evaluate_of_a_run_moved_away_meanwhile_is_one_error_line_and_writes_nothing_at_the_old_path(
        finished, tmp_path, monkeypatch, capsys, where):
    import app.evaluation

    run, data = finished
    copy, moved = _copy(run, tmp_path / "run"), tmp_path / "moved"
    _park_at(monkeypatch, app.evaluation, where, _moved_away(copy, moved))
    capsys.readouterr()
    # Before: a FileNotFoundError traceback (while writing the report), a report written whole at the old path with
    # nothing else there (moved before the report), or "manifest.json is missing. Train the run again".
    assert evaluate.main([str(copy), str(data), "--name", "n"]) == 2
    one_error_line(capsys.readouterr().err, f"{str(copy)!r} is gone", "moved, renamed or removed")
    assert not copy.exists()
    monkeypatch.undo()
    assert evaluate.main([str(moved), str(data), "--name", "n"]) == 0  # and it tidies what the failed one left
    assert sorted(p.name for p in (moved / "eval").iterdir()) == ["n"]


def test_predict_and_export_of_a_run_moved_away_meanwhile_do_not_drop_its_unknown_class_detector(
        finished, tmp_path, monkeypatch, capsys):
    import app.exporting
    import app.prediction

    run, data = finished
    image = next((data / "red").iterdir())
    for module, main, argv in ((app.prediction, predict.main, [str(image)]), (app.exporting, export.main, [])):
        copy, moved = _copy(run, tmp_path / "run"), tmp_path / "moved"
        original = module.load_run

        def load_then_move(path, original=original, copy=copy, moved=moved):
            loaded = original(path)
            os.rename(copy, moved)
            return loaded

        monkeypatch.setattr(module, "load_run", load_then_move)
        capsys.readouterr()
        # Before: "has no unknown-class detector (trained by an older metatune): no rejection", and predictions (or a
        # SavedModel, under the old path made again) without the rejection the run was trained with.
        assert main([str(copy), *argv]) == 2
        captured = capsys.readouterr()
        one_error_line(captured.err, f"{str(copy)!r} is gone")
        assert "older metatune" not in captured.err and captured.out == ""
        assert not copy.exists()
        monkeypatch.undo()
        shutil.rmtree(moved)


def _staged_evaluation(eval_root: Path, pid: int, name: str, content: str) -> Path:
    """What an evaluation killed between its two renames leaves: the earlier report set aside, the new one gone."""
    aside = eval_root / f".tmp-{pid}-{name}" / f"{name}.replaced"
    aside.mkdir(parents=True)
    (aside / "metrics.json").write_text(json.dumps({"data_dir": content}))
    return aside


def test_a_named_evaluation_another_process_writes_is_refused_before_the_prediction_pass(finished, tmp_path,
                                                                                          monkeypatch, capsys):
    """The refusal came once every file was predicted (minutes on a large test folder), then was thrown away."""
    from app.run_metadata import LoadedRun

    run = _copy(finished[0], tmp_path / "run")
    writer = subprocess.Popen(["sleep", "30"])  # started before its staging folder, as a live evaluation is
    try:
        _staged_evaluation(run / "eval", writer.pid, "mine", "earlier")
        monkeypatch.setattr(LoadedRun, "predict_examples", lambda *a, **k: pytest.fail("predicted before refusing"))
        assert evaluate.main([str(run), str(finished[1]), "--name", "mine"]) == 2
        one_error_line(capsys.readouterr().err, f"Another evaluation (PID {writer.pid}) is writing")
    finally:
        writer.kill()
        writer.wait()


def test_a_killed_evaluations_leftover_under_a_reused_pid_is_tidied_not_taken_for_a_live_one(tmp_path, monkeypatch):
    from app import report_staging
    from data import atomic_write

    run = tmp_path / "run"
    (run / rd.LOGS_DIR).mkdir(parents=True)
    eval_root = run / "eval"
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        _staged_evaluation(eval_root, unrelated.pid, "n", "earlier")
        # A process that may be its writer: a live evaluation, refused as before.
        with pytest.raises(rd.UserError, match=f"Another evaluation \\(PID {unrelated.pid}\\) is writing"):
            with report_staging.staged_report_dir(eval_root / "n", run):
                pass
        # The same leftover, seen 30 s later than the process under its number started: that process came after it
        # (a reused PID), so it is a killed evaluation's. Before, "Another evaluation (PID N) is writing" for as long
        # as the unrelated process ran.
        later = time.time() + 30
        monkeypatch.setattr(atomic_write, "time", SimpleNamespace(time=lambda: later))
        with report_staging.staged_report_dir(eval_root / "n", run) as staging:
            (staging / "metrics.json").write_text(json.dumps({"data_dir": "new"}))
        assert sorted(p.name for p in eval_root.iterdir()) == ["n"]
        assert json.loads((eval_root / "n" / "metrics.json").read_text())["data_dir"] == "new"
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_leftover_under_this_process_own_pid_from_before_it_started_is_recovered_not_deleted(tmp_path,
                                                                                              monkeypatch):
    """A container restarted runs its command under the same small PID: the killed evaluation's staging folder was
    taken for this process's own and deleted, the earlier report it had set aside with it."""
    from app import report_staging
    from data import atomic_write

    run = tmp_path / "run"
    (run / rd.LOGS_DIR).mkdir(parents=True)
    eval_root = run / "eval"
    _staged_evaluation(eval_root, os.getpid(), "n", "earlier")
    later = time.time() + 10 ** 6  # this process started long after the leftover was written
    monkeypatch.setattr(atomic_write, "time", SimpleNamespace(time=lambda: later))
    with pytest.raises(RuntimeError):
        with report_staging.staged_report_dir(eval_root / "n", run):
            raise RuntimeError("this evaluation fails")
    assert sorted(p.name for p in eval_root.iterdir()) == ["n"]
    assert json.loads((eval_root / "n" / "metrics.json").read_text())["data_dir"] == "earlier"
