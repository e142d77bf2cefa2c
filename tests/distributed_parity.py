"""Run as a script with METATUNE_CPU_DEVICES=2 (tests/app/test_distribution.py starts it): every check that
needs two logical CPUs, in one process (TensorFlow starts once, which is most of the cost).

- the head on cached features, and finetune phase 2 (the real `prepare_phase2`: every block unfrozen at its own rate,
  BatchNorm frozen, DiscriminativeAdam), train to the same weights under MirroredStrategy as without
  a strategy (the pattern of Keras' own distribute tests);
- `train.main` with `--distribute mirrored` trains linear and finetune end to end on a tiny colour folder;
- a too-small global batch and a meta strategy under mirrored are refused.

Prints one JSON line with what it measured; the test asserts on it."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import prepare_environment  # noqa: E402

prepare_environment(splits_batches=True)  # applies METATUNE_CPU_DEVICES before TensorFlow runs any op; trains mirrored

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tests.tiny_backbones  # noqa: E402,F401  (registers tiny_image)
import train  # noqa: E402
from app.config import TrainConfig  # noqa: E402
from app.distribution import resolve_distribution  # noqa: E402
from app.errors import UserError  # noqa: E402
from app.phases import compile_model, prepare_phase2  # noqa: E402
from models.backbones.registry import lookup  # noqa: E402
from models.heads import ClassificationHead  # noqa: E402
from models.task_model import build_task_model  # noqa: E402
from tests.colour_folders import write_colour_folder  # noqa: E402

FEATURES, CLASSES, BATCH, STEPS, IMAGE = 16, 4, 8, 4, 16


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def _largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def train_head(strategy, train: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH * STEPS, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH * STEPS).astype(np.int32)
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = ClassificationHead(CLASSES, dropout=0.0, seed=1).features_model(FEATURES)
        # The global batch (BATCH) is split across the replicas; Keras' built-in loss is averaged over
        # the global batch, so the summed replica gradients equal the single-device gradient.
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    if train:
        model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(BATCH), epochs=1, verbose=0,
                  shuffle=False)
    return _weights(model)


def finetune_phase2(strategy, train: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(all weights, BatchNorm moving statistics) after STEPS phase-2 steps (or none)."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (BATCH * STEPS, IMAGE, IMAGE, 3)).astype(np.uint8)
    labels = rng.integers(0, CLASSES, BATCH * STEPS).astype(np.int32)
    config = TrainConfig(data_dir="unused", strategy="finetune", unfreeze="all", finetune_learning_rate=0.05,
                         lr_decay=0.5, lr_schedule="constant", dropout=0.0, mixup=0.0)
    spec = lookup("tiny_image")
    with strategy.scope():
        keras.utils.set_random_seed(1)
        features = spec.build_features(IMAGE, "none")
        features.trainable = False
        head = ClassificationHead(CLASSES, dropout=0.0, seed=1)
        task_model = build_task_model(features, head)
        model, compile_spec = prepare_phase2(config, spec, features, task_model, head.layers, STEPS, CLASSES)
        compile_model(model, compile_spec)
    if train:
        model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH), epochs=1, verbose=0,
                  shuffle=False)
    moving = [w for w in features.weights if "moving" in w.path]
    return _weights(task_model), [np.asarray(keras.ops.convert_to_numpy(w)) for w in moving]


def train_runs(root: Path) -> dict:
    """metadata.json's "distribute" (or the exit code when training failed) for linear and finetune, and
    for linear with --batch-size 2: the 3 validation files end with a batch of 1, split 1/0, an empty share for
    the second replica's convolutions (which TensorFlow's oneDNN kernel got wrong: app/cpu_devices.py)."""
    folder = write_colour_folder(root / "colours", per_class=6, size=12)
    found = {}
    for name, strategy, batch in (("linear", "linear", 4), ("finetune", "finetune", 4),
                                  ("linear_empty_share", "linear", 2)):
        run = root / name
        code = train.main([str(folder), "--backbone", "tiny_image", "--strategy", strategy, "--distribute",
                           "mirrored", "--output", str(run), "--epochs", "1", "--finetune-epochs", "1",
                           "--batch-size", str(batch), "--seed", "3", "--no-cache-features"])
        found[name] = json.loads((run / "metadata.json").read_text())["distribute"] if code == 0 else code
    return found


def refusal(mode: str, batch_size: int, strategy: str | None = None) -> str:
    try:
        resolve_distribution(mode, batch_size, training_strategy=strategy)
    except UserError as error:
        return str(error)
    return ""


def main() -> None:
    mirrored = resolve_distribution("mirrored", BATCH)
    single_strategy = tf.distribute.get_strategy()
    head_single, head_mirrored = train_head(single_strategy), train_head(mirrored.strategy)
    (tuned_single, moving_single), (tuned_mirrored, moving_mirrored) = (finetune_phase2(single_strategy),
                                                                         finetune_phase2(mirrored.strategy))
    tuned_initial, moving_initial = finetune_phase2(single_strategy, train=False)
    with tempfile.TemporaryDirectory() as root:
        runs = train_runs(Path(root))
    print(json.dumps({
        "cpu_devices": len(tf.config.list_logical_devices("CPU")), "replicas": mirrored.info.replicas,
        "info": mirrored.info.to_metadata(),
        "head": {"difference": _largest_difference(head_single, head_mirrored),
                 "trained_distance": _largest_difference(head_single, train_head(single_strategy, train=False))},
        "finetune": {"difference": _largest_difference(tuned_single, tuned_mirrored),
                     "trained_distance": _largest_difference(tuned_single, tuned_initial),
                     "moving_statistics_moved": max(_largest_difference(moving_single, moving_initial),
                                                    _largest_difference(moving_mirrored, moving_initial))},
        "runs": runs,
        "too_small_batch": refusal("mirrored", 1), "meta_refused": refusal("mirrored", BATCH, "protonet"),
    }))


if __name__ == "__main__":
    main()
