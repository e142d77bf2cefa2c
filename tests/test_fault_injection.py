"""Crash safety, proven by injecting every fault at every point (data/atomic_write.py, METATUNE_FAULT).

A small finetune run (tiny backbone, head then backbone phase) is first run once to enumerate
its write boundaries: every atomic write, checkpoint rename, deletion of old checkpoints and the
removal of INCOMPLETE. Then, for each boundary N:
- kill@N: the run SIGKILLs itself right after boundary N; `train.py --resume` must finish it
  with a continuous history and a model that loads, or (before config.json exists, or after the
  run was marked complete) refuse with one ERROR line;
- enospc@N (the first write of each kind: each run file, each cache, best weights, an epoch's and a
  phase's last checkpoint, the pointer): write N fails with "No space left on device": one ERROR
  line naming the file (a cache write only warns and the run goes on), INCOMPLETE kept, no
  temporary file left anywhere, and exactly the files kill@(N-1) leaves, whose resume the kill
  test proves (so the suite does not pay for the same resume twice).
Then every file of an interrupted run, truncated or garbled, one at a time: the resume falls
back to the previous checkpoint and finishes, or refuses with an ERROR line naming the file.
And two resumes of one interrupted run at once: one finishes it, the other stops with one ERROR
line. Nowhere a traceback, and never a run marked complete whose model does not load.

The runs go through tests/fault_runner.py (forked children of one process that imported
TensorFlow once, running Keras' steps eagerly: where files are written does not depend on it), two at a time.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import run_dir as rd
from app.checkpoints import CHECKPOINTS_DIR
from app.errors import UserError
from colour_folders import write_colour_folder
from data.atomic_write import FAULT_LOG_VARIABLE, FAULT_VARIABLE
from models.task_model import load_task_model
from tensorboard_events import scalar_points, tensor_steps

pytestmark = pytest.mark.slow
RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
# One epoch per phase: a second epoch would only repeat the first one's boundaries (best weights, checkpoint,
# pointer); each kind of boundary is still reached with and without an older checkpoint beside it.
TRAIN_OPTIONS = ["--backbone", "tiny_image", "--strategy", "finetune", "--epochs", "1", "--finetune-epochs", "1",
                 "--refit", "no", "--image-size", "16", "--batch-size", "8", "--seed", "3"]
CACHE_LABELS = {"feature cache", "data-doctor cache", "weight cache"}
# Boundaries with no write of their own: a full disk cannot fail them (data/atomic_write.py's enospc
# completes them as usual), so enospc there would repeat the reference run; it is not run.
NO_WRITE_PREFIXES = ("remove", "mark complete")


def write_kind(label: str) -> str:
    """What a write boundary writes, whatever its phase and number: a later write of the same kind goes
    through the same code with a full disk (the pointer's fourth rename is its first), so enospc runs the
    first write of each kind only (two thirds of the runs: about a minute of CI time less)."""
    return re.sub(r"\b(head|finetune)\b", "PHASE", re.sub(r"\d+", "N", label))


def disk_full_cases(boundaries: list[str]) -> list[int]:
    """The boundary numbers enospc runs at: the first write of each kind."""
    first: dict[str, int] = {}
    for number, label in enumerate(boundaries, start=1):
        if not label.startswith(NO_WRITE_PREFIXES):
            first.setdefault(write_kind(label), number)
    return sorted(first.values())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_colour_folder(root / "data")
    return root


def _run(workspace: Path, name: str, cases: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Run the cases (name -> steps) through the fork runner; name -> per-step results."""
    names = list(cases)
    (workspace / f"{name}.cases.json").write_text(json.dumps([cases[n] for n in names]))
    subprocess.run([sys.executable, str(RUNNER), str(workspace / f"{name}.cases.json"),
                    str(workspace / f"{name}.results.json")], check=True, timeout=900)
    return dict(zip(names, json.loads((workspace / f"{name}.results.json").read_text())))


def _train_step(workspace: Path, case: str, env: dict) -> dict:
    folder = workspace / case
    folder.mkdir()
    return {"argv": [str(workspace / "data"), "--output", str(folder / "run"), *TRAIN_OPTIONS],
            "env": {"METATUNE_CACHE_DIR": str(folder / "cache"), **env}, "log": str(folder / "train.log"),
            "snapshot": str(folder / "run")}


def _resume_step(folder: Path) -> dict:
    return {"argv": ["--resume", str(folder / "run")], "env": {"METATUNE_CACHE_DIR": str(folder / "cache")},
            "log": str(folder / "resume.log")}


@pytest.fixture(scope="module")
def boundaries(workspace) -> list[str]:
    """The labels of the reference run's write boundaries, in order (boundary N is labels[N-1])."""
    log = workspace / "boundaries.log"
    results = _run(workspace, "reference", {"reference": [_train_step(workspace, "reference",
                                                                      {FAULT_LOG_VARIABLE: str(log)})]})
    assert results["reference"][0]["exit"] == 0
    labels = [line.split("\t")[1] for line in log.read_text().splitlines()]
    # What the suite must cover: run files, cache writes, checkpoints of both phases, completion.
    assert {"config.json", "feature cache", "model.keras", "metadata.json", "mark complete"} <= set(labels)
    assert any(label.startswith("checkpoint") and "finetune-end" in label for label in labels)
    return labels


@pytest.fixture(scope="module")
def faulted(workspace, boundaries) -> dict[str, list[dict]]:
    cases = {}
    disk_full = set(disk_full_cases(boundaries))
    for number in range(1, len(boundaries) + 1):
        cases[f"kill-{number:02d}"] = [_train_step(workspace, f"kill-{number:02d}", {FAULT_VARIABLE: f"kill@{number}"}),
                                       _resume_step(workspace / f"kill-{number:02d}")]
        if number in disk_full:
            cases[f"enospc-{number:02d}"] = [_train_step(workspace, f"enospc-{number:02d}",
                                                         {FAULT_VARIABLE: f"enospc@{number}"})]
    return _run(workspace, "faults", cases)


def _log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _no_traceback(path: Path) -> list[str]:
    text = _log(path)
    return [f"{path}: traceback\n{text[-2000:]}"] if "Traceback" in text else []


def _error_line(path: Path) -> str | None:
    lines = [line for line in _log(path).splitlines() if " ERROR " in line]
    return lines[-1] if lines else None


def _usable_run(run: Path) -> list[str]:
    """Problems with a run marked complete: its history must be continuous and its model load."""
    problems = []
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    if [e["epoch"] for e in history] != list(range(1, len(history) + 1)):
        problems.append(f"{run}: history not continuous: {[e['epoch'] for e in history]}")
    phases = [e["phase"] for e in history]
    if phases != sorted(phases, key=["head", "finetune"].index) or phases.count("finetune") != 1:
        problems.append(f"{run}: phases {phases}")
    try:
        model = load_task_model(str(run / rd.MODEL_FILE))
        assert model.predict(np.zeros((1, 16, 16, 3), np.uint8), verbose=0).shape == (1, 3)
    except Exception as error:  # noqa: BLE001  reported below with the run it came from
        problems.append(f"{run}: model does not load: {error!r}")
    if json.loads((run / rd.METADATA_FILE).read_text())["class_names"] != ["blue", "green", "red"]:
        problems.append(f"{run}: metadata class names")
    # Every JSON file of the run reads back (a resume did not read data_report.json, so one damaged while the run
    # was stopped stayed damaged in a run marked complete).
    for name in (rd.CONFIG_FILE, rd.DATA_REPORT_FILE, rd.MANIFEST_FILE, rd.HISTORY_FILE, rd.METADATA_FILE):
        try:
            written = rd.read_json(run / name)
            if not isinstance(written, dict):
                problems.append(f"{run}: {name} is not a JSON object")
            elif name == rd.DATA_REPORT_FILE and "label_issues" not in written:  # the first of its two writes
                problems.append(f"{run}: {name} lacks the label issues")
        except UserError as error:
            problems.append(f"{run}: {error}")
    # Every epoch of the history is in TensorBoard once (an epoch killed after its checkpoint was not, before the
    # checkpoint came last; one killed between its events and its checkpoint ran twice and showed twice, before the
    # resume dropped the events logged after its checkpoint), and so is every optimizer step.
    logged = [step for step, _ in scalar_points(run, "train", "epoch_loss")]
    if logged != list(range(len(history))):
        problems.append(f"{run}: TensorBoard's epoch_loss steps {logged}, history has {len(history)} epochs")
    steps = [step for step, _ in scalar_points(run, "train", "learning_rate")]
    if steps != list(range(1, len(steps) + 1)):
        problems.append(f"{run}: TensorBoard's learning_rate steps {steps}")
    # Each phase's description once (a resume into a phase wrote it again, before it knew it was a resume).
    if (announced := tensor_steps(run, "train", "phases")) != [1, 2]:
        problems.append(f"{run}: TensorBoard's phase descriptions at steps {announced}")
    return problems


def _temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name]


