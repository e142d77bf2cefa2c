"""What train.py refuses about its data folder and where its run goes, before any work: a run directory given or
kept as data, a run directory placed inside the data folder, a split layout with nothing to train on. evaluate.py's
DATA_DIR and train.py's --meta-data refuse a run kept inside them here too (`refuse_runs_inside`)."""

from __future__ import annotations

import os
from pathlib import Path

from app import run_dir as rd
from app.config import TrainConfig
from app.errors import UserError
from data.errors import DataError
from data.scan import SPLIT_NAMES, ScanResult


def refuse_runs_as_data(data_dir: str) -> None:
    """A UserError when DATA_DIR is a run directory, or holds one where the scan would read it as a class."""
    folder = Path(data_dir).expanduser()
    if rd.holds_a_run(folder):
        raise UserError(_run_given_as_data(data_dir, folder))
    refuse_runs_inside(data_dir, "training data")


def refuse_runs_inside(data_dir: str, read_as: str) -> None:
    """A UserError when a data folder (train.py's DATA_DIR and --meta-data, evaluate.py's DATA_DIR) holds a run
    directory where the scan would read it as a class; `read_as` says what its files would have been taken for."""
    inside = _runs_among_class_folders(Path(data_dir).expanduser())
    if inside:
        # A run kept in the data folder (--output DATA_DIR/run, or the default runs/ of a command started in it):
        # its logs/ sprite became a class of the next run ("Too few training examples in classes {'run': 1}"), or,
        # with two runs there, a class trained on without a word; evaluate.py called it a class the model "was not
        # trained on: ['run']".
        raise UserError(f"The data folder {data_dir!r} holds a run directory written by train.py: {str(inside[0])!r}"
                        f"{f' (and {len(inside) - 1} more)' if len(inside) > 1 else ''}, whose files would be read as "
                        f"{read_as}. Move runs out of the data folder (keep them beside it: --output RUN_DIR), "
                        "then run the same command again.")


def _run_given_as_data(data_dir: str, folder: Path) -> str:
    shown = rd.shell_path(folder)
    if (folder / rd.INCOMPLETE_MARKER).exists():
        return (f"DATA_DIR {data_dir!r} is an unfinished run directory (written by train.py), not a data folder. "
                f"Continue that run with python train.py --resume {shown}, or pass the folder of class subfolders "
                "to train on as DATA_DIR.")
    return (f"DATA_DIR {data_dir!r} is a run directory (written by train.py), not a data folder. Pass the folder "
            f"of class subfolders to train on as DATA_DIR. To use the run: evaluate.py {shown} DATA_DIR scores it, "
            f"predict.py {shown} FILES labels files, and python train.py DATA_DIR --backbone {shown} trains a new "
            "classifier on its learned features.")


def _runs_among_class_folders(folder: Path) -> list[Path]:
    """Run directories where the scan looks for classes (the top level, or inside the split folders), or one level
    below them (a runs/ folder of them). Hidden folders are left out, as the scan leaves them out."""
    top = _visible_subfolders(folder)
    class_folders = top + [inner for split in top if split.name in SPLIT_NAMES for inner in _visible_subfolders(split)]
    found = []
    for candidate in class_folders:
        found += [path for path in [candidate, *_visible_subfolders(candidate)] if rd.holds_a_run(path)]
    return sorted(set(found))


def _visible_subfolders(folder: Path) -> list[Path]:
    """Subfolders by the directory entries' types (a class folder of thousands of files costs no stat of each);
    nothing where the folder cannot be listed: the scan that follows reports it."""
    try:
        with os.scandir(folder) as entries:
            return [Path(entry.path) for entry in entries
                    if not entry.name.startswith(".") and _is_folder(entry)]
    except OSError:
        return []


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a symlink, as the scan does
    except OSError:
        return False


def refuse_output_inside_data(config: TrainConfig, output: Path, typed: bool) -> None:
    """A UserError when a new run directory would be the data folder or lie inside it (DATA_DIR, --meta-data): the
    run's files were then scanned as a class by the next run or evaluation on that folder. Made once the data is
    checked (a data folder's own error comes first) and before the run directory exists. `typed`: `output` is
    --output, not the default run directory (runs/<name> in the current folder)."""
    for option, data_dir in (("DATA_DIR", config.data_dir), ("--meta-data", config.meta_data)):
        if not data_dir:
            continue
        data = Path(os.path.realpath(Path(data_dir).expanduser()))
        where = Path(os.path.realpath(output.expanduser()))  # realpath: never raises, even on a symlink loop
        if where != data and data not in where.parents:
            continue
        given = (f"--output {str(output)!r}" if typed else
                 f"the default run directory {str(output)!r} (under runs/ in the current folder: {str(where)!r})")
        remedy = ("Choose a run directory outside the data folder (--output NEW_DIR)" if typed else
                  "Run the command from another folder, or pass --output RUN_DIR outside the data folder")
        place = "the data folder itself" if where == data else "inside the data folder"
        raise UserError(f"The run directory would be {place} ({option} {data_dir!r}), where the next "
                        f"scan of that folder would read the run's files as a class. Received: {given}. {remedy}.")


def require_training_files(scan: ScanResult) -> None:
    """A split layout whose train/ holds no usable file (only val/ and test/, or an empty train/) is refused: its
    run failed after the run directory was made, in a TensorFlow traceback ("buffer_size must be greater than
    zero"), leaving an INCOMPLETE run."""
    if scan.layout != "split" or any(example.split == "train" for example in scan.examples):
        return
    present = ", ".join(f"{split}/" for split in scan.splits_present())
    raise DataError(f"{scan.root!r} is laid out in split folders ({present}) but train/ holds no usable file, so "
                    "there is nothing to train on. Received: that folder. Put the training files in "
                    "DATA_DIR/train/<class>/<files> (val/ and test/ are optional); to score a finished run on these "
                    "files, use evaluate.py RUN_DIR DATA_DIR.")
