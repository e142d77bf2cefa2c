"""A workaround for Keras 3.15's TensorFlow trainer under a strategy with several replicas: fit() and
evaluate() fail when the first batch of a dataset is split unevenly across the replicas.

Why: before its first step, `TensorFlowTrainer._maybe_symbolic_build` takes the first distributed
batch and averages it across replicas (`strategy.reduce("MEAN", batch, axis=None)`) only to learn
its shapes; a batch split 2/1 (3 validation files, 2 replicas) has unequal per-replica shapes and
the reduction fails with "Inputs to operation AddN ... must have the same size and shape". A small
validation split makes this the common case here, and any global batch can end unevenly. The
symbolic build needs nothing but shapes and dtypes, so one replica's part of the batch does as
well; the first replica's is never smaller than another's. Everything else is Keras' own code."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_PATCHED = "_metatune_uneven_first_batch"


def allow_uneven_first_batches() -> None:
    """Replace the shape-only averaging of the first batch by the first replica's part (idempotent)."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    original = TensorFlowTrainer._maybe_symbolic_build
    if getattr(original, _PATCHED, False):
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return original(self, iterator=iterator, data_batch=data_batch)
        strategy = self.distribute_strategy
        for _, _, it in iterator:  # as Keras does: the first batch of the epoch iterator
            batch = next(it)
            data_batch = tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x, batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    setattr(maybe_symbolic_build, _PATCHED, True)
    TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    logger.debug("Keras' first-batch symbolic build takes one replica's part (uneven splits allowed)")
