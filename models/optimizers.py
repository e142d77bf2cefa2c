"""Adam with a learning-rate multiplier per variable (discriminative fine-tuning).

Keras 3 has no per-variable learning rates (TF-Addons' MultiOptimizer is gone). Rather
than hand-rolling an optimizer or juggling one optimizer per layer group (several
states to checkpoint, schedules and ReduceLROnPlateau acting on only one of them),
this subclass keeps Keras' own Adam update and only scales the learning rate it is
handed for each variable. Schedules, ReduceLROnPlateau, the learning-rate logging and
the optimizer state all stay those of a single ordinary Adam.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="metatune")
class DiscriminativeAdam(keras.optimizers.Adam):
    """Adam where variable `path` moves at `learning_rate * lr_multipliers[path]` (default 1)."""

    def __init__(self, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        for path, multiplier in self.lr_multipliers.items():
            if not multiplier > 0:
                raise ValueError(f"Learning-rate multipliers must be positive. Received: {path}={multiplier}")
        self._multiplier_by_index: list[float] = []

    def build(self, variables):
        super().build(variables)
        # Looked up by the optimizer's own variable index, which update_step can
        # recover for both Keras variables and the tf.Variables the TF backend passes.
        self._multiplier_by_index = [float(self.lr_multipliers.get(v.path, 1.0)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_by_index[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, multiplier)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return super().get_config() | {"lr_multipliers": self.lr_multipliers}
