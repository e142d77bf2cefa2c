"""Write a run's classifier as a SavedModel for TF Serving: file bytes or texts in, probabilities out.

Through Keras' ExportArchive, not `tf.saved_model.save`, which loses input names and dtypes
of Keras 3 models (keras-team/keras#19458). Decoding and resizing (image runs, with the
run's resize mode, pixel-identical to training: data/tf_decode.py) and tokenisation (text
runs: the tokenizer is a layer of the model) happen inside the graph, so a client sends
what it has: encoded image files or raw strings.

A run with an unknown-class detector (unknown.json) exports it too: both signatures then also
return `unknown_score` and `unknown` (app/unknown_graph.py), computed from the same forward pass
(the model's embedding, the input of `head_dense`, next to its probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from app.open_set import embedding_model
from app.run_metadata import RunMetadata
from app.unknown_graph import UnknownServing
from data.tf_decode import decode_images

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "pixels"
INPUT_NAME = "inputs"


@dataclass(frozen=True)
class ServingSpec:
    """What the exported graph needs to know about the run (from metadata.json)."""

    class_names: list[str]
    modality: str  # "image" or "text"
    image_size: tuple[int, int] | None = None
    resize: str = "stretch"
    unknown: UnknownServing | None = None  # the run's detector: serving rejects as predict.py does

    @classmethod
    def from_metadata(cls, metadata: RunMetadata, unknown: UnknownServing | None = None) -> "ServingSpec":
        return cls(list(metadata.class_names), metadata.modality, metadata.image_size, metadata.resize, unknown)


def write_savedmodel(model: keras.Model, spec: ServingSpec, path: str) -> None:
    """Signatures serving_default {inputs: tf.string [batch]} and, for images, pixels {uint8 [batch, H, W, 3]};
    both return probabilities (float32 [batch, classes], class_names order) and top_class (tf.string [batch]),
    and with spec.unknown also unknown_score (float32 [batch]) and unknown (bool [batch]). A batch of 0 inputs
    returns those outputs with 0 rows (_unless_empty)."""
    names = tf.constant(spec.class_names)
    score = spec.unknown.score_function() if spec.unknown else None
    forward = embedding_model(model) if spec.unknown else model

    def outputs(inputs):
        result = forward(inputs, training=False)
        probabilities = tf.cast(result[1] if score else result, tf.float32)
        served = {"probabilities": probabilities, "top_class": tf.gather(names, tf.argmax(probabilities, axis=-1))}
        if score:
            served["unknown_score"], served["unknown"] = score(result[0])
        return served

    def empty_outputs():
        return _empty_outputs(len(spec.class_names), with_unknown=score is not None)

    archive = _archive()
    if spec.modality == "image":
        height, width = spec.image_size

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
        def serve(inputs):
            return _unless_empty(inputs, lambda: outputs(decode_images(inputs, (height, width), spec.resize)),
                                 empty_outputs)

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name=PIXELS_SIGNATURE)])
        def pixels(pixels):
            return _unless_empty(pixels, lambda: outputs(pixels), empty_outputs)

        archive.add_endpoint(PIXELS_SIGNATURE, pixels)
    else:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
        def serve(inputs):
            return _unless_empty(inputs, lambda: outputs(inputs), empty_outputs)

    archive.add_endpoint(SERVING_SIGNATURE, serve)
    archive.write_out(path, verbose=False)


def _unless_empty(batch: tf.Tensor, compute, empty):
    """compute() for a batch of at least one input, else empty(): a request of 0 inputs gets 0 outputs.

    Why: TensorFlow 2.21's oneDNN Conv2D (on by default on x86 CPUs, where a SavedModel is usually served)
    returns an empty batch's input unchanged, so the next layer failed ("Incompatible shapes: [8] vs.
    [0,32,32,3]") instead of the signature returning nothing. The model does not run at all on an empty
    batch, whatever the server's kernels: no layer has to get an empty batch right."""
    return tf.cond(tf.shape(batch)[0] > 0, compute, empty)


def _empty_outputs(classes: int, with_unknown: bool) -> dict[str, tf.Tensor]:
    """What `outputs` returns for 0 inputs: the same keys and dtypes (tf.cond needs both branches alike)."""
    served = {"probabilities": tf.zeros([0, classes], tf.float32), "top_class": tf.zeros([0], tf.string)}
    if with_unknown:
        served["unknown_score"], served["unknown"] = tf.zeros([0], tf.float32), tf.zeros([0], tf.bool)
    return served


def write_pixels_savedmodel(model: keras.Model, image_size: tuple[int, int], path: str) -> None:
    """uint8 pixels -> probabilities only: what the LiteRT converter takes (decoding ops are not LiteRT builtins)."""
    height, width = image_size
    archive = _archive()

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name=PIXELS_SIGNATURE)])
    def pixels(pixels):
        return {"probabilities": tf.cast(model(pixels, training=False), tf.float32)}

    archive.add_endpoint(SERVING_SIGNATURE, pixels)
    archive.write_out(path, verbose=False)


def _archive() -> keras.export.ExportArchive:
    """An ExportArchive without `track(model)`: Keras 3.15 keeps the variables the endpoints use by
    itself, and tracking the model as well stored every weight twice (measured: an EfficientNet-Lite0
    SavedModel of 30 MiB instead of 17; the same outputs either way)."""
    return keras.export.ExportArchive()
