"""Grad-CAM (Selvaraju et al. 2017) for image task models: where in the image the backbone's last
convolutional block saw evidence for a class.

The task model is raw pixels -> feature extractor -> [layers] -> head, and real extractors nest
models inside models (EfficientNet-Lite0's features: pixels -> normalize -> efficientnet_lite0;
a `--backbone RUN_DIR` run wraps that again with the source run's embedding). The heatmap needs
the activations of the backbone's last feature map (efficientnet_lite0's head_relu6, 7x7x1280 at
224 px), deep inside, which no saved model exposes. So `_Split` computes (those activations, the
task model's output) in one pass over the same layers: at the level that holds the feature map
directly, a functional sub-model with both outputs (any graph: residual blocks included); at the
levels above, the layers of the chain replayed in order around the nested model that leads
there (checked once against the task model on a probe image). The gradient of the class's
log-probability then flows back to the activations.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _is_spatial(layer) -> bool:
    shape = getattr(layer, "output", None) is not None and layer.output.shape
    return bool(shape) and len(shape) == 4 and bool(shape[1]) and shape[1] > 1


def _holds_spatial(layer) -> bool:
    return isinstance(layer, keras.Model) and any(_is_spatial(sub) or _holds_spatial(sub) for sub in layer.layers)


def _last_explainable(model: keras.Model):
    """The layer of `model` that leads to its last feature map: a nested model holding one, or the map itself.
    Nested models come first: the backbone's own last map beats a map before it (the input normalisation)."""
    for layer in reversed(model.layers):
        if _holds_spatial(layer) or (not isinstance(layer, keras.Model) and _is_spatial(layer)):
            return layer
    raise ValueError(f"{model.name!r} has no convolutional feature map to explain")


class _Split:
    """model(x) -> (activations of its last feature map, its output), in one pass."""

    def __init__(self, model: keras.Model, top: bool = False):
        target = _last_explainable(model)
        self.softmax_dense = None  # top level: the final softmax Dense, left for GradCam to apply without softmax
        if not isinstance(target, keras.Model):
            self.direct = keras.Model(model.inputs, [target.output, model.outputs[0]])
            self.layer = target
            return
        self.direct = None
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        at = layers.index(target)
        self.before, self.inner, self.after = layers[:at], _Split(target), layers[at + 1:]
        self.layer = self.inner.layer
        last = self.after[-1] if self.after else None
        if top and isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
            self.softmax_dense = self.after.pop()

    def __call__(self, x):
        if self.direct is not None:
            return self.direct(x, training=False)
        for layer in self.before:
            x = layer(x, training=False)
        activations, x = self.inner(x)
        for layer in self.after:
            x = layer(x, training=False)
        return activations, x


class GradCam:
    """heatmaps(images, classes): [n, height, width] in [0, 1], at the input's resolution."""

    def __init__(self, task_model: keras.Model):
        self.split = _Split(task_model, top=True)
        self.layer = self.split.layer
        self._check_replay(task_model)

    def _scores(self, images):
        """(feature-map activations, class logits or, without a final softmax Dense, probabilities, is_logits)."""
        activations, x = self.split(images)
        dense = self.split.softmax_dense
        if dense is None:
            return activations, x, False
        return activations, tf.matmul(tf.cast(x, dense.kernel.dtype), dense.kernel) + dense.bias, True

    def _check_replay(self, task_model: keras.Model) -> None:
        """The replayed layers must compute the task model itself: true when every level above the feature map
        is a chain of layers (each takes the previous one's output), which Keras does not expose for nested
        models, so it is checked on one probe image."""
        shape = task_model.inputs[0].shape[1:]
        if any(d is None for d in shape):
            return
        probe = np.broadcast_to(np.linspace(0, 255, shape[1], dtype=np.float32)[None, :, None], shape)
        probe = tf.constant(probe[None].astype(task_model.inputs[0].dtype))
        _, replayed, is_logits = self._scores(probe)
        replayed = tf.nn.softmax(replayed) if is_logits else replayed
        expected = task_model(probe, training=False)
        if not np.allclose(np.asarray(replayed), np.asarray(expected), rtol=1e-4, atol=1e-5):
            raise ValueError(f"{task_model.name!r} is not a chain of layers around its backbone: no Grad-CAM "
                             "through it")

    def heatmaps(self, images: np.ndarray, classes) -> np.ndarray:
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            activations, scores, is_logits = self._scores(images)
            tape.watch(activations)
            chosen = tf.one_hot(tf.convert_to_tensor(classes, tf.int32), tf.shape(scores)[1])
            # The class's log-odds, log p / (1 - p): from the logits where the head is a softmax Dense (a
            # confident head's probabilities round to exactly 0 and 1 in float32, leaving no gradient), else
            # from the probabilities, with 1 - p summed over the other classes.
            if is_logits:
                others = tf.reduce_logsumexp(tf.where(chosen > 0, tf.constant(-1e30, scores.dtype), scores), axis=1)
                target = tf.reduce_sum(scores * chosen, axis=1) - others
            else:
                picked = tf.reduce_sum(scores * chosen, axis=1)
                target = tf.math.log(picked + 1e-30) - tf.math.log(tf.reduce_sum(scores * (1.0 - chosen), axis=1) + 1e-30)
        gradients = tape.gradient(target, activations)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))
        cam = cam / (tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-9)
        size = images.shape[1:3]
        return tf.image.resize(cam[..., None], size, method="bilinear")[..., 0].numpy()
