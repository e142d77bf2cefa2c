"""A training run end to end: scan, split, features once, head, run directory."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from contextlib import ExitStack
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
from app.run_integrity import class_digest
from app.run_lock import RunLock
from app.versions import package_versions
from app.backbone_choice import input_spec, resolve_backbone
from app.checkpoints import Checkpoints
from app.features import cached_features, extract_features, feature_store_key, truncation_report
from app.phases import (FINETUNE, HEAD, PhaseContext, finetune_backbone, finetune_inputs, phase2_augmentation, train_head,
                        unused_mixup_warning)
from app.config import META_STRATEGIES
from app.refit import REFIT_FINETUNE, REFIT_HEAD, REFIT_PHASES, decide_refit, refit_epochs, refit_transfer
from app.meta_training import run_meta_training
from app.label_issue_run import exclude_from_training, log_label_issues, rank_label_issues
from app.label_issues import require_enough_for_folds
from app.open_set import fit_run_detector
from app.unknown_store import DETECTOR_FILE
from app.precision import apply_precision
from data.augment import build_augmenter
from data.pipeline import read_texts
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


def _write_tensorboard_extras(log_dir, resolved, report, embeddings, val_probabilities,
                              val_examples, scan, backbone, config, final_metrics) -> None:
    texts = read_texts([e.path for e in val_examples], [e.encoding for e in val_examples]) if scan.modality == "text" else None
    tb.log_worst_mistakes(log_dir, val_examples, val_probabilities, scan.class_names, scan.modality,
                          backbone.size, config.resize, texts)
    tb.log_text_summaries(log_dir, resolved, format_data_report(report))
    tb.log_hparams(log_dir, resolved, final_metrics)
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


def _start_or_resume(config: TrainConfig, resume_dir, backbone_name: str, manifest_hash: str, locks: ExitStack):
    """The run directory and the checkpoint to continue from (None: start at the beginning).
    The run directory's lock is taken into `locks` before anything in it is read or written."""
    if resume_dir is None:
        run_dir = Path(config.output) if config.output else default_run_dir(config, backbone_name)
        rd.create_run_dir(run_dir)  # refuses a non-empty folder before the lock file is added to it
        locks.enter_context(RunLock(run_dir))
        return run_dir, None
    run_dir = Path(resume_dir)
    locks.enter_context(RunLock(run_dir))
    if not (run_dir / rd.INCOMPLETE_MARKER).exists():
        raise UserError(f"{str(run_dir)!r} is a finished run; there is nothing to resume. Received: --resume {run_dir}")
    saved = run_dir / rd.MANIFEST_FILE
    if saved.is_file() and _manifest_sha256(rd.read_json(saved, _START_AGAIN)) != manifest_hash:
        raise UserError(f"The data in {config.data_dir!r} changed since {str(run_dir)!r} started (files added, removed "
                        "or edited), so its split cannot be continued. Start a new run on the current data.")
    resume = Checkpoints(run_dir).latest()
    if resume is None:
        logger.info("No completed epoch in %s yet: starting its training from the beginning.", run_dir)
    return run_dir, resume


_START_AGAIN = "The run cannot be resumed; start a new run (python train.py --config RUN_DIR/config.json --output NEW_DIR)."


def _manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _penultimate(head_model: keras.Model, features: np.ndarray, hidden_units: int) -> np.ndarray:
    """What the projector shows: the head's input, or its hidden layer when there is one."""
    if not hidden_units:
        return features
    return keras.Model(head_model.inputs, head_model.get_layer("head_hidden").output).predict(features, verbose=0)


