"""The run-directory format (docs/ARCHITECTURE.md): atomic writes, a completeness marker, loading.

A run directory is created with an `INCOMPLETE` marker that is removed only after
every artifact is written and read back intact (model.keras's archive CRCs, metadata.json
parses), so a crashed run is never mistaken for a finished one, nor a damaged one for a
usable one. Every file is written atomically (data/atomic_write.py).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shlex
import shutil
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

from app.errors import UserError
from data.atomic_write import TEMPORARY_PREFIX, boundary, write_atomically

logger = logging.getLogger(__name__)

INCOMPLETE_MARKER = "INCOMPLETE"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
DATA_REPORT_FILE = "data_report.json"
MANIFEST_FILE = "manifest.json"
META_LEARNER_FILE = "meta_learner.keras"  # meta strategies: the learner (evaluate --episodes, --init)
META_MANIFEST_FILE = "meta_manifest.json"  # --meta-data runs: its files, classes and their meta split
LOGS_DIR = "logs"
LOCK_FILE = ".lock"  # app/run_lock.py: held by the process that trains, resumes or finishes the run


def is_run_directory(path: Path) -> bool:
    """Whether `path` is a folder train.py wrote, finished or not (its marker, metadata or model is there)."""
    return path.is_dir() and any((path / name).exists() for name in (INCOMPLETE_MARKER, METADATA_FILE, MODEL_FILE))


def holds_a_run(path: Path) -> bool:
    """Whether `path`, given where a folder of data is expected (DATA_DIR, --meta-data), is a run directory: one
    train.py wrote (is_run_directory) with its config.json. Both, as a data set may hold a metadata.json of its own.
    Scanned as data, a run's logs/ (and eval/) folders became classes ("has 1 class: ['logs']")."""
    return is_run_directory(path) and (path / CONFIG_FILE).is_file()


def shell_path(path: str | Path) -> str:
    """A path as it must be typed in a shell command the message suggests (quoted when it has spaces etc.)."""
    return shlex.quote(str(path))


def retrain_remedy(run_dir: Path) -> str:
    """What to do about a damaged file of a finished run."""
    return (f"Train the run again (python train.py --config {shell_path(Path(run_dir) / CONFIG_FILE)} --output "
            "NEW_RUN_DIR) or "
            "restore the file from a backup.")


