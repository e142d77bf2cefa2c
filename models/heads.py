"""Classification heads."""

from __future__ import annotations

import keras


class ClassificationHead:
    """Dropout + Dense(softmax) layers (optionally a hidden ReLU layer first), applied both to cached features and inside the task model.

    The same layer objects are used in the features-only head model (trained on
    cached features) and in the full task model, so training the first trains the
    second: no weight copying.
    """

    def __init__(self, num_classes: int, dropout: float = 0.2, seed: int | None = None, hidden_units: int = 0):
        self.hidden = None
        if hidden_units:
            self.hidden = keras.layers.Dense(
                hidden_units, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=seed),
                name="head_hidden",
            )
            self.hidden_dropout = keras.layers.Dropout(dropout, seed=seed, name="head_hidden_dropout")
        self.dropout = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")
        self.dense = keras.layers.Dense(
            num_classes,
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="head_dense",
        )

    def __call__(self, features):
        x = features
        if self.hidden is not None:
            x = self.hidden_dropout(self.hidden(self.dropout(x)))
            return self.dense(x)
        return self.dense(self.dropout(x))

    def features_model(self, feature_dim: int) -> keras.Model:
        features = keras.Input(shape=(feature_dim,), name="features")
        return keras.Model(features, self(features), name="head")
