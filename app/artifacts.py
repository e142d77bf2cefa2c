"""Exported artifacts (SavedModel folder, .tflite file) as predictors, for `evaluate.py --artifact`.

Each artifact is fed what its users feed it: a SavedModel gets the encoded file bytes through
`serving_default` (decoding happens in its graph) or raw texts; a .tflite gets uint8 pixels
decoded by the app (data/images.py, the run's size and resize mode), as an app on a device
decodes before calling the model. Files the SavedModel graph cannot decode (WebP, TIFF) go
through its `pixels` signature after the same decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import UserError
from data.images import load_image
from data.pipeline import read_texts
from data.records import Example
from data.tf_decode import graph_decodable

logger = logging.getLogger(__name__)
TFLITE_FILE = "model.tflite"
PARITY_FILE = "parity.json"
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class InputSpec:
    """How the run's model sees its inputs (metadata.json input_spec)."""

    modality: str
    image_size: tuple[int, int] | None
    resize: str


def locate(path: str | Path) -> tuple[str, Path]:
    """("savedmodel" | "litert", path of the SavedModel folder or .tflite file) for what the user gave."""
    given = Path(path).expanduser()
    if given.is_dir() and (given / SAVED_MODEL_FILE).is_file():
        return "savedmodel", given
    if given.is_dir() and (given / TFLITE_FILE).is_file():
        return "litert", given / TFLITE_FILE
    if given.is_file() and given.suffix == ".tflite":
        return "litert", given
    if not given.exists():
        raise UserError(f"Artifact not found. Received: --artifact {str(path)!r}. Pass a folder written by "
                        "export.py (a SavedModel, or one holding model.tflite) or a .tflite file.")
    raise UserError(f"Not an exported model: {str(path)!r} is neither a SavedModel folder (no saved_model.pb) "
                    "nor a .tflite file. Pass a folder written by export.py or a .tflite file.")


class SavedModelPredictor:
    def __init__(self, path: Path, spec: InputSpec):
        import tensorflow as tf

        self.tf, self.spec, self.path = tf, spec, path
        if spec.modality == "text":
            import tensorflow_text  # noqa: F401  (registers the WordPiece kernels the graph uses)
        try:
            loaded = tf.saved_model.load(str(path))
            self.serve = loaded.signatures["serving_default"]
            self.pixels = loaded.signatures.get("pixels")
        except Exception as error:  # TensorFlow raises many types for a damaged SavedModel
            if "Op type not registered" in str(error) and spec.modality == "image":
                # A text export's WordPiece ops are registered by tensorflow_text, which an image run never loads.
                raise UserError(f"The SavedModel {str(path)!r} needs ops this image run does not have "
                                f"({str(error).splitlines()[0][:120]}): it is the export of a text model. Pass an "
                                f"export of this run (python export.py RUN_DIR).") from None
            raise UserError(f"Cannot load the SavedModel {str(path)!r} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]}). Export it again with export.py.") from None
        self.loaded = loaded  # keeps the signatures' variables alive

    def predict_examples(self, examples: list[Example], batch_size: int) -> np.ndarray:
        tf = self.tf
        if self.spec.modality == "text":
            texts = read_texts([e.path for e in examples], [e.encoding for e in examples])
            return self._batched(lambda chunk: self.serve(inputs=tf.constant(chunk, tf.string)), texts, batch_size)
        contents = [Path(e.path).read_bytes() for e in examples]
        decodable = [graph_decodable(raw) is not None for raw in contents]
        out = [None] * len(examples)
        in_graph = [i for i, ok in enumerate(decodable) if ok]
        outside = [i for i, ok in enumerate(decodable) if not ok]
        if in_graph:
            probabilities = self._batched(lambda chunk: self.serve(inputs=tf.constant(chunk, tf.string)),
                                          [contents[i] for i in in_graph], batch_size)
            for i, row in zip(in_graph, probabilities):
                out[i] = row
        if outside:
            logger.info("%d file(s) in formats the SavedModel graph cannot decode (WebP, TIFF) go through its "
                        "pixels signature, decoded by Pillow", len(outside))
            pixels = [load_image(examples[i].path, self.spec.image_size, self.spec.resize) for i in outside]
            probabilities = self._batched(lambda chunk: self.pixels(pixels=tf.constant(np.stack(chunk))),
                                          pixels, batch_size)
            for i, row in zip(outside, probabilities):
                out[i] = row
        return np.stack(out) if out else np.zeros((0, 0), np.float32)

    def _batched(self, call, items, batch_size):
        parts = []
        for start in range(0, len(items), batch_size):
            try:
                parts.append(call(items[start:start + batch_size])["probabilities"].numpy())
            except self.tf.errors.OpError as error:
                # TensorFlow's first line can be bare ("Graph execution error:"): its last names the failing op.
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                detail = lines[0] if len(lines) < 2 or len(lines[0]) > 30 else f"{lines[0]} {lines[-1]}"
                raise UserError(f"The SavedModel {str(self.path)!r} failed on a batch of this run's "
                                f"{self.spec.modality} inputs ({detail[:240]}). If it is an export of another run "
                                f"(another modality or input size), pass an export of this one (python export.py "
                                f"RUN_DIR); otherwise export it again.") from None
        return np.concatenate(parts)


class LiteRTPredictor:
    def __init__(self, path: Path, spec: InputSpec):
        from app.litert_export import LiteRTClassifier

        if spec.modality != "image":
            raise UserError(f"{str(path)!r} is a LiteRT model, but the run is a {spec.modality} model; LiteRT "
                            "exports exist for image runs only. Pass the run's SavedModel export.")
        try:
            self.model = LiteRTClassifier(str(path))
        except (ValueError, RuntimeError) as error:
            raise UserError(f"Cannot load the LiteRT model {str(path)!r} ({str(error).splitlines()[0][:200]}). "
                            "The file is damaged or not a .tflite model; export it again with export.py.") from None
        expected = (spec.image_size[0], spec.image_size[1], 3)
        if self.model.input_shape[1:] != expected:
            raise UserError(f"{str(path)!r} takes inputs of shape {self.model.input_shape[1:]}, but the run's "
                            f"model takes {expected}: it was exported from another run.")
        self.spec = spec

    def predict_examples(self, examples: list[Example], batch_size: int) -> np.ndarray:
        parts = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            pixels = np.stack([load_image(e.path, self.spec.image_size, self.spec.resize) for e in chunk])
            parts.append(self.model.predict(pixels))
        return np.concatenate(parts)


def load_predictor(path: str | Path, spec: InputSpec):
    """(format, predictor) for an exported artifact; a damaged one is a UserError, not a traceback."""
    kind, located = locate(path)
    predictor = SavedModelPredictor(located, spec) if kind == "savedmodel" else LiteRTPredictor(located, spec)
    return kind, predictor
