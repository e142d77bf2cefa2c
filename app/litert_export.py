"""Convert an image classifier to LiteRT (.tflite) and run .tflite files.

The converter reads a pixels-in SavedModel (`write_pixels_savedmodel`): converting from a
SavedModel is the path that works for Keras 3 models (`from_keras_model` fails on many,
keras-team/keras#19108), and image decoding ops are not LiteRT builtins, so on a device the
app decodes and resizes (as training did: the run's size and resize mode) and hands uint8
pixels [batch, H, W, 3] to the model. Builtin ops only: a model that needed the Flex
delegate (TensorFlow ops) would not run on phones or microcontrollers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def convert_to_litert(pixels_savedmodel: str, quantize: str,
                      representative: Callable[[], Iterable[np.ndarray]] | None = None) -> bytes:
    """none: float32; float16: float16 weights; dynamic: int8 weights, float activations;
    int8: int8 weights and activations calibrated on `representative` uint8 images [H, W, 3]."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}. Received: {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(pixels_savedmodel)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs representative images")

        def samples():
            for image in representative():
                yield [np.asarray(image, np.uint8)[np.newaxis]]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # The model's input is already uint8 pixels (cast to float inside): no input scale to
        # calibrate, so a device feeds raw pixels. Outputs stay float32 probabilities.
        converter.inference_input_type = tf.uint8
    return converter.convert()


def make_interpreter(model_path: str):
    """The ai-edge-litert interpreter (what devices run); TensorFlow's copy if it is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is pinned in requirements.txt
        logger.info("ai-edge-litert is not installed; using tf.lite.Interpreter")
        Interpreter = tf.lite.Interpreter
    # One thread per core, as TensorFlow uses them: LiteRT's default is a single thread.
    return Interpreter(model_path=model_path, num_threads=os.cpu_count() or 1)


class LiteRTClassifier:
    """A .tflite classifier: uint8 pixels [batch, H, W, 3] -> float32 probabilities [batch, classes]."""

    def __init__(self, model_path: str):
        self.interpreter = make_interpreter(model_path)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if len(pixels) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(pixels.shape))
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input["index"], pixels.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if scale:  # a quantized output: back to probabilities
            out = (out.astype(np.float32) - zero_point) * scale
        return np.asarray(out, np.float32)