def _train_transfer(context, config, scan, backbone, feature_extractor, train_examples, val_examples,
                    train_features, val_features, log_dir):
    """linear (head on cached features) and finetune (then the backbone top): (task model, head model,
    final validation features, phase names, optimizer steps taken)."""
    train_labels = [e.label for e in train_examples]
    val_labels = [e.label for e in val_examples]
    resume = context.resume
    head = ClassificationHead(len(scan.class_names), config.dropout, seed=config.seed, hidden_units=config.hidden_units)
    head_model = head.features_model(train_features.shape[-1])
    resumed_in_finetune = resume is not None and resume[0]["phase"] == FINETUNE
    if not resumed_in_finetune:
        head_result = train_head(context, head_model, train_features, train_labels, val_features, val_labels,
                                 phase_number=1)
        head_epochs, head_steps = head_result.epochs, head_result.epochs * head_result.steps_per_epoch
    else:
        head_epochs, head_steps = resume[0]["epoch_offset"], resume[0]["step_offset"]
    task_model = build_task_model(feature_extractor, head)
    if config.strategy != "finetune":
        return task_model, head_model, val_features, [HEAD], head_steps
    train_ds, val_ds, confusion_inputs = finetune_inputs(config, scan.modality, backbone.size, train_examples,
                                                         val_examples, len(scan.class_names))
    augment = phase2_augmentation(config, scan.modality)
    if augment is not None and not resumed_in_finetune:
        images, labels = next(iter(train_ds.take(1)))
        # A separate augmenter with the run's seed: drawing this sample leaves training's random stream alone.
        images = np.asarray(build_augmenter(augment, seed=config.seed)(images, training=True))
        labels = labels.numpy()
        tb.log_augmented_batch(log_dir, images, (labels.argmax(axis=1) if labels.ndim == 2 else labels).tolist(),
                               scan.class_names)
    phase2 = finetune_backbone(context, backbone.spec, feature_extractor, task_model, head.layers, train_ds, val_ds,
                               confusion_inputs, val_labels, epoch_offset=head_epochs, step_offset=head_steps)
    # The backbone changed: the head now sees new features (never cached: they belong to this run only).
    final_val_features = extract_features(feature_extractor, val_examples, scan.modality, backbone.size,
                                          config.batch_size, config.resize)
    return (task_model, head_model, final_val_features, [HEAD, FINETUNE],
            head_steps + phase2.epochs * phase2.steps_per_epoch)


def run_training(config: TrainConfig, resume_dir: str | Path | None = None) -> TrainResult:
    """Train (or, with `resume_dir`, continue training) one run and write its run directory."""
    with ExitStack() as locks:  # the run directory's lock, held until the run is complete or this process ends
        return _run_training(config, resume_dir, locks)


