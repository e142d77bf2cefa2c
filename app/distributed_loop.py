"""metatune's own training loop, for models built under MultiWorkerMirroredStrategy (`--distribute multi-worker`).

Why not `model.fit`: in Keras 3.15 / TensorFlow 2.21, fit() under MultiWorkerMirroredStrategy
fails on every worker with "Attempt to convert a value (PerReplica:{...}) to a Tensor"
(keras-team/keras#20585), whatever the input (tf.data, a dataset distributed by hand, NumPy).
What works, measured on two loopback workers: `strategy.experimental_distribute_dataset` plus
`strategy.run` of a step that calls the Keras model and applies its Keras optimizer (which
all-reduce-sums the gradients across every replica of every worker), the loss summed over the
replica's examples and divided by the examples of the whole global batch. Both workers end with
identical weights.

`fit_with_own_step` is that step driven epoch by epoch with the callbacks the phase runner
(app/phases.py) gives fit(): the same hooks in the same order (train begin, epoch begin, batch
end with running means, epoch end with `val_` metrics, train end), so checkpoints, early
stopping, the NaN guard, TensorBoard and the epoch log lines work unchanged. Every metric it
reports is summed across all workers, so every worker sees the same numbers and takes the same
decisions (early stopping, NaN): a worker that stopped alone would leave the others waiting in
a collective.

Each worker reads the whole (identically seeded and shuffled) dataset and keeps its share of
every global batch (auto-shard policy DATA): the examples of one global batch are spread over
the replicas whatever files the dataset comes from.
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np
import tensorflow as tf

from models.heads import class_indices

logger = logging.getLogger(__name__)


def needs_own_step(model: keras.Model) -> bool:
    """The model was built under MultiWorkerMirroredStrategy, where fit() fails (keras-team/keras#20585)."""
    return isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads everything and keeps its share of each global batch (no FILE sharding: most of
    metatune's datasets are built from in-memory arrays or decoded in tf.data, with no files to split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class _RunningSums:
    """Loss, correct predictions and examples summed over an epoch's batches (already summed across workers)."""

    def __init__(self):
        self.loss = self.correct = self.count = 0.0

    def add(self, sums) -> None:
        loss, correct, count = (float(v) for v in np.asarray(sums))
        self.loss, self.correct, self.count = self.loss + loss, self.correct + correct, self.count + count

    def logs(self, prefix: str = "") -> dict:
        if not self.count:
            return {}
        return {f"{prefix}loss": self.loss / self.count, f"{prefix}accuracy": self.correct / self.count}


class _Steps:
    """The distributed training and validation steps of one model (one phase)."""

    def __init__(self, model: keras.Model, loss: keras.losses.Loss, class_weight: dict | None):
        self.model, self.loss, self.strategy = model, loss, model.distribute_strategy
        self.class_weights = None
        if class_weight:
            table = np.ones(max(class_weight) + 1, np.float32)
            for label, weight in class_weight.items():
                table[label] = weight
            self.class_weights = tf.constant(table)
        self.train = tf.function(self._train)
        self.validate = tf.function(self._validate)

    def _sums(self, targets, probabilities, per_example, batch_term=0.0):
        """[summed loss, correct predictions, examples] of one replica's batch. `batch_term`: this replica's
        share of a loss term over the whole global batch (the pair loss), already multiplied by the global
        batch's examples, so that the logged loss (the sum over examples / examples) includes it once, as
        fit()'s does."""
        correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), class_indices(targets)),
                          tf.float32)
        count = tf.cast(tf.shape(probabilities)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example) + batch_term, tf.reduce_sum(correct), count])

    def _replica_train(self, inputs, targets):
        context = tf.distribute.get_replica_context()
        # The loss is averaged over the GLOBAL batch: each replica divides its sum by every replica's
        # examples, and the optimizer sums the replicas' gradients. Exact for uneven last batches too.
        examples = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(targets)[0], tf.float32))
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            auxiliary = 0.0
            if isinstance(outputs, (tuple, list)):  # models/pair_loss.PairLossClassifier: + its pair loss
                outputs, embedding = outputs
                auxiliary = self.model.pair_term(embedding, targets)  # this replica's share of it already
            probabilities = tf.cast(outputs, tf.float32)
            per_example = self.loss.call(targets, probabilities)
            weighted = per_example
            if self.class_weights is not None:  # as fit(class_weight=...): a weight per example, same denominator
                weighted = per_example * tf.gather(self.class_weights, class_indices(targets))
            loss = tf.reduce_sum(weighted) / tf.maximum(examples, 1.0) + auxiliary
            if self.model.losses:  # regularization: once per model, so a replica's share of it
                loss += tf.add_n(self.model.losses) / context.num_replicas_in_sync
            scaled = self.model.optimizer.scale_loss(loss)  # mixed precision's loss scaling (identity otherwise)
        gradients = tape.gradient(scaled, variables)
        self.model.optimizer.apply(gradients, variables)
        return self._sums(targets, probabilities, weighted, auxiliary * examples)

    def _replica_validate(self, inputs, targets):
        probabilities = tf.cast(self.model(inputs, training=False), tf.float32)
        return self._sums(targets, probabilities, self.loss.call(targets, probabilities))

    def _train(self, batch):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(self._replica_train, args=batch),
                                    axis=None)

    def _validate(self, batch):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                    self.strategy.run(self._replica_validate, args=batch), axis=None)


def fit_with_own_step(model: keras.Model, loss: keras.losses.Loss, train_ds: tf.data.Dataset,
                      val_ds: tf.data.Dataset | None, epochs: int, initial_epoch: int, callbacks: list,
                      steps_per_epoch: int | None = None, class_weight: dict | None = None) -> None:
    """fit(train_ds, validation_data=val_ds, epochs, initial_epoch, callbacks, steps_per_epoch, class_weight)
    for a compiled model built under MultiWorkerMirroredStrategy. `loss`: the compiled loss object
    (its unreduced `call` is used). Logs carry `loss`, `accuracy` and, with validation, `val_loss`
    and `val_accuracy`, as fit() with metrics=["accuracy"] does."""
    strategy = model.distribute_strategy
    steps = _Steps(model, loss, class_weight)
    train = strategy.experimental_distribute_dataset(shard_by_data(train_ds))
    val = None if val_ds is None else strategy.experimental_distribute_dataset(shard_by_data(val_ds))
    # With steps_per_epoch the dataset repeats (the balanced sampler): one iterator across epochs, as fit().
    iterator = iter(train) if steps_per_epoch else None
    steps_shown = steps_per_epoch or int(train_ds.cardinality().numpy())
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs,
                                                 steps=steps_shown if steps_shown > 0 else None, verbose=0)
    model.stop_training = False
    logs: dict = {}
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        sums = _RunningSums()
        batches = (next(iterator) for _ in range(steps_per_epoch)) if iterator is not None else train
        for index, batch in enumerate(batches):
            callback_list.on_train_batch_begin(index)
            sums.add(steps.train(batch))
            callback_list.on_train_batch_end(index, sums.logs())
            if model.stop_training:  # the NaN guard: no validation of a diverged model
                break
        logs = sums.logs()
        if val is not None and all(math.isfinite(v) for v in logs.values()):
            validation = _RunningSums()
            for batch in val:
                validation.add(steps.validate(batch))
            logs |= validation.logs("val_")
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
