"""Predictions of an exported artifact for `evaluate.py --artifact`, on the files evaluate chose."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from app.artifacts import PARITY_FILE, InputSpec, load_predictor, locate
from app.errors import UserError
from app.run_dir import shell_path
from data.records import Example

logger = logging.getLogger(__name__)


def _label(kind: str, report: dict) -> str:
    """savedmodel, or litert-<quantization> (from the export's parity.json when it is there)."""
    if kind == "litert":
        quantize = report.get("quantize", "none")
        return f"litert-{'float32' if quantize == 'none' else quantize}"
    return kind


def _parity_report(kind: str, located: Path) -> dict:
    """The export's parity.json ({} when it is not there, or, with a warning, when it cannot be read: it only
    labels the report and names the exported run, and the artifact itself is checked as it loads)."""
    parity = (located if kind == "savedmodel" else located.parent) / PARITY_FILE
    if not parity.is_file():
        return {}
    try:
        report = json.loads(parity.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        report = error
    if not isinstance(report, dict):
        logger.warning("%s is unreadable or not an export's report (%s); evaluating the artifact without it (which "
                       "run it came from is then not checked)", parity, report if isinstance(report, Exception)
                       else type(report).__name__)
        return {}
    return report


def _check_exported_from(run, artifact: str | Path, report: dict) -> None:
    """A UserError when the export's parity.json says it was exported from another run (another class list or
    other output weights: the metadata's class_digest). Exports without it (copied without their parity.json,
    or written before it held the digest) can only be checked by their class count and input shape."""
    exported = report.get("class_digest")
    if exported is not None and run.metadata.class_digest is not None and exported != run.metadata.class_digest:
        raise UserError(f"{str(artifact)!r} was exported from another run ({report.get('run_dir', 'not named')}: "
                        f"its classes or weights differ from those of {str(run.path)!r}). Pass an export of this run "
                        f"(python export.py {shell_path(run.path)}).")


def predict_with_artifact(run, artifact: str | Path, examples: list[Example], batch_size: int) -> tuple[np.ndarray, dict]:
    """(probabilities [n, classes], what was evaluated) for `run`'s chosen examples through the artifact."""
    spec = InputSpec(run.modality, run.metadata.image_size, run.resize)
    report = _parity_report(*locate(artifact))  # read once: it labels the report and names the exported run
    _check_exported_from(run, artifact, report)
    kind, predictor = load_predictor(artifact, spec)
    logger.info("Evaluating the exported %s %s instead of model.keras", kind, artifact)
    probabilities = predictor.predict_examples(examples, batch_size)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(run.class_names):
        raise UserError(f"{str(artifact)!r} outputs {probabilities.shape[-1]} classes, the run has "
                        f"{len(run.class_names)}: it was exported from another run.")
    return probabilities, {"path": str(Path(artifact).expanduser().resolve()), "format": kind,
                           "label": _label(kind, report)}
