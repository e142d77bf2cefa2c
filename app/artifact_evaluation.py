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


def predict_with_artifact(run, artifact: str | Path, examples: list[Example], batch_size: int) -> tuple[np.ndarray, dict]:
    """(probabilities [n, classes], what was evaluated) for `run`'s chosen examples through the artifact."""
    spec = InputSpec(run.modality, run.metadata.image_size, run.resize)
    kind, predictor = load_predictor(artifact, spec)
    logger.info("Evaluating the exported %s %s instead of model.keras", kind, artifact)
    probabilities = predictor.predict_examples(examples, batch_size)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(run.class_names):
        raise UserError(f"{str(artifact)!r} outputs {probabilities.shape[-1]} classes, the run has "
                        f"{len(run.class_names)}: it was exported from another run.")
    return probabilities, {"path": str(Path(artifact).expanduser().resolve()), "format": kind,
                           "label": artifact_label(artifact)}