def _check_resume(folder: Path, result: dict, boundary_label: str, config_written: bool) -> list[str]:
    """The resume after a fault: the run finished, or an ERROR line explains why it cannot be."""
    run, log = folder / "run", folder / "resume.log"
    problems = _no_traceback(log)
    complete = (run / rd.METADATA_FILE).is_file() and not (run / rd.INCOMPLETE_MARKER).exists()
    if result["exit"] == 0:
        return problems + (_usable_run(run) if complete else [f"{run}: resume exited 0 but the run is INCOMPLETE"])
    error = _error_line(log)
    if result["exit"] != 2 or error is None:
        return problems + [f"{folder.name} ({boundary_label}): resume exit {result}, no ERROR line"]
    if complete:  # only a finished run may refuse: "nothing to resume"
        return problems + (_usable_run(run) if "nothing to resume" in error else [f"{folder.name}: {error}"])
    if config_written:
        problems.append(f"{folder.name} ({boundary_label}): an interrupted run with its config was refused: {error}")
    return problems


def test_kill_9_after_every_write_boundary_then_resume(faulted, boundaries, workspace):
    problems = []
    config_at = boundaries.index("config.json") + 1
    for number, label in enumerate(boundaries, start=1):
        case = f"kill-{number:02d}"
        killed, resumed = faulted[case]
        if killed["signal"] != signal.SIGKILL:
            problems.append(f"{case} ({label}): not killed at its boundary: {killed}")
            continue
        problems += _no_traceback(workspace / case / "train.log")
        problems += _check_resume(workspace / case, resumed, label, config_written=number >= config_at)
    assert not problems, "\n".join(problems)


