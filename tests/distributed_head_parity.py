"""Run as a script with METATUNE_CPU_DEVICES=2 (tests/app/test_distribution.py starts it): the head on
cached features trains to the same weights under MirroredStrategy over 2 logical CPUs as without a
strategy. The pattern (Keras' own distribute tests) for the training loop's parity tests.

Prints one JSON line: the logical CPU count, the replicas, the largest weight difference, and the
message a too-small global batch gets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import prepare_environment  # noqa: E402

prepare_environment()  # applies METATUNE_CPU_DEVICES before TensorFlow runs any op

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.distribution import resolve_distribution  # noqa: E402
from app.errors import UserError  # noqa: E402
from models.heads import ClassificationHead  # noqa: E402

FEATURES, CLASSES, BATCH, STEPS = 16, 4, 8, 4


def train_head(strategy) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH * STEPS, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH * STEPS).astype(np.int32)
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = ClassificationHead(CLASSES, dropout=0.0, seed=1).features_model(FEATURES)
        # The global batch (BATCH) is split across the replicas; Keras' built-in loss is averaged over
        # the global batch, so the summed replica gradients equal the single-device gradient.
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(BATCH), epochs=1, verbose=0, shuffle=False)
    return [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in model.weights]


def main() -> None:
    mirrored = resolve_distribution("mirrored", BATCH, wired=True)
    single = train_head(tf.distribute.get_strategy())
    distributed = train_head(mirrored.strategy)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(single, distributed))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(single, train_initial()))
    try:
        resolve_distribution("mirrored", 1, wired=True)
        too_small = ""
    except UserError as error:
        too_small = str(error)
    print(json.dumps({"cpu_devices": len(tf.config.list_logical_devices("CPU")),
                      "replicas": mirrored.info.replicas, "info": mirrored.info.to_metadata(),
                      "max_difference": difference, "trained_distance": moved, "too_small_batch": too_small}))


def train_initial() -> list[np.ndarray]:
    """The head's weights before training (same seed), to show that training moved them."""
    keras.utils.set_random_seed(1)
    model = ClassificationHead(CLASSES, dropout=0.0, seed=1).features_model(FEATURES)
    return [w.numpy() for w in model.weights]


if __name__ == "__main__":
    main()
