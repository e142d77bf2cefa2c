"""app/distributed_loop.py, the training step --distribute multi-worker uses instead of fit(): on one device
(the default strategy: the same code path, the all-reduces being identities) it must train to the weights
and report the metrics fit() does, class weights and validation included, and drive the callbacks the
phase runner relies on. The two-worker run itself: tests/test_multi_worker.py."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from app.distributed_loop import fit_with_own_step, needs_own_step
from models.heads import ClassificationHead

FEATURES, CLASSES, EXAMPLES, BATCH = 6, 3, 20, 8  # 20 = 8 + 8 + 4: an uneven last batch


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.batches, self.calls = [], 0, []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs)))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def _model() -> keras.Model:
    keras.utils.set_random_seed(4)
    model = ClassificationHead(CLASSES, dropout=0.0, seed=4).features_model(FEATURES)
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model


def test_own_step_trains_and_reports_as_fit_does():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(EXAMPLES, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, EXAMPLES).astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((features, labels)).batch(BATCH)
    val = tf.data.Dataset.from_tensor_slices((features[:5], labels[:5])).batch(BATCH)
    class_weight = {0: 2.0, 1: 0.5, 2: 1.0}

    reference, ours = _model(), _model()
    history = reference.fit(train, validation_data=val, epochs=3, initial_epoch=1, class_weight=class_weight,
                            shuffle=False, verbose=0).history
    record = _Record()
    assert not needs_own_step(ours)  # one device: phases keep fit(); multi-worker takes this path
    fit_with_own_step(ours, ours.loss, train, val, epochs=3, initial_epoch=1, callbacks=[record],
                      class_weight=class_weight)

    for expected, got in zip(reference.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [epoch for epoch, _ in record.epochs] == [1, 2] and record.batches == 2 * 3
    assert record.calls == ["train_begin", "train_end"]
    for index, (_, logs) in enumerate(record.epochs):
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        for key, value in logs.items():
            assert abs(value - history[key][index]) < 1e-5, (key, value, history[key][index])


def test_a_callback_that_stops_training_ends_the_loop():
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model, record = _model(), _Record()
    data = tf.data.Dataset.from_tensor_slices((np.zeros((4, FEATURES), np.float32), np.zeros(4, np.int32))).batch(2)
    fit_with_own_step(model, model.loss, data, None, epochs=5, initial_epoch=0,
                      callbacks=[StopAfterFirstEpoch(), record])
    assert [epoch for epoch, _ in record.epochs] == [0] and set(record.epochs[0][1]) == {"loss", "accuracy"}
