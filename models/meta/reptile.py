"""Reptile (Nichol, Achiam & Schulman 2018).

Per task: `inner_steps` SGD steps on the support set (all of it, or minibatches of
`inner_batch_size` cycling through a per-task shuffle) from the initialisation θ,
giving φ_task; no gradient flows through them. Meta update

    θ ← θ + ε · mean_tasks(φ_task − θ)

implemented as the pseudo-gradient g = θ − mean φ:
- `meta_step_size=None` (default): g goes to the compiled optimizer, so
  `SGD(learning_rate=ε)` is exactly the update above and Adam is the paper's
  Adam-on-the-Reptile-gradient variant; learning-rate schedules work as usual.
- `meta_step_size=ε`: θ.assign_sub(ε·g) directly, bypassing the optimizer (whose
  `iterations` is still incremented). Single-replica only: under tf.distribute use the
  optimizer path.
Only the adapted variables move; the rest of the embedding stays as it is.
Loss and accuracy are reported on the query set at the adapted weights φ.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.meta.base import GradientMetaLearner, cross_entropy


@keras.saving.register_keras_serializable(package="metatune")
class Reptile(GradientMetaLearner):
    """Reptile. See `GradientMetaLearner` for the shared arguments.

    inner_batch_size: support examples per inner step (None: the whole support set).
    meta_step_size: ε applied directly (see module doc); None: use the optimizer.
    seed: seed of the inner minibatch shuffles.
    """

    def __init__(self, embedding, ways, *, inner_batch_size: int | None = None,
                 meta_step_size: float | None = None, seed: int | None = None, **kwargs):
        super().__init__(embedding, ways, **kwargs)
        if inner_batch_size is not None and int(inner_batch_size) < 1:
            raise ValueError(f"inner_batch_size must be positive or None. Received: inner_batch_size={inner_batch_size!r}")
        if meta_step_size is not None and float(meta_step_size) < 0:
            raise ValueError(f"meta_step_size must be >= 0 or None. Received: meta_step_size={meta_step_size!r}")
        self.inner_batch_size = None if inner_batch_size is None else int(inner_batch_size)
        self.meta_step_size = None if meta_step_size is None else float(meta_step_size)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def outer_variables(self) -> list:
        return self.adapted_variables

    def inner_batches(self, support_x, support_y, steps):
        size = self.inner_batch_size
        if size is None:
            return [(support_x, support_y)] * steps
        # One shuffle per task, then consecutive minibatches cycling through it.
        count = tf.shape(support_y)[0]
        order = tf.argsort(keras.random.uniform((count,), seed=self.seed_generator))
        batches = []
        for step in range(steps):
            picks = tf.gather(order, tf.math.floormod(step * size + tf.range(size), count))
            batches.append((tf.gather(support_x, picks), tf.gather(support_y, picks)))
        return batches

    def task_loss_and_logits(self, params, support_x, support_y, query_x, query_y, training):
        return self.adapted_query(params, support_x, support_y, query_x, query_y, training, first_order=True)

    def task_gradients(self, support_x, support_y, query_x, query_y, training=True):
        params = self.read_params()
        fast, _ = self.adapt_params(params, support_x, support_y, training=training, first_order=True)
        logits = self.query_logits(fast, support_x, query_x)
        loss = cross_entropy(query_y, logits)
        grads = [p - f for p, f in zip(params, fast)]  # zero for the variables that do not adapt
        return loss, logits, grads

    def apply_meta_gradients(self, grads):
        if self.meta_step_size is None:
            return super().apply_meta_gradients(grads)
        chosen = {id(v) for v in self.outer_variables}
        for g, v in zip(grads, self.meta_variables):
            if id(v) in chosen:
                v.assign_sub(tf.cast(self.meta_step_size, g.dtype) * g)
        self.optimizer.iterations.assign_add(1)

    def get_config(self):
        return super().get_config() | {
            "inner_batch_size": self.inner_batch_size,
            "meta_step_size": self.meta_step_size,
            "seed": self.seed,
        }
