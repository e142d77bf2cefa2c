"""RUN_DIR/eval/NAME is replaced whole or not at all (app/report_staging.py staged_report_dir).

A failed evaluation under a used name deleted the earlier, finished one first and left half of its own in its
place (only confusion_matrix.png and misclassified.csv): it is now written into a hidden staging folder and
swapped in only once every file is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
import train
from app import evaluation
from app import episodic_evaluation, report_staging
from colour_folders import write_colour_folder

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLI (make test-fast leaves them out)

KNOWN = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
UNKNOWN = {"yellow": (230, 220, 20), "magenta": (210, 30, 210)}
FEW = ["--episodes", "3", "--ways", "2", "--shots", "1", "--queries", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("staged-eval")
    data = write_colour_folder(root / "data", per_class=8, size=16, colours=KNOWN, seed=0)
    fresh = write_colour_folder(root / "fresh", per_class=4, size=16, colours=KNOWN, seed=7)  # files the run never saw
    unknown = write_colour_folder(root / "unknown", per_class=4, size=16, colours=UNKNOWN, seed=3)
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "2", "--seed", "1",
                       "--refit", "no", "--output", str(run)]) == 0
    return {"run": run, "fresh": fresh, "unknown": unknown}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path: bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(run: Path) -> list[Path]:
    return [*(run / "eval").rglob(".tmp-*"), *(run / "logs").glob(".tmp-*")]


def _fail(*_, **__):
    raise RuntimeError("injected failure midway through the evaluation")


# (extra arguments, module, function to make fail): each late in its mode's writing, after files (and TensorBoard
# events) of the new evaluation were written.
MODES = {
    "plain": ([], evaluation, "explanations_section"),
    "unknown": (["--unknown", "UNKNOWN_DIR"], evaluation, "render_open_set"),
    "episodes": (FEW, episodic_evaluation, "render_fewshot_report"),
}


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_evaluation_leaves_the_earlier_one_as_it_was(trained, mode, monkeypatch, capsys):
    run, fresh = trained["run"], trained["fresh"]
    extra, module, function = MODES[mode]
    extra = [str(trained["unknown"]) if argument == "UNKNOWN_DIR" else argument for argument in extra]
    name = f"kept-{mode}"
    command = [str(run), str(fresh), "--name", name] + ([] if mode == "episodes" else ["--bootstrap", "20"])
    assert evaluate.main(command + extra) == 0
    out_dir, events = run / "eval" / name, run / "logs" / f"eval_{name}"
    before, events_before = _snapshot(out_dir), _snapshot(events)
    assert "metrics.json" in before and "report.md" in before and events_before

    monkeypatch.setattr(module, function, _fail)
    with pytest.raises(RuntimeError, match="injected failure"):  # not a UserError: run_safely lets it through
        evaluate.main(command + extra)
    assert _snapshot(out_dir) == before  # byte-identical, nothing added or removed
    assert _snapshot(events) == events_before  # its TensorBoard events too, without the failed one's
    assert not _leftovers(run)

    # Ctrl-C midway: the same (exit status 130, one ERROR line).
    monkeypatch.setattr(module, function, lambda *_, **__: (_ for _ in ()).throw(KeyboardInterrupt()))
    capsys.readouterr()
    assert evaluate.main(command + extra) == 130
    assert _snapshot(out_dir) == before and _snapshot(events) == events_before and not _leftovers(run)
    monkeypatch.undo()

    # A successful evaluation under the same name replaces it whole: a file only the earlier one had goes.
    (out_dir / "only-in-the-earlier.txt").write_text("earlier")
    capsys.readouterr()
    assert evaluate.main(command + extra) == 0
    assert "Replacing the earlier evaluation in" in capsys.readouterr().err
    after = _snapshot(out_dir)
    assert "only-in-the-earlier.txt" not in after and "metrics.json" in after and "report.md" in after
    assert not set(_snapshot(events).items()) & set(events_before.items())  # the earlier events replaced too
    assert not _leftovers(run)


def test_a_failed_first_evaluation_leaves_nothing(trained, monkeypatch):
    run = trained["run"]
    monkeypatch.setattr(evaluation, "plot_reliability", _fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        evaluate.main([str(run), str(trained["fresh"]), "--name", "never", "--bootstrap", "20"])
    assert not (run / "eval" / "never").exists() and not (run / "logs" / "eval_never").exists()
    assert not _leftovers(run)


# ---------------------------------------------------------------- leftovers of evaluations killed midway

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _evaluation(folder: Path, marker: str, finished: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.md").write_text(marker)
    if finished:
        (folder / "metrics.json").write_text('{"data_dir": "%s"}' % marker)
    return folder


def _events(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1").write_text(marker)
    return folder


def test_leftovers_of_killed_evaluations_are_tidied_keeping_a_finished_evaluation(tmp_path):
    eval_root, logs = tmp_path / "run" / "eval", tmp_path / "run" / "logs"
    dead = _dead_pid()
    # Killed between the two renames: the earlier one set aside, the finished new one not yet in place.
    _evaluation(eval_root / f".tmp-{dead}-swapping" / "swapping", "new")
    _evaluation(eval_root / f".tmp-{dead}-swapping" / "swapping.replaced", "old")
    _events(logs / "eval_swapping", "new events")
    _events(logs / f".tmp-{dead}-eval_swapping", "old events")
    # Killed while writing: the earlier one in place, its events set aside, the new one's partly written.
    _evaluation(eval_root / "writing", "old")
    _evaluation(eval_root / f".tmp-{dead}-writing" / "writing", "new", finished=False)
    _events(logs / "eval_writing", "partial events")
    _events(logs / f".tmp-{dead}-eval_writing", "old events")
    # Killed after the swap, while removing what was set aside.
    _evaluation(eval_root / "done", "new")
    _events(logs / "eval_done", "new events")
    _events(logs / f".tmp-{dead}-eval_done", "old events")
    # A first evaluation killed while writing: nothing to keep.
    _evaluation(eval_root / f".tmp-{dead}-first" / "first", "new", finished=False)
    # An evaluation running now (a live process): left alone.
    live = _evaluation(eval_root / f".tmp-{os.getppid()}-running" / "running", "new", finished=False)

    report_staging._recover_leftovers(eval_root, logs)

    assert (eval_root / "swapping" / "report.md").read_text() == "new"
    assert (logs / "eval_swapping" / "events.out.tfevents.1").read_text() == "new events"
    assert (eval_root / "writing" / "report.md").read_text() == "old"
    assert (logs / "eval_writing" / "events.out.tfevents.1").read_text() == "old events"
    assert (eval_root / "done" / "report.md").read_text() == "new"
    assert (logs / "eval_done" / "events.out.tfevents.1").read_text() == "new events"
    assert not (eval_root / "first").exists()
    assert live.is_dir()
    assert sorted(p.name for p in eval_root.iterdir()) == [f".tmp-{os.getppid()}-running", "done", "swapping",
                                                           "writing"]
    assert not list(logs.glob(".tmp-*"))