def test_disk_full_at_every_kind_of_write(faulted, boundaries, workspace):
    problems = []
    kinds = {write_kind(label) for label in boundaries if not label.startswith(NO_WRITE_PREFIXES)}
    assert {"latest.json", "checkpoint N-PHASE-epoch-N", "checkpoint N-PHASE-end", "PHASE-best-epoch-N.weights.npz",
            "feature cache", "model.keras"} <= kinds
    for number in disk_full_cases(boundaries):
        label, case = boundaries[number - 1], f"enospc-{number:02d}"
        (failed,) = faulted[case]
        log = workspace / case / "train.log"
        problems += _no_traceback(log) + _temporaries(workspace / case)
        if label in CACHE_LABELS:  # a cache never stops a run
            if failed["exit"] != 0:
                problems.append(f"{case} ({label}): exit {failed}, expected the run to finish")
            elif "Could not write" not in _log(log):
                problems.append(f"{case} ({label}): no warning about the cache")
            continue
        error = _error_line(log)
        if failed["exit"] != 2 or error is None or "No space left on device" not in error:
            problems.append(f"{case} ({label}): expected one ERROR line about the full disk, got {failed}: {error}")
            continue
        killed_before = faulted[f"kill-{number - 1:02d}"][0]["files"] if number > 1 else []
        if failed["files"] != killed_before:
            problems.append(f"{case} ({label}): left {failed['files']}, kill@{number - 1} left {killed_before}")
    assert not problems, "\n".join(problems)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def interrupted(workspace, boundaries) -> Path:
    """A run killed after finetune's first epoch checkpoint (and the deletion that follows it)."""
    kill_at = max(i for i, label in enumerate(boundaries, start=1) if label.endswith("finetune-epoch-0001")) + 2
    base = "interrupted"
    results = _run(workspace, base, {base: [_train_step(workspace, base, {FAULT_VARIABLE: f"kill@{kill_at}"})]})
    assert results[base][0]["signal"] == signal.SIGKILL
    return workspace / base


