"""The files predict.py and evaluate.py --unknown are given: folders expanded, unusable files reported."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from data.doctor import inspect_file
from data.records import Example, SkippedFile
from data.scan import shown_path, skipped_by_name, visible_files

logger = logging.getLogger(__name__)
# Skipped files named one warning each, up to this many; the rest are counted in one more line (a folder of
# the wrong kind of files gave one warning per file before the error). predict.py --json lists them all.
MAX_SKIP_WARNINGS = 10


def collect_inputs(targets: list[str], modality: str) -> tuple[list[Example], list[SkippedFile]]:
    """Expand folders (recursively, sorted), keep files the doctor accepts, report the rest."""
    candidates: list[Path] = []
    skipped: list[SkippedFile] = []
    for target in targets:
        path = Path(target).expanduser()
        if path.is_dir():
            candidates += visible_files(path)  # follows symlinked folders, as train.py does
        elif path.is_file():
            candidates.append(path)
        else:
            skipped.append(SkippedFile(shown_path(path), "no such file or folder"))
    usable: list[Example] = []
    for path in candidates:
        if (skip := skipped_by_name(path, modality)) is not None:
            skipped.append(skip)
            continue
        check = inspect_file(str(path), modality)
        if check.usable:
            usable.append(Example(str(path), -1, None, check.sha256, check.encoding))
        else:
            skipped.append(SkippedFile(str(path), check.reason))
    for item in skipped[:MAX_SKIP_WARNINGS]:
        logger.warning("Skipped %s: %s", item.path, item.reason)
    if len(skipped) > MAX_SKIP_WARNINGS:
        reasons = Counter(item.reason for item in skipped[MAX_SKIP_WARNINGS:])
        more = len(skipped) - MAX_SKIP_WARNINGS
        logger.warning("Skipped %d more file%s: %s", more, "s" if more > 1 else "",
                       "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
                       + ("; ..." if len(reasons) > 3 else ""))
    return usable, skipped
