"""Opening a finished run's files without trusting them: every problem is one UserError naming the file.

A damaged run used to fail with whatever the reader raised: a truncated model.keras gave
"ValueError: File not found" (though the file was there), a garbled one BadZipFile, a broken
metadata.json JSONDecodeError, and metadata listing 9 classes for a 10-output model an
IndexError in predict.py. A model file holding code (a Lambda layer, a config naming a Python
function) is refused by Keras' safe mode; that refusal is reported the same way.

Metadata is also tied to the model it describes: `class_digest` hashes the class list with the
output layer's weights, so two class names swapped in metadata.json (which silently swapped the
predictions) no longer match the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from app import run_dir as rd
from app.errors import UserError
from app.run_dir import retrain_remedy
from app.run_metadata import RunMetadata
from data.resize import RESAMPLING
from models.task_model import load_task_model

logger = logging.getLogger(__name__)


def class_digest(model: keras.Model, class_names: list[str]) -> str:
    """SHA-256 of the class list and the output layer's weights (the last two of `model.weights`:
    the classifier Dense's kernel and bias, the layer whose columns the class list names)."""
    digest = hashlib.sha256(json.dumps(list(class_names)).encode("utf-8"))
    for weight in model.weights[-2:]:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight), dtype=np.float32).tobytes())
    return digest.hexdigest()


def load_model_file(path: Path, load: Callable[[str], keras.Model], remedy: str) -> keras.Model:
    """`load(path)` (a safe-mode loader: no code runs) of a saved Keras model; UserError when the
    file is damaged or unsafe."""
    if problem := rd.archive_problem(path):
        raise UserError(f"{str(path)!r} is {problem}. {remedy}")
    try:
        return load(str(path))
    except Exception as error:  # noqa: BLE001  whatever Keras raises for a bad or unsafe file, one line
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{str(path)!r} could not be loaded ({type(error).__name__}: {first_line}). Models are loaded "
                        f"in safe mode, so a file holding Python code (a Lambda layer, a function) is refused. "
                        f"{remedy}") from None


def open_run(path: str | Path) -> tuple[Path, RunMetadata, keras.Model]:
    """(run directory, metadata, model) of a finished run whose files agree with each other."""
    run_dir = rd.require_complete_run(path)
    metadata = RunMetadata.read(run_dir)
    model = load_model_file(run_dir / rd.MODEL_FILE, lambda file: load_task_model(file, metadata.modality),
                            retrain_remedy(run_dir))
    outputs = model.output_shape[-1]
    names = metadata.class_names
    if outputs != len(names):
        raise UserError(f"{str(run_dir / rd.METADATA_FILE)!r} lists {len(names)} classes but {str(run_dir / rd.MODEL_FILE)!r} "
                        f"has {outputs} outputs: the two files do not belong together. {retrain_remedy(run_dir)}")
    _require_model_of_modality(run_dir, metadata, model)
    if metadata.modality == "image" and tuple(model.input_shape[1:3]) != metadata.image_size:
        raise UserError(f"{str(run_dir / rd.METADATA_FILE)!r} gives the input size {list(metadata.image_size)} but "
                        f"{str(run_dir / rd.MODEL_FILE)!r} takes {list(model.input_shape[1:3])}: the two files do not "
                        f"belong together. {retrain_remedy(run_dir)}")
    saved = metadata.class_digest  # absent in runs trained before it existed
    if saved is not None and saved != class_digest(model, names):
        raise UserError(f"{str(run_dir / rd.METADATA_FILE)!r} does not match {str(run_dir / rd.MODEL_FILE)!r}: the class "
                        "list (its names or their order) or the model's output layer changed since training, so "
                        f"predictions would carry the wrong names. {retrain_remedy(run_dir)}")
    _warn_if_resized_otherwise(run_dir, metadata)
    return run_dir, metadata, model


# The task model's input, per modality: a batch of HxWx3 pixels, or a batch of strings.
INPUT_RANK = {"image": 4, "text": 1}


def _require_model_of_modality(run_dir: Path, metadata: RunMetadata, model: keras.Model) -> None:
    """metadata.json's modality must be the model's: an image model under a text run's metadata (same class
    count) loaded, then failed on the first prediction with a Keras traceback about input shapes."""
    shape = tuple(model.input_shape)
    if len(shape) != INPUT_RANK.get(metadata.modality, len(shape)):
        takes = "images" if len(shape) == INPUT_RANK["image"] else "texts" if len(shape) == INPUT_RANK["text"] else \
            f"inputs of shape {list(shape)}"
        raise UserError(f"{str(run_dir / rd.METADATA_FILE)!r} describes {metadata.modality} inputs but "
                        f"{str(run_dir / rd.MODEL_FILE)!r} takes {takes}: the two files do not belong together. "
                        f"{retrain_remedy(run_dir)}")


def _warn_if_resized_otherwise(run_dir: Path, metadata: RunMetadata) -> None:
    """An image run trained with another resize than today's sees slightly different pixels now: say so."""
    if metadata.modality != "image":
        return
    trained_with = metadata.input_spec.get("resampling", "pillow-bilinear (metatune before 2026-12-05)")
    if trained_with != RESAMPLING:
        logger.warning("%s was trained on images resized with %s; this metatune resizes with %s (data/resize.py), "
                       "so its inputs now differ slightly from the ones it was trained on (mostly by one level per "
                       "channel; more for images shrunk to less than half their size). Train it again for inputs "
                       "identical to training.", run_dir, trained_with, RESAMPLING)
