"""MAML (second order) and first-order MAML.

Finn et al. 2017. Per task: `inner_steps` SGD steps from the meta-learned initialisation
on the support loss (adapted variables only), then the query loss at the adapted
weights. The outer gradient of that query loss w.r.t. the initialisation is averaged
over the tasks and applied by the compiled (meta) optimizer.

- `MAML`: true second order. The inner gradients are not stopped: the inner tapes run
  inside the outer tape, which differentiates through every inner update (Hessian-vector
  products). Memory grows with `inner_steps`; see `models.meta.memory` and check it
  before training (`check_memory`).
- `FOMAML` (`first_order=True`): the inner loop runs on constants and the adapted
  weights are `init + stop_gradient(adapted - init)`, so the outer gradient is the
  query-loss gradient at the adapted weights, applied to the initial weights.
"""

from __future__ import annotations

import keras

from models.meta.base import GradientMetaLearner


@keras.saving.register_keras_serializable(package="metatune")
class MAML(GradientMetaLearner):
    """Model-agnostic meta-learning. See `GradientMetaLearner` for the arguments.

    first_order: FOMAML (inner gradients stopped) instead of second order.
    """

    def __init__(self, embedding, ways, *, first_order: bool = False, **kwargs):
        super().__init__(embedding, ways, **kwargs)
        self.first_order = bool(first_order)

    def task_loss_and_logits(self, params, support_x, support_y, query_x, query_y, training):
        # At evaluation there is no outer tape: first order computes the same values cheaper.
        return self.adapted_query(params, support_x, support_y, query_x, query_y, training,
                                  first_order=self.first_order or not training)

    def memory_estimate(self, support_shape, query_shape=None) -> int:
        """Rough bytes the second-order step of one task needs (`maml_memory_estimate`)."""
        from models.meta.memory import maml_memory_estimate

        return maml_memory_estimate(self, self.inner_steps, support_shape, query_shape)

    def check_memory(self, support_shape, query_shape=None, available_bytes=None) -> int:
        """Raise ModelError if second-order MAML would not fit; returns the estimate."""
        from models.meta.memory import check_maml_fits

        estimate = self.memory_estimate(support_shape, query_shape)
        if not self.first_order:
            check_maml_fits(estimate, available_bytes)
        return estimate

    def get_config(self):
        return super().get_config() | {"first_order": self.first_order}


@keras.saving.register_keras_serializable(package="metatune")
class FOMAML(MAML):
    """First-order MAML: `MAML(first_order=True)`."""

    def __init__(self, embedding, ways, **kwargs):
        kwargs.pop("first_order", None)
        super().__init__(embedding, ways, first_order=True, **kwargs)