def write_json(path: Path, payload) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename. A NaN or infinite number is
    written as null (`json_ready`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_ready(payload), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def json_ready(value):
    """`value` with every NaN and infinite number (Python's or numpy's) replaced by None, in nested dicts and lists.

    JSON has no such numbers: Python writes them as NaN and Infinity, which strict readers (jq, JavaScript's
    JSON.parse, most languages' parsers) refuse, so one metric without a value (`known_accuracy_when_accepted` when
    no known file is accepted) made all of metrics.json unreadable to them. null says "no value" in JSON."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (reports)."""
    write_atomically(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_json(path: Path, remedy: str = ""):
    """The JSON in `path`; UserError naming the file when it is missing or damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not path.parent.is_dir():  # not a lost file: its whole folder went, and retraining was no remedy
            raise folder_gone(path.parent) from None
        raise UserError(f"{str(path)!r} is missing. {remedy}".rstrip()) from None
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{str(path)!r} is damaged ({type(error).__name__}: {error}). {remedy}".rstrip()) from None


def folder_gone(folder: Path) -> UserError:
    """The error for a run directory (or another folder a command reads) that went while the command ran."""
    return UserError(f"{str(folder)!r} is gone: it was moved, renamed or removed while this command was using it. "
                     "Run the command again with the folder where it is now, and leave it in place until the command "
                     "ends.")


def require_still_there(run_dir: Path) -> None:
    """folder_gone when `run_dir`, opened earlier by this command, is no longer a folder: what the command would
    read next is missing for that reason, not because the run is damaged or old, and what it would write there
    (mkdir with parents) would make the old path again, holding nothing else."""
    if not Path(run_dir).is_dir():
        raise folder_gone(Path(run_dir))


def archive_problem(path: Path) -> str | None:
    """Why the zip archive at `path` (.keras, .npz) cannot be trusted (missing, truncated, a CRC
    that does not match), or None when every member reads back intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError:
        return "missing"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return f"unreadable ({error})"
    return None if bad is None else f"damaged (bad CRC in {bad!r})"


# The run directory this process is training into, for the message of an interrupted run (app/cli.py).
_active_run: Path | None = None


def set_active_run(run_dir: Path | None) -> None:
    global _active_run
    _active_run = run_dir


def active_run() -> Path | None:
    return _active_run


def remove_leftover_temporaries(run_dir: Path) -> list[Path]:
    """The temporary files (data/atomic_write.temporary_name) that writers killed mid-write left at the top of a
    run directory. Only for the process holding the run's lock: no one else writes there then."""
    removed = []
    for leftover in Path(run_dir).glob(".tmp-*"):
        try:
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
            removed.append(leftover)
        except OSError:
            pass  # a leftover the next resume can remove as well
    return removed


def default_report_dir(eval_root: Path, name: str, data_dir: str | Path) -> Path:
    """RUN_DIR/eval/NAME for an evaluation given no --name (NAME: the data folder's name, cleaned, and the split),
    or NAME-2, NAME-3, ... when NAME holds a finished evaluation of another folder. Two folders of one name
    (~/a/test and ~/b/test), or whose names clean to the same one (every name of non-Latin letters is `_`), would
    otherwise replace each other's report; an evaluation of the same folder again replaces its own
    (app/report_staging.py)."""
    folder = str(Path(data_dir).expanduser().resolve())
    candidate, number = Path(eval_root) / name, 1
    while (evaluated := _evaluated_folder(candidate)) is not None and evaluated != folder:
        number += 1
        candidate = Path(eval_root) / f"{name}-{number}"
    return candidate


def _evaluated_folder(report_dir: Path) -> str | None:
    """The data folder a finished evaluation in `report_dir` scored (its metrics.json), or None: no finished
    evaluation there (an interrupted one has no metrics.json), or one that does not say."""
    try:
        folder = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8")).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return folder if isinstance(folder, str) else None


def check_output_path(path: str | Path, typed: bool = True) -> None:
    """A UserError when `--output` (`typed`) or the default run directory cannot become a run directory:
    an existing file, or a path under one."""
    path = Path(path).expanduser()
    blocker = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        kind = "a broken link" if blocker.is_symlink() and not blocker.exists() else "a file"
        where = f"is {kind}" if blocker == path else f"is under {str(blocker)!r}, which is {kind}"
        if not typed:
            raise UserError(f"The default run directory {str(path)!r} cannot be created: it {where}. Pass --output "
                            f"RUN_DIR (a folder path), or move {str(blocker)!r} away.")
        raise UserError(f"--output must be a new or empty folder, but {str(path)!r} {where}. Received: --output "
                        f"{str(path)!r}. Choose a folder path.")


def create_run_dir(path: Path, typed: bool = True) -> Path:
    """A new run directory with its INCOMPLETE marker. The caller may already hold its lock
    (app/run_lock.py): the lock file does not count as content. `typed`: the user gave the path (--output)."""
    path = Path(path)
    check_new_run_dir(path, typed)
    path.mkdir(parents=True, exist_ok=True)
    text = "Training has not finished; this run directory is not usable yet.\n"
    write_atomically(path / INCOMPLETE_MARKER, lambda temporary: temporary.write_text(text))
    return path


def check_new_run_dir(path: Path, typed: bool = True) -> None:
    """A UserError when `path` cannot become a new run directory: not a folder path, or a folder with content
    (the lock file aside). `typed`: the user gave the path (--output)."""
    check_output_path(path, typed)
    _refuse_inside_a_run(path, typed)
    _refuse_cache_inside(path, typed)
    _require_writable(path, typed)
    if path.exists() and any(entry.name != LOCK_FILE for entry in path.iterdir()):
        if not typed:  # the default name holds the time to the second: two runs started together
            raise UserError(f"The default run directory {str(path)!r} already exists and is not empty (a run "
                            "started in the same second?). Pass --output RUN_DIR, or run the command again.")
        if (path / INCOMPLETE_MARKER).exists():
            raise UserError(f"--output {str(path)!r} is an unfinished run. Continue it with python train.py --resume "
                            f"{shell_path(path)}, or, if that cannot resume it, delete the folder or choose another "
                            "--output.")
        raise UserError(f"Run directory already exists and is not empty. Received: --output {str(path)!r} (typed, or "
                        "the output of a --config file such as an earlier run's config.json). Choose a new one "
                        "(--output NEW_DIR).")


def _output_given(path: Path, typed: bool) -> str:
    """How an error names the new run directory: the --output typed (`typed`), or the default one."""
    return f"--output {str(path)!r}" if typed else f"the default run directory {str(path)!r}"


def _refuse_inside_a_run(path: Path, typed: bool) -> None:
    """A UserError when the new run directory would lie inside another run's directory (--output RUN/eval/x, or the
    default runs/ of a command started in a run directory): that run's owners remove what they find there
    (evaluate.py replaces its eval/NAME folders, a resume the leftovers at its top level), a run kept there with it."""
    holder = next((parent for parent in Path(path).absolute().parents if holds_a_run(parent)), None)
    if holder is None:
        return
    given = _output_given(path, typed) + ("" if typed else " (runs/ of this folder)")
    raise UserError(f"The new run directory would lie inside the run directory {str(holder)!r}, whose own commands "
                    f"replace or remove what they find there (evaluate.py its eval/ folders). Received: {given}. "
                    "Choose a folder outside it (beside it: --output RUN_DIR).")


def _refuse_cache_inside(path: Path, typed: bool) -> None:
    """A UserError when metatune's cache (METATUNE_CACHE_DIR) is the new run directory or lies inside it: the data
    check writes the cache before the run directory is made, which was then refused as "already exists and is not
    empty", a folder the user never filled."""
    from data.cache import cache_dir

    cache, where = Path(os.path.realpath(cache_dir())), Path(os.path.realpath(path.expanduser()))
    if cache != where and where not in cache.parents:
        return
    given = _output_given(path, typed)
    raise UserError(f"metatune's cache folder {str(cache_dir())!r} (METATUNE_CACHE_DIR) would lie inside the new run "
                    f"directory, which must start empty. Received: {given}. Set METATUNE_CACHE_DIR to a folder "
                    "outside the run directory, or choose another run directory.")


def _require_writable(path: Path, typed: bool) -> None:
    """A UserError when the run directory could not be created or written in: the folder itself when it exists,
    else the nearest existing folder above it. Checked before any work (a PermissionError traceback came after the
    data scan); os.access, as root passes every check, leaves a read-only mount to the write's own error."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write the run directory: {str(existing)!r} is not writable by this user. Received: "
                        f"{_output_given(path, typed)}. Choose a folder you can write to (--output RUN_DIR), or fix "
                        "its permissions.")


def save_model(model, run_dir: Path) -> None:
    """model.keras, read back before it replaces anything: a damaged archive never takes its place."""
    def save_and_check(temporary: Path) -> None:
        model.save(temporary)
        if problem := archive_problem(temporary):
            raise UserError(f"The model just saved to {str(temporary)!r} does not read back: {problem}. Check the "
                            "disk, then resume the run with --resume.")

    write_atomically(Path(run_dir) / MODEL_FILE, save_and_check)


def mark_complete(run_dir: Path) -> None:
    """Remove INCOMPLETE, once the files that make the run usable read back intact."""
    run_dir = Path(run_dir)
    if problem := archive_problem(run_dir / MODEL_FILE):
        raise UserError(f"{str(run_dir / MODEL_FILE)!r} is {problem}; the run stays INCOMPLETE. Resume it with "
                        f"python train.py --resume {shell_path(run_dir)}")
    read_json(run_dir / METADATA_FILE,
              f"The run stays INCOMPLETE. Resume it with python train.py --resume {shell_path(run_dir)}")
    (run_dir / INCOMPLETE_MARKER).unlink(missing_ok=True)
    if _active_run == run_dir:
        set_active_run(None)  # complete: an interrupt from here on leaves nothing to resume
    boundary("mark complete", run_dir / INCOMPLETE_MARKER)


# RUN_DIR/eval/NAME is written as .tmp-PID-NAME first, and its TensorBoard events set aside as eval_NAME.replaced:
# up to 18 bytes more than NAME in one folder name, of the 255 a file system takes. 200 leaves room for both.
REPORT_NAME_MAX_BYTES = 200


def check_report_name(name: str | None) -> None:
    """evaluate.py --name is one folder name under RUN_DIR/eval/: never a path that leads elsewhere
    (`--name ../../x` or an absolute path wrote the report outside the run directory), nor a name that fails only
    once the evaluation is done (too long for the file system) or that a later evaluation would delete (`.tmp-...`)."""
    if name is None:
        return
    if (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")
            or any(unicodedata.category(c) == "Cc" for c in name)):  # a newline split the printed "Report:" path
        raise UserError(f"--name must be a plain folder name (the report goes to RUN_DIR/eval/NAME/), without '/', "
                        f"'..' or control characters. Received: --name {name!r}")
    # An evaluation stages its report under data/atomic_write.temporary_name: a report named so would be taken
    # for what a killed evaluation left, and removed by the next one.
    if name.startswith(TEMPORARY_PREFIX):
        raise UserError(f"--name must not begin with {TEMPORARY_PREFIX!r}: evaluations stage their reports under such "
                        f"names, and the next evaluation would remove it as left over. Received: --name {name!r}. "
                        "Choose another name.")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > REPORT_NAME_MAX_BYTES:
        raise UserError(f"--name is too long: {size} bytes, at most {REPORT_NAME_MAX_BYTES} (the file system takes "
                        f"255 per folder name, and the evaluation is staged under a longer one). Received: --name "
                        f"{name[:40]!r}... Choose a shorter name.")


def _export_of(path: Path) -> str | None:
    """When `path` is an export (a SavedModel folder, a folder holding model.tflite, a .tflite file): the run it
    came from as its parity.json names it, or a hint where that is unknown. None for anything else."""
    folder = path if path.is_dir() else path.parent
    if not ((path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "model.tflite").is_file()))
            or (path.is_file() and path.suffix == ".tflite")):
        return None
    try:
        run = json.loads((folder / "parity.json").read_text(encoding="utf-8")).get("run_dir")
    except (OSError, ValueError, AttributeError):
        run = None
    return repr(run) if isinstance(run, str) else "by default an export of RUN_DIR is written under RUN_DIR/export/"


def lock_file_pid(handle: int) -> str:
    """The PID its holder wrote into an open RUN_DIR/.lock (app/run_lock.py), as text; "unknown" if none."""
    return os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "unknown"


def lock_holder(run_dir: Path) -> str | None:
    """The PID in RUN_DIR/.lock while a process holds it (app/run_lock.py: training, resuming), else None. Only
    looks: a shared lock tried and released at once, nothing written."""
    try:
        handle = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_file_pid(handle)
    except OSError:
        return None
    finally:
        os.close(handle)  # also releases the shared lock when it was taken
    return None


def require_complete_run(run_dir: str | Path) -> Path:
    """Check that `run_dir` is a finished run; raise UserError saying what is wrong otherwise."""
    run_dir = Path(run_dir).expanduser()
    export = _export_of(run_dir)
    if export is not None:  # a user who has just exported a run reaches for the export (it said "not found")
        raise UserError(f"{str(run_dir)!r} is a model written by export.py, not a run directory. Pass the run it was "
                        f"exported from ({export}); to evaluate the export itself: python evaluate.py RUN_DIR "
                        f"DATA_DIR --artifact {shell_path(run_dir)}.")
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "not found"
        raise UserError(f"Run directory {what}. Received: {str(run_dir)!r}. Pass a folder written by train.py.")
    if (run_dir / INCOMPLETE_MARKER).exists():
        trainer = lock_holder(run_dir)
        if trainer is not None:  # "continue it with --resume" would only be refused: it is being trained now
            raise UserError(f"{str(run_dir)!r} is an unfinished run that is being trained right now (by PID "
                            f"{trainer}). Wait for that training to finish, then run this command again.")
        raise UserError(f"{str(run_dir)!r} is an unfinished run (training did not complete). Continue it with python "
                        f"train.py --resume {shell_path(run_dir)}, or pick another run.")
    missing = [name for name in (MODEL_FILE, METADATA_FILE) if not (run_dir / name).is_file()]
    if missing:
        if (run_dir / CONFIG_FILE).is_file():  # a run of ours that lost files: how to get them back
            raise UserError(f"{str(run_dir)!r} is a damaged run directory: {', '.join(missing)} missing. "
                            f"{retrain_remedy(run_dir)}")
        raise UserError(f"{str(run_dir)!r} is not a metatune run directory: missing {missing}. Pass a folder "
                        "written by train.py.")
    return run_dir