def _run_training(config: TrainConfig, resume_dir, locks: ExitStack) -> TrainResult:
    started = time.perf_counter()
    config.validate()
    precision = apply_precision(config.precision)
    scan, examples, report = check_data(config)
    if (filled := config.apply_modality_defaults(scan.modality)) and config.strategy == "finetune":
        logger.info("finetune recipe for %s data: %s", scan.modality, ", ".join(f"{k}={v}" for k, v in filled.items()))
    backbone = resolve_backbone(config, scan.modality)
    if backbone.reused is not None:  # a finished run's backbone: its resize mode too (app/backbone_reuse.py)
        config.resize = backbone.resize
        logger.info("Backbone: the run %s (%s, %s), its %d-d penultimate output", backbone.reused.run_dir,
                    backbone.name, backbone.reused.metadata.get("strategy"), backbone.spec.feature_dim)
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
    if config.exclude_label_issues != "0":  # the ranking needs enough files per class: say so before any work
        require_enough_for_folds([e.label for e in train_examples + val_examples], scan.class_names)
    if warning := unused_mixup_warning(config, scan.modality):
        logger.warning(warning)

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

    manifest = build_manifest(scan, examples, config.seed)
    manifest_hash = _manifest_sha256(manifest)
    run_dir, resume = _start_or_resume(config, resume_dir, backbone.name, manifest_hash, locks)
    logger.info("Run directory: %s", run_dir)
    resolved = config.to_dict() | {"output": str(run_dir), "backbone": backbone.name, "weights": backbone.weights}
    if backbone.reused is not None:  # --resume and --config must open the same run again
        resolved |= {"backbone": config.backbone, "weights": None}
    resolved["image_size" if scan.modality == "image" else "sequence_length"] = backbone.size
    if resume is None:
        rd.write_json(run_dir / rd.CONFIG_FILE, resolved)
        rd.write_json(run_dir / rd.DATA_REPORT_FILE, report)
        rd.write_json(run_dir / rd.MANIFEST_FILE, manifest)
    log_dir = run_dir / rd.LOGS_DIR

    if config.profile and resume is None:
        profile_feature_pass(feature_extractor, train_examples, scan.modality, backbone.size, config, log_dir)
    store_key = (feature_store_key(feature_extractor, backbone.name, backbone.weights, scan.modality, backbone.size,
                                   config.resize, backbone.pooling) if config.cache_features else None)
    train_features = cached_features(feature_extractor, train_examples, scan.modality, backbone.size,
                                     config.batch_size, config.resize, store_key)
    val_features = cached_features(feature_extractor, val_examples, scan.modality, backbone.size,
                                   config.batch_size, config.resize, store_key)

    # Likely mislabelled files (data_report.json), optionally left out of training.
    issues = rank_label_issues(report, train_examples + val_examples, np.concatenate([train_features, val_features]),
                               scan.class_names, config.seed, required=config.exclude_label_issues != "0")
    train_examples, train_features = exclude_from_training(report, issues, config.exclude_label_issues,
                                                           train_examples, train_features)
    if resume is None:
        rd.write_json(run_dir / rd.DATA_REPORT_FILE, report)
        log_label_issues(log_dir, issues, scan.modality, backbone.size, config.resize)

    context = PhaseContext(config, log_dir, Checkpoints(run_dir), scan.class_names,
                           list(resume[0]["history"]) if resume else [], resume)
    if scan.modality == "image" and resume is None:
        first = train_examples[:config.batch_size]
        tb.log_sample_inputs(log_dir, [e.path for e in first], [e.label for e in first], scan.class_names,
                             (backbone.size, backbone.size), config.resize,
                             note="Training inputs after decode and resize, before any augmentation: the head "
                                  "phase trains on features computed once from these.")
    refit = decide_refit(config, any(e.split == "val" for e in scan.examples), len(train_examples),
                         len(scan.class_names))
    # The backbone as built (pretrained), for the refit's second fine-tuning.
    pristine_backbone = feature_extractor.get_weights() if refit.applies and config.strategy == "finetune" else None
    extra_metadata = {}
    if resume is not None and resume[0]["phase"] in REFIT_PHASES:
        # The first model is gone (the refit's checkpoints replaced it): what it left was saved with them.
        selection = resume[0]["selection"]
        phase_names = selection["phases"]
        val_accuracy, val_loss, temperature = selection["val_accuracy"], selection["val_loss"], selection["temperature"]
    else:
        if config.strategy in META_STRATEGIES:
            outcome = run_meta_training(context, config, scan, backbone, feature_extractor, train_examples,
                                        val_examples, train_features, val_features, run_dir, store_key)
            head, head_model, final_val_features, phase_names = (outcome.head, outcome.head_model,
                                                                 outcome.val_embeddings, outcome.phases)
            task_model = build_task_model(feature_extractor, head, outcome.embedding)
            extra_metadata["meta"] = outcome.metadata
            train_features, val_features = outcome.features  # the top_blocks source stage may change the backbone
            steps_taken = 0
            val_probabilities = outcome.val_probabilities  # before the refit on train + validation
        else:
            task_model, head_model, final_val_features, phase_names, steps_taken = _train_transfer(
                context, config, scan, backbone, feature_extractor, train_examples, val_examples, train_features,
                val_features, log_dir)
            val_probabilities = head_model.predict(final_val_features, verbose=0)

        val_accuracy = float(np.mean(val_probabilities.argmax(axis=1) == np.asarray(val_labels)))
        picked = val_probabilities[np.arange(len(val_labels)), np.asarray(val_labels)]
        val_loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
        temperature = fit_temperature(val_probabilities, val_labels)
        hidden_units = 0 if config.strategy in META_STRATEGIES else config.hidden_units
        _write_tensorboard_extras(log_dir, resolved, report, _penultimate(head_model, final_val_features, hidden_units),
                                  val_probabilities, val_examples, scan, backbone, config,
                                  {"val_accuracy": val_accuracy, "val_loss": val_loss})
        selection = {"phases": phase_names, "epochs": refit_epochs(context.history, config.strategy),
                     "steps": steps_taken, "val_accuracy": val_accuracy, "val_loss": val_loss,
                     "temperature": temperature} if refit.applies else None

    if refit.applies:
        logger.info("Refit: %s.", refit.reason)
        task_model = refit_transfer(context, scan, backbone, feature_extractor, pristine_backbone,
                                    train_examples + val_examples, np.concatenate([train_features, val_features]),
                                    selection)
        phase_names = phase_names + [REFIT_HEAD] + ([REFIT_FINETUNE] if config.strategy == "finetune" else [])
    elif config.strategy not in META_STRATEGIES:
        logger.info("No refit (%s).", refit.reason)
    extra_metadata["refit"] = outcome.refit if config.strategy in META_STRATEGIES else {
        "applied": refit.applies, "reason": refit.reason,
        **({"epochs": selection["epochs"], "num_files": len(train_examples) + len(val_examples),
            "note": "The model was trained again on train + validation for the epochs early stopping chose; "
                    "the validation metrics and the temperature are the first model's."} if refit.applies else {}),
    }

    # Unknown-class rejection, fitted on training data only (unknown.json + unknown.npz).
    detector = fit_run_detector(task_model, config, scan.modality, backbone.size, train_examples, val_examples,
                                train_features, val_features, run_dir)
    extra_metadata["unknown"] = {"score": detector.score, "threshold": detector.threshold,
                                 "reject_recall": detector.reject_recall, "file": DETECTOR_FILE}
    rd.save_model(task_model, run_dir)
    history = context.history
    rd.write_json(run_dir / rd.HISTORY_FILE, {
        "phases": [{"name": name, "epochs": sum(e["phase"] == name for e in history)} for name in phase_names],
        "epochs": history,
    })
    wall_time = time.perf_counter() - started
    epochs_trained = len(history)
    rd.write_json(run_dir / rd.METADATA_FILE, {
        "format_version": 1,
        "class_names": scan.class_names,
        "modality": scan.modality,
        "input_spec": input_spec(scan.modality, backbone.size, config.resize),
        "backbone": backbone.name,
        "weights": backbone.weights,
        **({"backbone_run": backbone.reused.record} if backbone.reused is not None else {}),
        "strategy": config.strategy,
        "class_digest": class_digest(task_model, scan.class_names),  # ties this file to model.keras
        "metrics": {"val_accuracy": val_accuracy, "val_loss": val_loss,
                    "epochs_trained": epochs_trained, "wall_time_s": round(wall_time, 2)},
        "calibration": {"temperature": temperature, "fitted_on": "validation split" + (
            " (the first model's, before the refit)" if refit.applies else "")},
        "precision": precision,
        **extra_metadata,
        "resumed": resume_dir is not None,
        "data_dir": scan.root,
        "manifest_sha256": manifest_hash,
        "seed": config.seed,
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    rd.mark_complete(run_dir)
    context.checkpoints.remove()  # only needed to resume (a crash before this only leaves them behind)
    logger.info("Done: best validation accuracy %.4f (loss %.4f) after %d epochs in %.1f s. Run directory: %s",
                val_accuracy, val_loss, epochs_trained, wall_time, run_dir)
    return TrainResult(run_dir, val_accuracy, val_loss, epochs_trained, wall_time)