def test_two_resumes_at_once_finish_the_run_once(workspace, interrupted):
    """Defect 2: two `--resume` of one run at once (two processes, started together): one finishes
    it, the other stops with one ERROR line (the holder's PID, or nothing left to resume once the
    first is done); the run loads."""
    shutil.copytree(interrupted, workspace / "concurrent")
    folder = workspace / "concurrent"
    steps = {name: [dict(_resume_step(folder), log=str(folder / f"{name}.log"))] for name in ("first", "second")}
    results = _run(workspace, "concurrent", steps)
    exits = sorted(result[0]["exit"] for result in results.values())
    assert exits == [0, 2], results
    refused = next(name for name, result in results.items() if result[0]["exit"] == 2)
    error = _error_line(folder / f"{refused}.log") or ""
    assert "in use by another metatune process (PID" in error or "nothing to resume" in error, error
    for name in steps:
        assert not _no_traceback(folder / f"{name}.log")
    assert not (folder / "run" / rd.INCOMPLETE_MARKER).exists() and not _usable_run(folder / "run")


def test_every_state_file_truncated_or_garbled_then_resume(workspace, interrupted):
    """Interrupted after finetune's first epoch checkpoint: each file damaged in turn."""
    base = interrupted.name
    run = interrupted / "run"
    # INCOMPLETE is left out: nothing reads what it says.
    files = sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file() and p.stat().st_size
                   and p.relative_to(run).parts[0] != rd.LOGS_DIR and p.name != rd.INCOMPLETE_MARKER)
    assert any(p.name == "state.json" for p in files) and any(p.name.endswith("best-epoch-0001.weights.npz") for p in files)
    cases = {}
    for index, relative in enumerate(files):
        for damage in (_truncate, _garble):
            case = f"{damage.__name__[1:]}-{index:02d}"
            shutil.copytree(workspace / base, workspace / case)
            damage(workspace / case / "run" / relative)
            cases[case] = [_resume_step(workspace / case)]
    results = _run(workspace, "damaged", cases)
    problems = []
    for case, (result,) in results.items():
        relative = files[int(case.rsplit("-", 1)[1])]
        problems += _no_traceback(workspace / case / "resume.log")
        if result["exit"] == 0:
            problems += _usable_run(workspace / case / "run")
            continue
        error = _error_line(workspace / case / "resume.log") or ""
        if result["exit"] != 2 or relative.name not in error:
            problems.append(f"{case} ({relative}): exit {result}, ERROR line does not name the file: {error!r}")
    assert not problems, "\n".join(problems)
    # The interrupted run had two checkpoints: damaging any file of the newest falls back to the older.
    newest = max((p for p in files if p.parts[0] == CHECKPOINTS_DIR and len(p.parts) == 3), key=str).parts[1]
    fell_back = [case for case in results if files[int(case.rsplit("-", 1)[1])].parts[1:2] == (newest,)]
    assert fell_back and all(results[case][0]["exit"] == 0 for case in fell_back)
