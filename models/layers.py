"""Custom layers: registered and serializable (no Lambda), so models load with safe_mode=True."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="metatune")
class ImageNormalization(keras.layers.Layer):
    """uint8/float pixels in [0, 255] -> (x[, reversed channels] - mean) / std, in float32.

    Why a custom layer: `keras.applications.resnet50.preprocess_input` is a
    function (RGB -> BGR, subtract the ImageNet mean) and would have to travel as
    a Lambda; this carries the same arithmetic as plain config.
    """

    def __init__(self, mean, std=(1.0, 1.0, 1.0), reverse_channels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.reverse_channels = bool(reverse_channels)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0. Received: mean={mean}, std={std}")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.reverse_channels:
            x = ops.flip(x, axis=-1)
        return (x - ops.convert_to_tensor(self.mean, self.compute_dtype)) / ops.convert_to_tensor(self.std, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"mean": self.mean, "std": self.std, "reverse_channels": self.reverse_channels}


@keras.saving.register_keras_serializable(package="metatune")
class SequencePooling(keras.layers.Layer):
    """(token vectors, padding mask) -> one vector: masked mean, or the first ([CLS]) token.

    Sentence-transformer checkpoints (all-MiniLM-L6-v2) are trained for the masked
    mean; classic BERT classifiers use [CLS].
    """

    MODES = ("mean", "cls")

    def __init__(self, mode: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"pooling must be one of {self.MODES}. Received: pooling={mode!r}")
        self.mode = mode

    def call(self, sequence, padding_mask):
        if self.mode == "cls":
            return sequence[:, 0, :]
        mask = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), axis=-1)
        total = ops.sum(sequence * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return total / count

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        return super().get_config() | {"mode": self.mode}


@keras.saving.register_keras_serializable(package="metatune")
class RGBToGrayscale(keras.layers.Layer):
    """RGB (..., 3) -> one luma channel (..., 1), ITU-R 601 weights as Pillow's "L" and tf.image use.

    Why a layer: Omniglot-like data is black on white; one channel cuts the first
    convolution's weights by three and the model still takes the RGB pixels every
    other stage produces (data/images.py always decodes to RGB).
    """

    LUMA = (0.299, 0.587, 0.114)

    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError(f"RGBToGrayscale needs 3 input channels. Received: input_shape={tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        weights = ops.convert_to_tensor(self.LUMA, self.compute_dtype)
        return ops.sum(x * weights, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)
