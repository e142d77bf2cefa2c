"""The files predict.py and evaluate.py --unknown are given: folders expanded, unusable files reported."""

from __future__ import annotations

import logging
from pathlib import Path

from data.doctor import inspect_file
from data.images import IMAGE_EXTENSIONS
from data.records import Example, SkippedFile
from data.scan import TEXT_EXTENSIONS, visible_files

logger = logging.getLogger(__name__)


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
            skipped.append(SkippedFile(str(path), "no such file or folder"))
    extensions = IMAGE_EXTENSIONS if modality == "image" else TEXT_EXTENSIONS
    article = "an" if modality == "image" else "a"
    usable: list[Example] = []
    for path in candidates:
        if path.suffix.lower() not in extensions:
            skipped.append(SkippedFile(str(path), f"not {article} {modality} file (extension {path.suffix or 'none'!r})"))
            continue
        check = inspect_file(str(path), modality)
        if check.usable:
            usable.append(Example(str(path), -1, None, check.sha256, check.encoding))
        else:
            skipped.append(SkippedFile(str(path), check.reason))
    for item in skipped:
        logger.warning("Skipped %s: %s", item.path, item.reason)
    return usable, skipped
