"""Runs train.py commands for tests/test_fault_injection.py, each in a forked child of this process.

    python tests/fault_runner.py CASES.json RESULTS.json

CASES.json: a list of cases, each a list of steps run one after another, each step
{"argv": train.py arguments, "env": variables to set, "log": file for its stdout and stderr,
"snapshot": optional folder}.
RESULTS.json: per case, per step, {"exit": status or null, "signal": number or null, "files": the
files under "snapshot" when the step ended, relative to it (see `_files`)}.

Why fork: this process imports TensorFlow once and never starts its runtime (no thread, no
device), so a forked child can; each child then costs its training only, not the 4-5 s import.
That is what lets the suite kill a run at every write boundary in CI time. Two children run at
once (the cores a CI machine usually has).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tiny_backbones  # noqa: E402,F401  (registers tiny_image)
import train  # noqa: E402
# What train.main imports lazily, imported before any fork: children then share it and all run
# the same code, even if a file changes while the suite runs. Importing starts no TensorFlow thread.
import app.config_cli  # noqa: E402,F401
import app.training  # noqa: E402,F401
import models.backbones.text_bert  # noqa: E402,F401  (keras_hub, tensorflow_text: 0.5 s a child otherwise)
import sklearn.linear_model  # noqa: E402,F401
import sklearn.model_selection  # noqa: E402,F401

PARALLEL = 2


def _start(step: dict) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        log = os.open(step["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(step.get("env", {}))
        code = train.main(step["argv"])
    except BaseException:  # noqa: BLE001  the test looks for this traceback in the log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _files(folder: Path) -> list[str]:
    """The files (not folders: an empty one holds no state) under `folder`, but TensorBoard's logs
    and the run's lock file (app/run_lock.py), which hold no state either."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] != "logs" and p.name != ".lock")


def run_cases(cases: list[list[dict]]) -> list[list[dict]]:
    results: list[list[dict]] = [[] for _ in cases]
    waiting = list(range(len(cases)))
    running: dict[int, int] = {}  # pid -> case
    while waiting or running:
        while waiting and len(running) < PARALLEL:
            case = waiting.pop(0)
            running[_start(cases[case][0])] = case
        pid, status = os.wait()
        case = running.pop(pid)
        step = cases[case][len(results[case])]
        results[case].append({"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                              "files": _files(Path(step["snapshot"])) if step.get("snapshot") else None})
        if len(results[case]) < len(cases[case]):
            running[_start(cases[case][len(results[case])])] = case
    return results


if __name__ == "__main__":
    # The children run Keras' train and predict steps eagerly: tracing them into graphs took about half of each
    # child's time (4 of 8 s), for models this tiny run for one epoch. What these runs prove is where files are
    # written and what a resume finds, which graph or eager execution does not change; the other tests (end to end,
    # finetune and resume, the meta-learners) run the steps as graphs, as a user's run does. A flag only: it starts
    # no TensorFlow thread, and tf.data functions stay graphs either way. Not for tests/multi_worker_runner.py, which
    # imports this module: a multi-worker run's collectives (all_gather) need graphs.
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    cases_path, results_path = sys.argv[1:3]
    Path(results_path).write_text(json.dumps(run_cases(json.loads(Path(cases_path).read_text()))))
