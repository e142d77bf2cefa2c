"""A training run end to end: scan, split, features once, head, run directory."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app import run_dir as rd
from app.config import TrainConfig
from app.errors import UserError
from app.versions import package_versions
from data.pipeline import image_dataset
from data.scan import ScanResult, require_trainable, scan_folder
from data.splits import assign_splits, select
from models.backbones import get_backbone
from models.heads import ClassificationHead
from models.task_model import build_task_model

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    val_accuracy: float
    val_loss: float
    epochs_trained: int
    wall_time_s: float


def default_run_dir(config: TrainConfig) -> Path:
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(config.data_dir).expanduser().resolve().name) or "data"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{dataset}-{config.backbone}-{config.strategy}"


def _manifest(scan: ScanResult, examples) -> dict:
    return {
        "root": scan.root,
        "class_names": scan.class_names,
        "files": [
            {"path": str(Path(e.path).relative_to(scan.root)), "label": scan.class_names[e.label], "split": e.split}
            for e in examples
        ],
    }


def _data_report(scan: ScanResult, examples) -> dict:
    report = scan.summary()
    report["splits"] = {
        split: {name: sum(1 for e in examples if e.split == split and e.label == i) for i, name in enumerate(scan.class_names)}
        for split in ("train", "val", "test")
    }
    return report


def extract_features(feature_extractor: keras.Model, paths, image_size, batch_size: int) -> np.ndarray:
    """Run the frozen backbone over `paths` once (the expensive pass; the head reuses it)."""
    dataset = image_dataset(paths, None, image_size, batch_size)
    return feature_extractor.predict(dataset, verbose=1)


def run_training(config: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    config.validate()
    spec = get_backbone(config.backbone)
    image_size = (config.image_size or spec.default_image_size,) * 2

    scan = scan_folder(config.data_dir)
    if scan.modality != spec.modality:
        raise UserError(
            f"The folder holds {scan.modality} files but backbone {config.backbone!r} is an "
            f"{spec.modality} backbone. Received: --backbone {config.backbone}."
        )
    require_trainable(scan, min_per_class=2)
    examples = assign_splits(scan, config.val_fraction, config.seed)
    train_paths, train_labels = select(examples, "train")
    val_paths, val_labels = select(examples, "val")
    logger.info(
        "Data: %d classes, %d train / %d val / %d test files, %d skipped",
        len(scan.class_names), len(train_paths), len(val_paths),
        sum(e.split == "test" for e in examples), len(scan.skipped),
    )

    run_dir = rd.create_run_dir(Path(config.output) if config.output else default_run_dir(config))
    logger.info("Run directory: %s", run_dir)
    resolved = config.to_dict() | {"output": str(run_dir), "image_size": image_size[0]}
    rd.write_json(run_dir / rd.CONFIG_FILE, resolved)
    rd.write_json(run_dir / rd.DATA_REPORT_FILE, _data_report(scan, examples))
    manifest = _manifest(scan, examples)
    rd.write_json(run_dir / rd.MANIFEST_FILE, manifest)
    manifest_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    keras.utils.set_random_seed(config.seed)
    feature_extractor = spec.build_features(image_size, config.weights)
    feature_extractor.trainable = False
    logger.info("Computing %s features once for %d images", config.backbone, len(train_paths) + len(val_paths))
    train_features = extract_features(feature_extractor, train_paths, image_size, config.batch_size)
    val_features = extract_features(feature_extractor, val_paths, image_size, config.batch_size)

    head = ClassificationHead(len(scan.class_names), config.dropout, seed=config.seed)
    head_model = head.features_model(spec.feature_dim)
    head_model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((train_features, np.asarray(train_labels, np.int32)))
        .shuffle(len(train_labels), seed=config.seed)
        .batch(config.batch_size)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((val_features, np.asarray(val_labels, np.int32))).batch(config.batch_size)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / rd.LOGS_DIR)),
    ]
    history = head_model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                             shuffle=False, verbose=2)  # the dataset shuffles itself, seeded
    val_loss, val_accuracy = head_model.evaluate(val_ds, verbose=0)

    task_model = build_task_model(feature_extractor, head)
    rd.save_model(task_model, run_dir)
    epochs_trained = len(history.history["loss"])
    rd.write_json(run_dir / rd.HISTORY_FILE, {
        "phases": [{"name": "head", "epochs": epochs_trained}],
        "epochs": [
            {"epoch": i + 1, **{k: float(v[i]) for k, v in history.history.items()}}
            for i in range(epochs_trained)
        ],
    })
    wall_time = time.perf_counter() - started
    rd.write_json(run_dir / rd.METADATA_FILE, {
        "format_version": 1,
        "class_names": scan.class_names,
        "modality": scan.modality,
        "input_spec": {"kind": "image", "image_size": list(image_size), "channels": 3, "dtype": "uint8",
                       "resize": "bilinear, aspect ratio not kept"},
        "backbone": config.backbone,
        "weights": config.weights,
        "strategy": config.strategy,
        "metrics": {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
                    "epochs_trained": epochs_trained, "wall_time_s": round(wall_time, 2)},
        "data_dir": scan.root,
        "manifest_sha256": manifest_hash,
        "seed": config.seed,
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    rd.mark_complete(run_dir)
    return TrainResult(run_dir, float(val_accuracy), float(val_loss), epochs_trained, wall_time)
