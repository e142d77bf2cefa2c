"""Grad-CAM (Selvaraju et al. 2017) for image task models: where in the image the backbone's last
convolutional block saw evidence for a class.

The task model is raw pixels -> feature extractor (a nested keras.Model) -> [layers] -> head. The
heatmap needs the activations of the extractor's last spatial layer, which the saved model does
not expose, so a second model computes (those activations, the extractor's output) in one pass
over the same layers; the layers after the extractor are replayed on that output, so the
gradient of the class's log-probability flows back to the activations.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _extractor(task_model: keras.Model) -> keras.Model:
    for layer in task_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"{task_model.name!r} has no nested feature extractor")


def last_spatial_layer(extractor: keras.Model):
    """The last layer whose output is a feature map (batch, height, width, channels)."""
    for layer in reversed(extractor.layers):
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape and len(shape) == 4 and shape[1] and shape[1] > 1:
            return layer
    raise ValueError(f"{extractor.name!r} has no convolutional feature map to explain")


class GradCam:
    """heatmaps(images, classes): [n, height, width] in [0, 1], at the input's resolution."""

    def __init__(self, task_model: keras.Model):
        extractor = _extractor(task_model)
        self.layer = last_spatial_layer(extractor)
        self.maps = keras.Model(extractor.inputs, [self.layer.output, extractor.outputs[0]])
        names = [layer.name for layer in task_model.layers]
        self.after = task_model.layers[names.index(extractor.name) + 1:]

    def heatmaps(self, images: np.ndarray, classes) -> np.ndarray:
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            activations, features = self.maps(images, training=False)
            tape.watch(activations)
            x = features
            for layer in self.after:
                x = layer(x, training=False)
            picked = tf.gather(x, tf.convert_to_tensor(classes, tf.int32), axis=1, batch_dims=1)
            target = tf.math.log(picked + 1e-9)
        gradients = tape.gradient(target, activations)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-9)
        size = images.shape[1:3]
        return tf.image.resize(cam[..., None], size, method="bilinear")[..., 0].numpy()
