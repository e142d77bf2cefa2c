"""Classification heads."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def class_indices(targets) -> tf.Tensor:
    """int32 class indices of a batch's head targets, whatever their form: indices, one-hot, or
    MixUp's blended one-hot (its argmax)."""
    targets = tf.convert_to_tensor(targets)
    return tf.argmax(targets, axis=-1, output_type=tf.int32) if targets.shape.rank == 2 else tf.cast(targets, tf.int32)


class ClassificationHead:
    """Dropout + Dense(softmax) layers (optionally a hidden ReLU layer first), applied both to cached features and inside the task model.

    The same layer objects are used in the features-only head model (trained on
    cached features) and in the full task model, so training the first trains the
    second: no weight copying.

    Every head layer computes in float32 whatever the global policy: under mixed
    precision the softmax output (and so the loss) must stay float32, as the Keras mixed
    precision guide advises for the last layer; float16 softmax can overflow or round
    small probabilities to zero. The head is tiny, so this costs nothing measurable.
    """

    def __init__(self, num_classes: int, dropout: float = 0.2, seed: int | None = None, hidden_units: int = 0):
        self.hidden = None
        if hidden_units:
            self.hidden = keras.layers.Dense(
                hidden_units, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=seed),
                name="head_hidden", dtype="float32",
            )
            # float32 too, or it would cast the hidden activations down to float16 between two float32 layers.
            self.hidden_dropout = keras.layers.Dropout(dropout, seed=seed, name="head_hidden_dropout", dtype="float32")
        self.dropout = keras.layers.Dropout(dropout, seed=seed, name="head_dropout", dtype="float32")
        self.dense = keras.layers.Dense(
            num_classes,
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="head_dense",
            dtype="float32",
        )

    @property
    def layers(self) -> list:
        """The layers with weights, input side first."""
        return [layer for layer in (self.hidden, self.dense) if layer is not None]

    def __call__(self, features):
        x = features
        if self.hidden is not None:
            x = self.hidden_dropout(self.hidden(self.dropout(x)))
            return self.dense(x)
        return self.dense(self.dropout(x))

    def features_model(self, feature_dim: int) -> keras.Model:
        features = keras.Input(shape=(feature_dim,), name="features")
        return keras.Model(features, self(features), name="head")

    @classmethod
    def written(cls, kernel, bias, seed: int | None = None) -> tuple["ClassificationHead", keras.Model]:
        """A head without dropout whose Dense weights are given (computed, not trained: prototypes,
        logistic regression), and its model on features: kernel [features, classes], bias [classes]."""
        kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
        head = cls(kernel.shape[1], 0.0, seed=seed)
        head_model = head.features_model(kernel.shape[0])  # builds the Dense layer
        head.dense.set_weights([kernel, bias])
        return head, head_model
