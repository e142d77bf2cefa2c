"""--distribute multi-worker end to end: two worker processes on loopback ports, each started with its
TF_CONFIG, running the same train.py command (tests/multi_worker_runner.py forks them from one
process that imported TensorFlow once).

0. A worker whose port another program holds stops with one ERROR line naming the address.
   The chief sent SIGTERM stops with its ERROR line (status 143), and the other worker after it.
   Both workers given an --output that holds files refuse it.
   Worker 1 started with another option than the chief: both stop at once with one ERROR line that says
   so (before, the commands' different collective ops ended in a traceback on one and, minutes later, a
   "worker stopped" on the other), and nothing is written.
1. The chief is killed (SIGKILL) right after its first checkpoint: the other worker ends, well
   within the test's time limit, with one ERROR line that says how to resume, no traceback, and
   no temporary folder left behind.
2. Both workers relaunched with `--resume RUN_DIR` both exit 0: the chief's RUN_DIR is one complete
   run, continued from that checkpoint, whose metadata says 2 workers; both workers report the same
   validation scores (metrics are reduced across workers and the weights stay in step); the
   non-chief worker's temporary folder is gone. Label issues were ranked by the first chief only.
3. Both relaunched with `--resume` of the finished run: both stop at once, saying it is finished.

finetune's phase 2 under multi-worker is checked by hand (README, Scaling out): it adds half a
minute here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app import run_dir as rd
from colour_folders import write_colour_folder
from data.atomic_write import FAULT_VARIABLE
from models.task_model import load_task_model

pytestmark = pytest.mark.slow
RUNNER = Path(__file__).resolve().parent / "multi_worker_runner.py"
WORKERS = 2
OPTIONS = ["--backbone", "tiny_image", "--strategy", "linear", "--epochs", "2", "--refit", "no", "--image-size", "16",
           "--batch-size", "8", "--learning-rate", "0.05", "--seed", "3", "--distribute", "multi-worker"]
TIME_LIMIT_S = 900  # both rounds together (about 2 minutes on a busy 2-core machine); a hang fails the test


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _round(tmp_path: Path, name: str, argv: list[str], chief_env: dict | None = None) -> list[dict]:
    """One step per worker, on fresh loopback ports; worker i logs to NAME-i.log."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]
    steps = []
    for index in range(WORKERS):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {"TF_CONFIG": json.dumps(tf_config), "METATUNE_CACHE_DIR": str(tmp_path / f"cache-{index}")}
        if index == 0:
            env |= chief_env or {}
        steps.append({"argv": argv, "env": env, "log": str(tmp_path / f"{name}-{index}.log")})
    return steps


