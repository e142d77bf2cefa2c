"""Classification heads."""

from __future__ import annotations

import keras


class ClassificationHead:
    """Dropout + Dense(softmax) layers, applied both to cached features and inside the task model.

    The same layer objects are used in the features-only head model (trained on
    cached features) and in the full task model, so training the first trains the
    second: no weight copying.
    """

    def __init__(self, num_classes: int, dropout: float = 0.2, seed: int | None = None):
        self.dropout = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")
        self.dense = keras.layers.Dense(
            num_classes,
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="head_dense",
        )

    def __call__(self, features):
        return self.dense(self.dropout(features))

    def features_model(self, feature_dim: int) -> keras.Model:
        features = keras.Input(shape=(feature_dim,), name="features")
        return keras.Model(features, self(features), name="head")
