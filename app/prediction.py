"""Predict classes for files and folders with a saved run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import UserError
from app.evaluation import load_run
from data.images import IMAGE_EXTENSIONS, check_image
from data.scan import SkippedFile

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]]


def collect_inputs(targets: list[str]) -> tuple[list[str], list[SkippedFile]]:
    """Expand folders (recursively, sorted), keep readable images, report the rest."""
    candidates: list[Path] = []
    skipped: list[SkippedFile] = []
    for target in targets:
        path = Path(target).expanduser()
        if path.is_dir():
            candidates += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            candidates.append(path)
        else:
            skipped.append(SkippedFile(str(path), "no such file or folder"))
    usable = []
    for path in candidates:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(str(path), f"not an image file (extension {path.suffix or 'none'!r})"))
            continue
        ok, reason = check_image(str(path))
        if ok:
            usable.append(str(path))
        else:
            skipped.append(SkippedFile(str(path), reason))
    for item in skipped:
        logger.warning("Skipped %s: %s", item.path, item.reason)
    return usable, skipped


def predict(run_dir: str, targets: list[str], top_k: int = 3, batch_size: int = 32) -> tuple[list[Prediction], list[SkippedFile]]:
    if not targets:
        raise UserError("Give at least one image file or folder to predict.")
    run = load_run(run_dir)
    files, skipped = collect_inputs(targets)
    if not files:
        raise UserError(f"No readable images among the inputs ({len(skipped)} skipped; see the warnings above).")
    probabilities = run.predict_files(files, batch_size)
    k = max(1, min(top_k, len(run.class_names)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    predictions = [
        Prediction(file, [(run.class_names[j], float(probabilities[i, j])) for j in order[i]])
        for i, file in enumerate(files)
    ]
    return predictions, skipped