def _run_rounds(tmp_path: Path, rounds: list[list[dict]]) -> list[list[dict]]:
    (tmp_path / "rounds.json").write_text(json.dumps(rounds))
    runner = subprocess.Popen([sys.executable, str(RUNNER), str(tmp_path / "rounds.json"),
                               str(tmp_path / "results.json")], start_new_session=True)
    try:
        runner.wait(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)  # the runner and every worker it forked
        runner.wait()
        logs = {p.name: p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log"))}
        pytest.fail(f"multi-worker rounds did not end within {TIME_LIMIT_S} s (a hang). Logs: {logs}")
    assert runner.returncode == 0
    return json.loads((tmp_path / "results.json").read_text())


def _scratch_folders(log: Path) -> list[Path]:
    """The temporary folders a non-chief worker said it writes into."""
    return [Path(folder) for folder in re.findall(r"this worker writes into (\S+) and removes it", log.read_text())]


def _done_line(log: Path) -> str:
    """The worker's 'Done: best validation accuracy ... (loss ...)' figures."""
    return re.search(r"Done: (best validation accuracy \S+ \(loss \S+\))", log.read_text()).group(1)


def test_a_killed_worker_ends_the_job_with_an_error_and_resume_completes_it(tmp_path):
    data = write_colour_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    mismatched = _round(tmp_path, "mismatch", [str(data), *OPTIONS, "--output", str(tmp_path / "mismatch")])
    mismatched[1]["argv"] = [*mismatched[1]["argv"], "--epochs", "3"]  # worker 1 started with another command
    taken = socket.socket()  # a port another program listens on
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    port_in_use = [{"argv": [str(data), *OPTIONS, "--output", str(tmp_path / "in-use")],
                    "env": {"TF_CONFIG": json.dumps({"cluster": {"worker": [address]},
                                                     "task": {"type": "worker", "index": 0}})},
                    "log": str(tmp_path / "in-use.log")}]
    terminated = _round(tmp_path, "sigterm", [str(data), *OPTIONS, "--output", str(tmp_path / "terminated")],
                        chief_env={FAULT_VARIABLE: "term@label=-head-epoch-0001"})  # SIGTERM to the chief
    used = tmp_path / "used"  # an --output that holds something: both workers see it (one machine)
    used.mkdir()
    (used / "notes.txt").write_text("someone else's")
    with taken:
        in_use, refused, occupied, sigterm, killed, resumed, finished = _run_rounds(tmp_path, [
            port_in_use,
            mismatched,
            _round(tmp_path, "used", [str(data), *OPTIONS, "--output", str(used)]),
            terminated,
            _round(tmp_path, "killed", [str(data), *OPTIONS, "--output", str(run_dir)],
                   chief_env={FAULT_VARIABLE: "kill@label=-head-epoch-0001"}),
            _round(tmp_path, "resume", ["--resume", str(run_dir)]),
            _round(tmp_path, "again", ["--resume", str(run_dir)]),
        ])

    # A worker whose port is taken: one ERROR line naming it (it was TensorFlow's traceback), nothing written.
    assert in_use[0]["exit"] == 2
    log = (tmp_path / "in-use.log").read_text()
    errors = [line for line in log.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
    assert len(errors) == 1 and f"could not start its server on {address}" in errors[0] and "Traceback" not in log
    assert not (tmp_path / "in-use").exists()

    # 0. Workers started with different commands: every one stops at once with one ERROR line, nothing written.
    assert [worker["exit"] for worker in refused] == [2, 2]
    for index in range(WORKERS):
        log = (tmp_path / f"mismatch-{index}.log").read_text()
        errors = [line for line in log.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
        assert len(errors) == 1 and "not started with the same train.py command" in errors[0], log[-2000:]
        assert "Traceback" not in log
    assert not (tmp_path / "mismatch").exists()

    # An --output in use: every worker refuses it (the other worker said the chief stopped, resume RUN_DIR).
    assert [worker["exit"] for worker in occupied] == [2, 2]
    for index in range(WORKERS):
        log = (tmp_path / f"used-{index}.log").read_text()
        errors = [line for line in log.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
        assert len(errors) == 1 and "already exists and is not empty" in errors[0], log[-2000:]
    assert [entry.name for entry in used.iterdir()] == ["notes.txt"]

    # SIGTERM to a worker stops it with its ERROR line and status 143 (TensorFlow's own handler swallowed
    # it: the worker trained on to the end); the other worker then stops too, and the run stays INCOMPLETE.
    assert sigterm[0]["exit"] == 143, (tmp_path / "sigterm-0.log").read_text()[-2000:]
    assert f"Interrupted (SIGTERM). {tmp_path / 'terminated'} stays INCOMPLETE" in \
        (tmp_path / "sigterm-0.log").read_text()
    assert sigterm[1]["exit"] == 2 and "another worker stopped" in (tmp_path / "sigterm-1.log").read_text()
    assert (tmp_path / "terminated" / rd.INCOMPLETE_MARKER).exists()

    # 1. The chief killed after a checkpoint: the other worker ends with one ERROR line, no traceback.
    assert killed[0]["signal"] == signal.SIGKILL
    assert killed[1]["exit"] == 2
    log = (tmp_path / "killed-1.log").read_text()
    errors = [line for line in log.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
    assert len(errors) == 1 and "another worker stopped" in errors[0] and f"--resume {run_dir}" in errors[0], errors
    assert "If that worker's log ends with an ERROR of its own, fix what it says first" in errors[0]
    assert "Traceback" not in log

    # 2. --resume on both workers: both exit 0, one complete run directory (the chief's), in step.
    assert [worker["exit"] for worker in resumed] == [0, 0]
    assert "Resuming head at epoch 2/2" in (tmp_path / "resume-0.log").read_text()
    assert not (run_dir / rd.INCOMPLETE_MARKER).exists()
    load_task_model(str(run_dir / rd.MODEL_FILE))
    metadata = json.loads((run_dir / rd.METADATA_FILE).read_text())
    assert metadata["distribute"] == {"strategy": "multi-worker", "replicas": 2, "workers": 2}
    assert metadata["resumed"] is True
    history = json.loads((run_dir / rd.HISTORY_FILE).read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert _done_line(tmp_path / "resume-0.log") == _done_line(tmp_path / "resume-1.log")
    # the other worker's last line names the chief's run directory, not the scratch folder it removes
    done = re.search(r"Done: .*", (tmp_path / "resume-1.log").read_text()).group(0)
    assert "Run directory: the chief's (this worker's scratch copy " in done and str(run_dir) not in done

    # 3. --resume of the finished run: every worker says so at once (the chief waited 2 minutes for the other's
    # heartbeats, then said "another worker stopped ... --resume").
    assert [worker["exit"] for worker in finished] == [2, 2]
    for index in range(WORKERS):
        log = (tmp_path / f"again-{index}.log").read_text()
        errors = [line for line in log.splitlines() if re.match(r"\S+ ERROR metatune: ", line)]
        assert len(errors) == 1 and "is a finished run; there is nothing to resume" in errors[0], log[-2000:]

    # Label issues are ranked once, by the chief of the new run (into its data report); the other worker and
    # both resumed workers leave them (nothing is left out of training here, so nothing needs the ranking).
    assert "not the chief" not in (tmp_path / "killed-0.log").read_text()
    assert "Label issues not ranked: this worker is not the chief" in (tmp_path / "killed-1.log").read_text()
    for index in range(WORKERS):
        assert "Label issues not ranked: a resumed run keeps the list" in (tmp_path / f"resume-{index}.log").read_text()
    assert "not the chief" not in json.loads((run_dir / rd.DATA_REPORT_FILE).read_text())["label_issues_note"]

    # Only the chief wrote RUN_DIR; the non-chief's temporary folders are gone, in failure and in success.
    assert _scratch_folders(tmp_path / "resume-0.log") == []
    scratch = _scratch_folders(tmp_path / "killed-1.log") + _scratch_folders(tmp_path / "resume-1.log")
    assert len(scratch) == 2 and not any(folder.exists() for folder in scratch)
