"""`--distribute multi-worker`: where each worker writes, and what a dead peer turns into.

Every worker runs the same command with its own TF_CONFIG. Only the chief (worker 0) writes the
run directory; every other worker runs the very same steps (the collective ops of training and
prediction need every worker to issue them, in the same order) but writes into a temporary
folder that it removes when it ends, in success or failure. A worker killed outright cannot
remove its own: it is named in the log, under the system's temporary folder.

`--resume RUN_DIR` reads the run's config.json and checkpoints, so every worker must see the
chief's run directory at the same path (one machine, or a shared filesystem). A non-chief
worker copies what resuming reads into its temporary folder; all workers then wait for each
other (`check_same_command`, which also refuses workers started with different commands) before
the chief writes anything, so no copy can catch a checkpoint half-replaced.

A worker that dies: the others' next collective op fails with an UnavailableError, as soon as
its connection resets (a killed process on loopback: about a second) or once TensorFlow's
coordination service has missed its heartbeats for the heartbeat timeout (app/distribution.py;
a machine that vanishes); `multi_worker_run` turns that into one ERROR line saying how to resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app import run_dir as rd
from app.config import TrainConfig
from app.errors import UserError

logger = logging.getLogger(__name__)
# What a collective op raises when a peer worker is gone (heartbeats missed, connection reset, aborted).
PEER_FAILURES = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")


@dataclasses.dataclass(frozen=True)
class WorkerRun:
    """What this worker trains with: its config and resume folder (its own, for a non-chief worker),
    and the run directory the job writes (the chief's), which the worker reports."""

    config: TrainConfig
    resume_dir: Path | None
    run_dir: Path


def peer_failure(error: BaseException, run_dir: Path) -> UserError | None:
    """The ERROR for a worker whose peer died (None: `error` is something else)."""
    if type(error).__name__ not in PEER_FAILURES:
        return None
    text = str(error).strip()
    first_line = text.splitlines()[0][:300] if text else ""
    return UserError(f"--distribute multi-worker: another worker stopped or became unreachable, so this one cannot go "
                     f"on ({type(error).__name__}: {first_line}). If that worker's log ends with an ERROR of its "
                     f"own, fix what it says first. The chief keeps the last completed epoch's checkpoint in "
                     f"{run_dir}. Start every worker again with its TF_CONFIG and: python train.py --resume {run_dir}")


def command_fingerprint(config: TrainConfig, resume_dir) -> str:
    """What every worker must agree on: its resolved options and the run it resumes (None: a new run)."""
    command = {"config": dataclasses.asdict(config), "resume": None if resume_dir is None else str(resume_dir)}
    return hashlib.sha256(json.dumps(command, sort_keys=True, default=str).encode()).hexdigest()


def check_same_command(strategy, fingerprint: str, run_dir: Path, resuming: bool) -> None:
    """A barrier (returns once every worker has called it) that also compares the workers' commands.

    Why: workers started with different commands (other options, one resuming and one starting anew)
    issue different collective ops, which TensorFlow reports minutes later, if at all, as a crash of
    the "other" worker or an internal error with a traceback. One all-gather of each worker's
    fingerprint before any work finds it at once, on every worker."""
    import numpy as np
    import tensorflow as tf

    # 8 chunks of 16 bits: exact in float32, which every collective implementation gathers.
    mine = tf.constant([[int(fingerprint[i:i + 4], 16) for i in range(0, 32, 4)]], tf.float32)

    def gather():
        return tf.distribute.get_replica_context().all_gather(mine, axis=0)

    gather_all = tf.function(lambda: strategy.run(gather))
    gathered = strategy.experimental_local_results(gather_all())[0]
    different = int(np.sum(np.any(gathered.numpy() != mine.numpy(), axis=1)))
    if different:
        # A second gather before stopping: a worker whose gather finished first stopped at once and took its server
        # with it while another still fetched its part ("Socket closed"), and that one said another worker had
        # stopped, not that the commands differ. Each worker knows the verdict already, so that second gather's own
        # failure (the last worker's part fetched after its peer stopped) changes nothing.
        try:
            gather_all()
        except tf.errors.OpError:
            pass
        received = f"--resume {run_dir}" if resuming else f"a new run with --output {run_dir}"
        raise UserError(f"--distribute multi-worker: the workers were not started with the same train.py command "
                        f"({different} of {len(gathered)} differ from this worker's options, data folder or "
                        f"--resume; command fingerprint here {fingerprint[:12]}). Received on this worker: {received}. "
                        "Stop every worker and start them all with the same command (only TF_CONFIG's task index "
                        "differs): the same options and --output, or the same --resume RUN_DIR.")


@contextmanager
def multi_worker_run(config: TrainConfig, resume_dir, chief: bool, strategy) -> Iterator[WorkerRun]:
    """This worker's side of a multi-worker run (see the module docstring); peer failures raised
    inside become one UserError."""
    # config.validate() made sure of --output: the default name carries each worker's own start time.
    run_dir = Path(resume_dir if resume_dir is not None else config.output).expanduser()
    fingerprint = command_fingerprint(config, resume_dir)  # before a non-chief worker's output becomes its own
    if resume_dir is None:
        # Every worker that sees the chief's --output refuses a used one before the first collective op. Why:
        # the chief alone found out, after start-up, and the other worker then said the chief had stopped
        # and to resume RUN_DIR (someone else's run).
        rd.check_new_run_dir(run_dir)
    elif not (run_dir / rd.INCOMPLETE_MARKER).exists():
        # Every worker says so before the first collective op. Why: when only the chief found out (later,
        # as one process does), the other worker had already stopped, and the chief waited 2 minutes for
        # its heartbeats before saying "another worker stopped ... --resume", of a run that is finished.
        raise UserError(f"{str(run_dir)!r} is a finished run; there is nothing to resume. Received: --resume "
                        f"{run_dir}" + ("" if chief else " (a non-chief worker resumes from the chief's checkpoints "
                                        "at the same path: one machine or a shared filesystem)"))
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="metatune-worker-"))
    try:
        if scratch is None:
            worker = WorkerRun(config, None if resume_dir is None else Path(resume_dir), run_dir)
        else:
            logger.info("Non-chief worker: the chief writes %s; this worker writes into %s and removes it "
                        "at the end.", run_dir, scratch)
            worker = _scratch_run(config, resume_dir, run_dir, scratch / "run")
        # Every copy made before the chief writes anything, and every worker running the same command.
        check_same_command(strategy, fingerprint, run_dir, resume_dir is not None)
        yield worker
    except Exception as error:
        if (failure := peer_failure(error, run_dir)) is not None:
            raise failure from None
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _scratch_run(config: TrainConfig, resume_dir, run_dir: Path, scratch_run: Path) -> WorkerRun:
    """A non-chief worker's run: a new folder, or a copy of what resuming `resume_dir` reads."""
    if resume_dir is None:
        return WorkerRun(dataclasses.replace(config, output=str(scratch_run)), None, run_dir)
    shutil.copytree(run_dir, scratch_run, ignore=shutil.ignore_patterns(rd.LOCK_FILE, rd.LOGS_DIR))
    return WorkerRun(dataclasses.replace(config, output=str(scratch_run)), scratch_run, run_dir)
