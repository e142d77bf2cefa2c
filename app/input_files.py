"""The files predict.py and evaluate.py --unknown are given: folders expanded, unusable files reported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from data.doctor import check_files
from data.records import Example, SkippedFile
from data.scan import shortened, shown_path, skipped_by_name, visible_files, warn_skipped

logger = logging.getLogger(__name__)


def _once_each(paths: list[Path]) -> list[Path]:
    """`paths` without repeats (a file given on its own and inside a folder given too was predicted twice), in
    their order; `a/./b.png` and `a/b.png` are one file, a symbolic link another name of its own."""
    seen: set[str] = set()
    kept = []
    for path in paths:
        if (key := os.path.abspath(path)) not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def read_file_list(source: str) -> list[str]:
    """The paths a --files-from list names, one per line (`-`: standard input), for a list too long for a
    command line or made by another program (`find ... | predict.py RUN_DIR --files-from -`). Bytes as the
    file system's (a name that is not UTF-8 stays that file's name); a line's trailing carriage return (a list
    written on Windows) and blank lines are dropped. A name holding a newline cannot be listed: pass it, or
    its folder, as an argument. The list itself may be a pipe (`--files-from <(find ...)` names one): read to its
    end as `cat` would, unlike the files it names, which are skipped unopened unless regular (data/file_kinds.py)."""
    import sys

    from app.errors import UserError

    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(Path(source).expanduser(), "rb") as stream:
                raw = stream.read()
    except OSError as error:
        raise UserError(f"--files-from cannot read {source!r}: {error.strerror or error}. Received: --files-from "
                        f"{source}. Pass a file that lists one path per line, or - for standard input.") from None
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")]
    return [os.fsdecode(line) for line in lines if line.strip()]


def collect_inputs(targets: list[str], modality: str) -> tuple[list[Example], list[SkippedFile]]:
    """Expand folders (recursively, sorted), keep files the doctor accepts, report the rest."""
    candidates: list[Path] = []
    skipped: list[SkippedFile] = []
    for target in targets:
        path = Path(target).expanduser()
        try:
            if path.is_dir():
                candidates += visible_files(path)  # follows symlinked folders, as train.py does
            elif path.exists():  # a file; a FIFO, socket or device too: the data doctor skips that one unopened
                candidates.append(path)
            elif path.is_symlink():  # `ls` lists it, so "no such file" read as wrong
                skipped.append(SkippedFile(shown_path(path), "a symbolic link to nothing (its target is missing, or "
                                                             "links lead back to themselves)"))
            elif target == "-":  # a Unix habit: read as a file named "-", with no word of what was meant
                skipped.append(SkippedFile(target, "no such file or folder (for paths on standard input, one per line: "
                                                   "--files-from -; for a text to classify: --text STRING)"))
            else:
                skipped.append(SkippedFile(shown_path(path), "no such file or folder"))
        except OSError as error:  # a name over 255 bytes (a line of text in a --files-from list): one input skipped
            reason = f"cannot be looked up ({error.strerror or error})"
            skipped.append(SkippedFile(shortened(shown_path(path)), reason))
    named: list[Path] = []
    for path in _once_each(candidates):
        if (skip := skipped_by_name(path, modality)) is not None:
            skipped.append(skip)
        else:
            named.append(path)
    # In parallel, with a progress bar on a terminal, as the training scan checks its files: one at a time, a large
    # folder was minutes of silence. No doctor cache: these files are not a dataset's, and may be anywhere.
    checks = check_files([str(path) for path in named], modality, Path("."), use_cache=False)
    usable: list[Example] = []
    for path, check in zip(named, checks):
        if check.usable:
            usable.append(Example(str(path), -1, None, check.sha256, check.encoding))
        else:
            skipped.append(SkippedFile(str(path), check.reason))
    warn_skipped(skipped)  # predict.py --json lists them all
    return usable, skipped
