"""An evaluation's output folder, RUN_DIR/eval/NAME, written whole or not at all.

evaluate.py writes its report, plots and metrics.json into a staging folder and only then swaps it in for the
earlier evaluation of that name (and its TensorBoard events, RUN_DIR/logs/eval_NAME). Before, the earlier folder was
emptied first: an evaluation that failed midway (a damaged file, a full disk, Ctrl-C) deleted a finished report and
left half of a new one in its place.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app import run_dir as rd
from app.errors import UserError
from data.atomic_write import dead_temporaries, live_temporaries, temporary_name

logger = logging.getLogger(__name__)

REPLACED_SUFFIX = ".replaced"  # the earlier evaluation, set aside inside the staging folder while the new one moves in
METRICS_FILE = "metrics.json"  # written last: its presence means the evaluation finished


@contextmanager
def staged_report_dir(out_dir: Path, run_path: Path) -> Iterator[Path]:
    """Write an evaluation whole, then put it in place of RUN_DIR/eval/NAME (`out_dir`) and its TensorBoard events.

    The body writes into a staging folder RUN_DIR/eval/.tmp-PID-NAME/NAME (hidden, this process's, same file system;
    the inner folder has the final name because writers name the TensorBoard folder logs/eval_NAME after it). Only
    when the body returns is the earlier evaluation of that name renamed aside, the new one renamed in and the earlier
    one removed; the earlier TensorBoard events (logs/eval_NAME, set aside into the staging folder at the start: the
    new evaluation writes its own there) are removed then too. Aside means outside logs/: TensorBoard reads every
    folder under it, hidden ones too, and listed the earlier events as a run of their own (.tmp-PID-eval_NAME) for
    as long as it ran. When the body raises (a failed write, a bad value, Ctrl-C), the staging folder
    and the new events go, and the earlier evaluation and its events are as they were: a failed evaluation never
    deletes a finished one, nor leaves half of one in its place."""
    out_dir, run_path = Path(out_dir), Path(run_path)
    rd.check_report_name(out_dir.name)
    if out_dir.is_symlink() or out_dir.exists() and not out_dir.is_dir():
        # Replacing it would delete what a link points at, or a file: neither is an earlier report.
        raise UserError(f"{str(out_dir)!r} is {'a symbolic link' if out_dir.is_symlink() else 'a file'}, not an "
                        "earlier report folder. Choose another --name, or remove it.")
    logs = run_path / rd.LOGS_DIR
    events = logs / f"eval_{out_dir.name}"
    from app.tensorboard_logging import check_events_folders

    rd.require_still_there(run_path)  # moved away since it was opened: mkdir would make RUN_DIR/eval/ there anew
    check_events_folders(logs, events)  # before any work: the evaluation writes its events there
    _recover_leftovers(out_dir.parent, logs)
    staging_root = temporary_name(out_dir)
    staging = staging_root / out_dir.name
    events_aside = _events_aside(staging_root, events)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        logger.warning("Replacing the earlier evaluation in %s (same name) once this one is written whole; until "
                       "then it stays as it is", out_dir)
    try:
        shutil.rmtree(staging_root, ignore_errors=True)  # this process's own, from an earlier evaluation in it
        staging.mkdir(parents=True)
        _refuse_a_concurrent_evaluation(out_dir, staging_root)
        # TensorBoard would show both evaluations at one step: the earlier events go aside, back if this one fails.
        had_events = events.is_dir() and not events.is_symlink()
        if had_events:
            events_aside = _set_aside(events, events_aside)
    except OSError as error:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise UserError(f"Cannot prepare the evaluation folder {str(out_dir)!r}: {error.strerror or error} "
                        f"({error.filename or out_dir}). Make {str(run_path)!r} writable (or free some space), then "
                        "run the same command again.") from None
    try:
        yield staging
        _swap_in(staging, out_dir)
    except BaseException as error:  # Ctrl-C included: the earlier evaluation stays, nothing half-written is left
        _restore_events(events, events_aside if had_events else None)
        _restore_replaced(staging_root, out_dir)
        shutil.rmtree(staging_root, ignore_errors=True)
        if isinstance(error, OSError) and not run_path.is_dir():  # its writes failed as the run went: not a bug
            raise rd.folder_gone(run_path) from None
        if isinstance(error, OSError) and isinstance(error.filename, str) and error.filename.startswith(str(staging)):
            error.filename = str(out_dir) + error.filename[len(str(staging)):]  # the file the user knows (a full disk)
        raise
    shutil.rmtree(staging_root, ignore_errors=True)  # the earlier evaluation, set aside by _swap_in
    shutil.rmtree(events_aside, ignore_errors=True)


def _refuse_a_concurrent_evaluation(out_dir: Path, staging_root: Path) -> None:
    """A UserError (this process's staging folder removed) when another running process stages an evaluation of
    the same name: both said "Report: RUN_DIR/eval/NAME/report.md", the second silently replaced the first, and
    logs/eval_NAME held both one's events. Checked once this process's own staging folder exists, so of two that
    start together at least one sees the other (both may refuse; never both go on)."""
    try:
        refuse_if_being_written(out_dir)
    except UserError:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise


def refuse_if_being_written(out_dir: Path) -> None:
    """The UserError of a running evaluation staging `out_dir`'s name, only looking (nothing is written). evaluate.py
    with --name asks before its prediction pass too: the refusal came after every file was predicted (minutes)."""
    for (name, pid), _ in live_temporaries(Path(out_dir).parent).items():
        if name == Path(out_dir).name:
            raise UserError(f"Another evaluation (PID {pid}) is writing {str(out_dir)!r} now. Wait for it to end, "
                            "then run the same command again, or choose another --name.")


def _events_aside(staging_root: Path, events: Path) -> Path:
    """Where the earlier TensorBoard events of an evaluation wait while it runs: in its staging folder."""
    return staging_root / (events.name + REPLACED_SUFFIX)


def _set_aside(events: Path, aside: Path) -> Path:
    """Rename `events` to `aside`; where that crosses file systems (RUN_DIR/eval a link to another disk), to a
    hidden name beside it, as earlier versions did. Returns where they went."""
    try:
        os.rename(events, aside)
        return aside
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    beside = temporary_name(events)
    shutil.rmtree(beside, ignore_errors=True)
    os.rename(events, beside)
    return beside


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename the earlier evaluation (if any) aside into the staging root, then the finished one into place."""
    try:
        if out_dir.is_dir():
            os.rename(out_dir, staging.parent / (out_dir.name + REPLACED_SUFFIX))
        os.rename(staging, out_dir)
    except OSError as error:
        raise UserError(f"Cannot put the finished evaluation in place of {str(out_dir)!r}: {error.strerror or error} "
                        f"({error.filename or out_dir}). The earlier evaluation there is kept. Make "
                        f"{str(out_dir.parent)!r} writable, then run the same command again.") from None


def _restore_replaced(staging_root: Path, out_dir: Path) -> None:
    """After a failed swap: the earlier evaluation back in place when it was set aside and nothing replaced it."""
    replaced = staging_root / (out_dir.name + REPLACED_SUFFIX)
    if replaced.is_dir() and not (out_dir.exists() or out_dir.is_symlink()):
        try:
            os.rename(replaced, out_dir)
        except OSError:
            logger.warning("The earlier evaluation of %s could not be put back; it is in %s", out_dir, replaced)


def _restore_events(events: Path, aside: Path | None) -> None:
    """After a failed evaluation: remove the events it wrote to logs/eval_NAME, and put the earlier ones (`aside`,
    None when there were none) back."""
    try:
        if events.is_dir() and not events.is_symlink():
            shutil.rmtree(events)
        if aside is not None and aside.is_dir() and not events.exists():
            os.rename(aside, events)
    except OSError:
        logger.warning("The earlier TensorBoard events of this evaluation could not be put back in %s; they are in "
                       "%s", events, aside)


def _dead_leftovers(folder: Path, prefix: str = "") -> dict[tuple[str, int], Path]:
    """{(NAME, PID): path} of `folder`'s .tmp-PID-<prefix>NAME entries whose process PID no longer runs."""
    return {(name[len(prefix):], pid): entry for (name, pid), entry in dead_temporaries(folder).items()
            if name.startswith(prefix)}


def _recover_leftovers(eval_root: Path, logs: Path) -> None:
    """Tidy what evaluations killed before they finished (kill -9, a power cut) left in RUN_DIR/eval and
    RUN_DIR/logs, keeping a finished evaluation of each name with its own TensorBoard events: killed before the
    swap, the earlier events come back; killed between its two renames, the finished new evaluation goes in place;
    killed after, what was left aside goes."""
    swapped = {}  # (NAME, PID): whether that evaluation's new folder is the one in place (its events are too)
    for (name, pid), root in _dead_leftovers(eval_root).items():
        out_dir, new, replaced = eval_root / name, root / name, root / (name + REPLACED_SUFFIX)
        try:
            if not (out_dir.exists() or out_dir.is_symlink()):
                moved = new if (new / METRICS_FILE).is_file() else replaced if replaced.is_dir() else None
                if moved is not None:
                    logger.warning("Putting the %s evaluation in place in %s (an evaluation was killed while "
                                   "replacing it)", "finished new" if moved == new else "earlier", out_dir)
                    os.rename(moved, out_dir)
                swapped[name, pid] = moved == new
            else:
                swapped[name, pid] = not new.is_dir()  # still staged: killed before it could replace the earlier one
            if not swapped[name, pid]:  # its new events go, the earlier ones (set aside in `root`) come back
                aside = _events_aside(root, logs / f"eval_{name}")
                _restore_events(logs / f"eval_{name}", aside if aside.is_dir() else None)
            logger.info("Removing %s, left by an evaluation that did not finish", root)
            shutil.rmtree(root) if root.is_dir() and not root.is_symlink() else root.unlink()
        except OSError as error:  # a leftover the next evaluation can tidy as well
            logger.warning("Could not tidy %s, left by an evaluation that did not finish: %s", root, error)
    for (name, pid), aside in _dead_leftovers(logs, "eval_").items():  # set aside in logs/ by earlier versions
        if not swapped.get((name, pid), True):  # no staging folder left: it was swapped in, then removed
            _restore_events(logs / f"eval_{name}", aside)
        shutil.rmtree(aside, ignore_errors=True)
