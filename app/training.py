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
from app.calibration import fit_temperature
from app.config import TrainConfig
from app import tensorboard_logging as tb
from app.data_report import build_data_report, build_manifest, format_data_report
from app.errors import UserError
from app.versions import package_versions
from app.backbone_choice import input_spec, resolve_backbone
from app.features import extract_features, truncation_report
from data.pipeline import read_texts
from data.pipeline import balanced_dataset
from data.scan import require_trainable, scan_folder
from data.splits import assign_splits, class_weights
from models.heads import ClassificationHead
from models.task_model import build_task_model

logger = logging.getLogger(__name__)


PROFILE_BATCHES = 3


@dataclass
class TrainResult:
    run_dir: Path
    val_accuracy: float
    val_loss: float
    epochs_trained: int
    wall_time_s: float


def default_run_dir(config: TrainConfig, backbone_name: str) -> Path:
    dataset = _slug(Path(config.data_dir).expanduser().resolve().name) or "data"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{dataset}-{_slug(Path(backbone_name).name)}-{config.strategy}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def profile_feature_pass(feature_extractor, examples, modality, size, config, log_dir: Path) -> None:
    """TensorFlow profiler trace of a few batches of the backbone pass (the Profile tab in TensorBoard)."""
    from app.inputs import example_dataset

    batches = example_dataset(examples, modality, size, config.batch_size, config.resize).take(PROFILE_BATCHES)
    logger.info("Profiling %d batches of the feature pass into %s", PROFILE_BATCHES, log_dir)
    with tf.profiler.experimental.Profile(str(log_dir)):
        feature_extractor.predict(batches, verbose=0)


def _write_tensorboard_extras(log_dir, resolved, report, head_model, val_features, val_probabilities,
                              val_examples, scan, backbone, config, final_metrics) -> None:
    texts = read_texts([e.path for e in val_examples], [e.encoding for e in val_examples]) if scan.modality == "text" else None
    tb.log_worst_mistakes(log_dir, val_examples, val_probabilities, scan.class_names, scan.modality,
                          backbone.size, config.resize, texts)
    tb.log_text_summaries(log_dir, resolved, format_data_report(report))
    tb.log_hparams(log_dir, resolved, final_metrics)
    embeddings = val_features
    if config.hidden_units:  # the penultimate layer is then the hidden layer
        embeddings = keras.Model(head_model.inputs, head_model.get_layer("head_hidden").output).predict(val_features, verbose=0)
    tb.write_projector(log_dir, embeddings, val_examples, scan.class_names, scan.modality, backbone.size, config.resize)


def check_data(config: TrainConfig):
    """The data doctor: scan and check every file, assign splits, build the report.

    Returns (scan, examples with splits, data report). Raises DataError when the
    folder cannot be used for training.
    """
    scan = scan_folder(config.data_dir)
    require_trainable(scan, min_per_class=2)
    examples = assign_splits(scan, config.val_fraction, config.seed, config.test_fraction)
    train_labels = [e.label for e in examples if e.split == "train"]
    weights = class_weights(train_labels, len(scan.class_names)) if config.class_weight == "auto" else None
    report = build_data_report(scan, examples, weights)
    across = report["duplicates"]["across_splits"]["num_files"]
    if across:
        logger.warning("%d val/test files have an exact duplicate in train: evaluation on them is optimistic.", across)
    return scan, examples, report


