"""Predictions of an exported artifact for `evaluate.py --artifact`, on the files evaluate chose."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.artifacts import PARITY_FILE, InputSpec, load_predictor, locate
from app.errors import UserError
from data.records import Example

logger = logging.getLogger(__name__)


def artifact_label(path: str | Path) -> str:
    """savedmodel, or litert-<quantization> (from the export's parity.json when it is there)."""
    kind, located = locate(path)
    parity = (located if kind == "savedmodel" else located.parent) / PARITY_FILE
    if kind == "litert" and parity.is_file():
        quantize = rd.read_json(parity).get("quantize", "none")
        return f"litert-{'float32' if quantize == 'none' else quantize}"
    return kind


def check_exported_from(run, artifact: str | Path) -> None:
    """A UserError when the export's parity.json says it was exported from another run (another class list or
    other output weights: the metadata's class_digest). Exports without it (copied without their parity.json,
    or written before it held the digest) can only be checked by their class count and input shape."""
    kind, located = locate(artifact)
    parity = (located if kind == "savedmodel" else located.parent) / PARITY_FILE
    report = rd.read_json(parity) if parity.is_file() else {}
    exported = report.get("class_digest")
    if exported is not None and run.metadata.class_digest is not None and exported != run.metadata.class_digest:
        raise UserError(f"{str(artifact)!r} was exported from another run ({report.get('run_dir', 'not named')}: "
                        f"its classes or weights differ "
                        f"from {str(run.path)!r}'s). Pass an export of this run (python export.py {run.path}).")


def predict_with_artifact(run, artifact: str | Path, examples: list[Example], batch_size: int) -> tuple[np.ndarray, dict]:
    """(probabilities [n, classes], what was evaluated) for `run`'s chosen examples through the artifact."""
    spec = InputSpec(run.modality, run.metadata.image_size, run.resize)
    check_exported_from(run, artifact)
    kind, predictor = load_predictor(artifact, spec)
    logger.info("Evaluating the exported %s %s instead of model.keras", kind, artifact)
    probabilities = predictor.predict_examples(examples, batch_size)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(run.class_names):
        raise UserError(f"{str(artifact)!r} outputs {probabilities.shape[-1]} classes, the run has "
                        f"{len(run.class_names)}: it was exported from another run.")
    return probabilities, {"path": str(Path(artifact).expanduser().resolve()), "format": kind,
                           "label": artifact_label(artifact)}