def run_training(config: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    config.validate()
    scan, examples, report = check_data(config)
    backbone = resolve_backbone(config, scan.modality)
    train_examples = [e for e in examples if e.split == "train"]
    val_examples = [e for e in examples if e.split == "val"]
    train_labels = [e.label for e in train_examples]
    val_labels = [e.label for e in val_examples]
    logger.info(
        "Data: %d classes, %d train / %d val / %d test files, %d skipped",
        len(scan.class_names), len(train_examples), len(val_examples),
        sum(e.split == "test" for e in examples), len(scan.skipped),
    )
    if not val_examples:
        raise UserError("No validation files: every class needs at least 2 training files or a val/ folder.")

    # Build the backbone before creating the run directory: missing weights (offline
    # downloads, bad paths) fail here, within seconds, leaving nothing behind.
    keras.utils.set_random_seed(config.seed)
    feature_extractor = backbone.spec.build_features(backbone.size, backbone.weights, backbone.pooling)
    feature_extractor.trainable = False

    if scan.modality == "text":
        texts = read_texts([e.path for e in examples], [e.encoding for e in examples])
        report["truncation"] = truncation_report(feature_extractor, texts, backbone.size)
        if report["truncation"]["num_truncated"]:
            logger.info("%d of %d texts are longer than %d tokens and are truncated",
                        report["truncation"]["num_truncated"], len(texts), backbone.size)

    run_dir = rd.create_run_dir(Path(config.output) if config.output else default_run_dir(config, backbone.name))
    logger.info("Run directory: %s", run_dir)
    resolved = config.to_dict() | {"output": str(run_dir), "backbone": backbone.name, "weights": backbone.weights}
    resolved["image_size" if scan.modality == "image" else "sequence_length"] = backbone.size
    rd.write_json(run_dir / rd.CONFIG_FILE, resolved)
    rd.write_json(run_dir / rd.DATA_REPORT_FILE, report)
    manifest = build_manifest(scan, examples, config.seed)
    rd.write_json(run_dir / rd.MANIFEST_FILE, manifest)
    manifest_hash = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    if config.profile:
        profile_feature_pass(feature_extractor, train_examples, scan.modality, backbone.size, config, run_dir / rd.LOGS_DIR)
    logger.info("Computing %s features once for %d examples", backbone.name, len(train_examples) + len(val_examples))
    train_features = extract_features(feature_extractor, train_examples, scan.modality, backbone.size,
                                      config.batch_size, config.resize)
    val_features = extract_features(feature_extractor, val_examples, scan.modality, backbone.size,
                                    config.batch_size, config.resize)

    head = ClassificationHead(len(scan.class_names), config.dropout, seed=config.seed, hidden_units=config.hidden_units)
    head_model = head.features_model(train_features.shape[-1])
    head_model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    steps_per_epoch = None
    if config.balanced_sampler:
        train_ds = balanced_dataset(train_features, train_labels, len(scan.class_names), config.seed).batch(config.batch_size)
        steps_per_epoch = -(-len(train_labels) // config.batch_size)
    else:
        train_ds = (
            tf.data.Dataset.from_tensor_slices((train_features, np.asarray(train_labels, np.int32)))
            .shuffle(len(train_labels), seed=config.seed)
            .batch(config.batch_size)
        )
    weights = class_weights(train_labels, len(scan.class_names)) if config.class_weight == "auto" else None
    val_ds = tf.data.Dataset.from_tensor_slices((val_features, np.asarray(val_labels, np.int32))).batch(config.batch_size)
    log_dir = run_dir / rd.LOGS_DIR
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=str(log_dir)),
        tb.StepLearningRate(log_dir),
        tb.ConfusionMatrixPerEpoch(log_dir, val_features, val_labels, scan.class_names),
    ]
    if scan.modality == "image":
        first = train_examples[:config.batch_size]
        tb.log_sample_inputs(log_dir, [e.path for e in first], [e.label for e in first], scan.class_names,
                             (backbone.size, backbone.size), config.resize,
                             note="Training inputs after decode and resize. The linear strategy uses no "
                                  "augmentation: features are computed once from these.")
    history = head_model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                             steps_per_epoch=steps_per_epoch, class_weight=weights,
                             shuffle=False, verbose=2)  # the dataset shuffles itself, seeded
    val_loss, val_accuracy = head_model.evaluate(val_ds, verbose=0)
    val_probabilities = head_model.predict(val_ds, verbose=0)
    temperature = fit_temperature(val_probabilities, val_labels)
    _write_tensorboard_extras(log_dir, resolved, report, head_model, val_features, val_probabilities,
                              val_examples, scan, backbone, config,
                              {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss)})

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
        "input_spec": input_spec(scan.modality, backbone.size, config.resize),
        "backbone": backbone.name,
        "weights": backbone.weights,
        "strategy": config.strategy,
        "metrics": {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
                    "epochs_trained": epochs_trained, "wall_time_s": round(wall_time, 2)},
        "calibration": {"temperature": temperature, "fitted_on": "validation split"},
        "data_dir": scan.root,
        "manifest_sha256": manifest_hash,
        "seed": config.seed,
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    rd.mark_complete(run_dir)
    return TrainResult(run_dir, float(val_accuracy), float(val_loss), epochs_trained, wall_time)
