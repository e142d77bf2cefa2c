"""A training run end to end: scan, split, features once, head, run directory."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
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
from app.distribution import DistributeInfo, resolve_distribution
from app.data_report import build_data_report, build_manifest, format_data_report, mark_excluded
from app.errors import USER_ERRORS, UserError
from app.multi_worker import multi_worker_run
from app.run_integrity import class_digest
from app.run_lock import RunLock, refuse_if_held, require_still_held
from app.run_metadata import RunMetadata
from app.versions import package_versions
from app.backbone_choice import cap_unfreeze, input_spec, resolve_backbone
from app.backbone_reuse import check_recorded_weights, warn_of_held_out_files_it_trained_on
from app.checkpoint_state import ResumePoint, TrainingClock
from app.checkpoints import Checkpoints
from app.features import cached_features, feature_store_key, truncation_report
from app.phases import (PhaseContext, phase2_imbalance_warning, phase2_schedule_warning, unused_image_option_warning,
                        unused_mixup_warning, unused_pair_loss_warning)
from app.config import META_STRATEGIES
from app.refit import (REFIT_FINETUNE, REFIT_HEAD, REFIT_PHASES, RefitDecision, decide_refit, held_out_head_from_state,
                       held_out_head_state, refit_epochs, refit_keeps_embedding, refit_transfer)
from app.strategies import TrainingJob, strategy_for
from app.label_issue_run import exclude_label_issues, log_label_issues, not_ranked, rank_label_issues
from app.label_issues import require_enough_for_folds
from app.data_folder import refuse_output_inside_data, refuse_runs_as_data, require_training_files
from app.resume_checks import START_AGAIN, check_same_split, manifest_sha256, refuse_unmarked_run
from app.meta_pools import check_source_folder, check_target_pools, unused_source_warning
from app.meta_training import (check_init_fits, check_init_run, check_meta_input_options, meta_input_mode,
                               source_candidates)
from app.target_finetuning import target_finetune_applies
from app.open_set import first_model_offsets, fit_run_detector, head_weights
from app.unknown_scores import percent
from app.unknown_store import DETECTOR_FILE
from app.unused_options import unused_strategy_options_warning
from app.precision import apply_precision
from data.pipeline import read_texts
from data.records import Example
from data.scan import require_trainable, scan_folder
from data.splits import assign_splits, class_weights

logger = logging.getLogger(__name__)


PROFILE_BATCHES = 3


@dataclass
class TrainResult:
    run_dir: Path
    val_accuracy: float
    val_loss: float
    epochs_trained: int
    wall_time_s: float  # every session's (a resumed run's earlier ones too): TrainingClock.total_s
    time_text: str = ""  # the training time as the last lines say it (`training_time_text`)


def default_run_dir(config: TrainConfig, backbone_name: str) -> Path:
    dataset = _slug(Path(config.data_dir).expanduser().resolve().name) or "data"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{dataset}-{_slug(Path(backbone_name).name)}-{config.strategy}"
    path, number = Path("runs") / name, 1
    while path.exists() or path.is_symlink():  # another run started in the same second
        number += 1
        path = Path("runs") / f"{name}-{number}"
    return path


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


def check_data(config: TrainConfig, scan=None):
    """The data doctor: scan and check every file (unless `scan` is given), assign splits, build the report.

    Returns (scan, examples with splits, data report). Raises DataError when the
    folder cannot be used for training.
    """
    if scan is None:
        refuse_runs_as_data(config.data_dir)  # before the scan: it read a run's logs/ as a class
        scan = scan_folder(config.data_dir)
    require_training_files(scan)
    require_trainable(scan, min_per_class=2)
    examples = assign_splits(scan, config.val_fraction, config.seed, config.test_fraction)
    _warn_fractions_of_present_splits(config, scan.splits_present())
    if "val" in scan.splits_present():  # the folder's own val/ (a carve-out holds out from every class it can)
        lacking = sorted(set(scan.class_names) - {scan.class_names[e.label] for e in examples if e.split == "val"})
        if lacking:
            logger.warning("The folder's val/ split has no file of %d of %d classes (%s): early stopping, the "
                           "temperature and the unknown-class threshold are fitted without them.", len(lacking),
                           len(scan.class_names), ", ".join(lacking[:10]) + (", ..." if len(lacking) > 10 else ""))
    train_labels = [e.label for e in examples if e.split == "train"]
    weights = class_weights(train_labels, len(scan.class_names)) if config.class_weight == "auto" else None
    report = build_data_report(scan, examples, weights)
    across = report["duplicates"]["across_splits"]["num_files"]
    if across:
        logger.warning("%d val/test files have an exact duplicate in train: evaluation on them is optimistic.", across)
    return scan, examples, report


def _warn_fractions_of_present_splits(config: TrainConfig, present) -> None:
    """--val-fraction / --test-fraction set for a folder with its own val/ / test/: that split is used as it is, and
    the value given was ignored without a word (config.json still records it as if it had split the data)."""
    defaults = TrainConfig()
    for split, key in (("val", "val_fraction"), ("test", "test_fraction")):
        if split in present and getattr(config, key) != getattr(defaults, key):
            logger.warning("--%s %g has no effect: %s has its own %s/ split, which is used as it is.",
                           key.replace("_", "-"), getattr(config, key), config.data_dir, split)


def _start_or_resume(config: TrainConfig, resume_dir, backbone_name: str, manifest: dict, locks: ExitStack):
    """The run directory and the checkpoint to continue from (None: start at the beginning).
    The run directory's lock is taken into `locks` before anything in it is read or written."""
    if resume_dir is None:
        run_dir = Path(config.output).expanduser() if config.output else default_run_dir(config, backbone_name)
        refuse_output_inside_data(config, run_dir, typed=bool(config.output))
        _refuse_used_output(run_dir, typed=bool(config.output))  # before the folder is made
        # The lock before the INCOMPLETE marker: two commands started together with one --output each found the
        # other's marker before either held the lock, and the second was told the run was "unfinished: --resume it".
        run_dir.mkdir(parents=True, exist_ok=True)
        locks.enter_context(RunLock(run_dir))
        rd.create_run_dir(run_dir, typed=bool(config.output))  # checks again under the lock, then the marker
        return run_dir, None
    run_dir = Path(resume_dir)
    locks.enter_context(RunLock(run_dir))
    if not (run_dir / rd.INCOMPLETE_MARKER).exists():
        refuse_unmarked_run(run_dir)
    logs = run_dir / rd.LOGS_DIR
    tb.check_events_folders(logs, logs / tb.TRAIN, logs / tb.VALIDATION)  # before any work, not at the first epoch
    for leftover in rd.remove_leftover_temporaries(run_dir):
        logger.info("Removed %s, a file an interrupted write left", leftover.name)
    saved = run_dir / rd.MANIFEST_FILE
    if saved.is_file():
        check_same_split(config, run_dir, rd.read_json(saved, START_AGAIN), manifest)
    checkpoints = Checkpoints(run_dir)
    if checkpoints.root.exists() and not checkpoints.root.is_dir():  # its first save was a FileExistsError traceback
        raise UserError(f"{str(checkpoints.root)!r} is a file, not the run's checkpoints folder. Move it away, then "
                        f"resume again (the run starts its training from the beginning). Received: --resume {run_dir}")
    resume = checkpoints.latest()
    if resume is None:
        logger.info("No completed epoch in %s yet: starting its training from the beginning.", run_dir)
    elif not saved.is_file():
        # Written before the first checkpoint, so it was removed since: without it the split went unchecked, and
        # the run completed without the list of held-out files that evaluate.py and export.py then refused it for.
        raise UserError(f"{str(saved)!r} is missing: without it, the split this run trained on cannot be checked "
                        "or kept. Restore it from a backup and resume again, or start a new run (python train.py "
                        f"--config {rd.shell_path(run_dir)}/config.json --output NEW_DIR). Received: --resume {run_dir}")
    _drop_stale_events(run_dir, resume)
    return run_dir, resume


def _drop_stale_events(run_dir: Path, resume: ResumePoint | None) -> None:
    """TensorBoard's events of the work this resume does again (after its checkpoint; all of them without one),
    before anything logs it again: each epoch then shows once, as history.json has it."""
    if resume is not None and resume.state.logged_until is None:
        return  # a checkpoint of an earlier version does not say when it was written: nothing is known to be stale
    dropped = tb.drop_events_after(run_dir / rd.LOGS_DIR, None if resume is None else resume.state.logged_until)
    if dropped:
        logger.info("Removed %d TensorBoard event(s) logged after %s: this run logs that work again as it redoes it",
                    dropped, "the checkpoint it resumes from" if resume is not None else "it started")


def _refuse_used_output(run_dir: Path, typed: bool) -> None:
    """A UserError when `run_dir` cannot become a new run directory (rd.check_new_run_dir); a run another process
    holds names its holder, not only "not empty"."""
    if (run_dir / rd.LOCK_FILE).exists():
        with RunLock(run_dir):
            pass
    rd.check_new_run_dir(run_dir, typed)


def _no_validation_message(class_names: list[str], train_examples: list[Example]) -> str:
    """Why no file could be held out for validation, counted per class: a folder of 4 byte-identical copies per
    class was told that "every class needs at least 2 training files", which each had (copies stay together in
    one split, data/splits.py, so a class of copies cannot give one to validation)."""
    files, distinct = Counter(), {}
    for e in train_examples:
        files[e.label] += 1
        distinct.setdefault(e.label, set()).add(e.sha256 or e.path)
    counts = [f"{class_names[label]!r}: {files[label]} file(s) ({len(distinct[label])} distinct)"
              for label in sorted(files)]
    shown = "; ".join(counts[:5]) + (f"; ... ({len(counts) - 5} more)" if len(counts) > 5 else "")
    return ("No validation files: a class can give one to validation only when it has 2 or more training files "
            "that are not byte-identical copies of each other or of another class's files (copies stay in one "
            f"split; one filed under two classes trains in both). Add files or a val/ folder. Received: {shown}")


def _check_episodes_after_exclusion(config: TrainConfig, scan, train_examples: list[Example],
                                    val_examples: list[Example], run_dir: Path) -> None:
    """The episode check before the run (check_target_pools) counted the files --exclude-label-issues then left out:
    a meta run whose target no longer filled an episode failed later, in meta-training, naming a class's count that
    matched neither the folder nor anything the user typed. The same files are left out on --resume, so it cannot
    continue this run either."""
    try:
        check_target_pools(config, scan, train_examples, val_examples)
    except USER_ERRORS as error:
        raise UserError(f"--exclude-label-issues {config.exclude_label_issues} left too few training files for the "
                        f"episodes: {str(error).rstrip('.')}. Start a new run (--output NEW_DIR) leaving out fewer files (a smaller N) "
                        f"or with smaller episodes; {rd.shell_path(run_dir)} stays INCOMPLETE.") from None


def _mark_excluded(run_dir: Path, left_out: list[str]) -> None:
    """manifest.json with the files --exclude-label-issues left out marked (app/data_report.mark_excluded): written
    once; a resume writes it only if a kill came first."""
    if not left_out:
        return
    path = run_dir / rd.MANIFEST_FILE
    manifest = rd.read_json(path, START_AGAIN)
    if mark_excluded(manifest, left_out):
        rd.write_json(path, manifest)


def _penultimate(head_model: keras.Model, features: np.ndarray, hidden_units: int) -> np.ndarray:
    """What the projector shows: the head's input, or its hidden layer when there is one."""
    if not hidden_units:
        return features
    return keras.Model(head_model.inputs, head_model.get_layer("head_hidden").output).predict(features, verbose=0)


def run_training(config: TrainConfig, resume_dir: str | Path | None = None) -> TrainResult:
    """Train (or, with `resume_dir`, continue training) one run and write its run directory."""
    with ExitStack() as locks:  # the run directory's lock, held until the run is complete or this process ends
        return _run_training(config, resume_dir, locks)


def _run_training(config: TrainConfig, resume_dir, locks: ExitStack) -> TrainResult:
    clock = TrainingClock()
    config.validate()
    if resume_dir is not None and not (Path(resume_dir) / rd.INCOMPLETE_MARKER).exists():
        # A finished run was called finished only after the backbone was built and the data scanned (minutes on a big
        # folder). The marker never comes back once removed, so the check needs no lock; it is made again under it.
        refuse_unmarked_run(Path(resume_dir))
    if resume_dir is not None and not Path(config.data_dir).expanduser().is_dir():
        # The scan's own message told the user to pass another folder, which --resume does not take.
        raise UserError(f"The data folder this run trained on is gone (or not a folder): {config.data_dir!r}, from "
                        f"{str(Path(resume_dir) / rd.CONFIG_FILE)!r}. Received: --resume {resume_dir}. A resumed run "
                        "reads the files it started with: put the folder back at that path, then resume again (if "
                        "it moved, setting data_dir in that config.json to its new place does too); or start a new "
                        "run on other data (python train.py --config RUN_DIR/config.json DATA_DIR --output NEW_DIR).")
    if config.output and resume_dir is None:
        # Before any work, as the other checks of what the user typed: a used --output was refused only once the
        # data scan (minutes on a big folder) was done. create_run_dir checks again, under the run's lock.
        output = Path(config.output).expanduser()
        if output.exists():  # the data folder itself (or a class folder) is refused as that, not as "not empty"
            refuse_output_inside_data(config, output, typed=True)
        _refuse_used_output(output, typed=True)
    # Refuses what cannot run distributed before any work starts.
    distribution = resolve_distribution(config.distribute, config.batch_size,
                                        config.meta_batch_size if config.strategy in META_STRATEGIES else None,
                                        config.strategy, resume_dir=None if resume_dir is None else str(resume_dir))
    if resume_dir is not None and distribution.chief:  # a non-chief worker resumes from a copy, unlocked
        refuse_if_held(resume_dir)  # now, not after the data scan and backbone build (minutes) as RunLock would
    precision = apply_precision(config.precision)
    # Every model, optimizer and metric of the run is built in the strategy's scope (the default
    # strategy's for --distribute none): backbone, head, phase 2, refit. fit() and predict() then
    # split each global batch across the replicas.
    with distribution.strategy.scope():
        if distribution.info.strategy != "multi-worker":
            return _train_in_scope(config, resume_dir, locks, distribution.info, precision, clock, chief=True)
        # Only the chief writes the run directory; the others train the same in a folder they remove.
        with multi_worker_run(config, resume_dir, distribution.chief, distribution.strategy) as worker:
            result = _train_in_scope(worker.config, worker.resume_dir, locks, distribution.info, precision, clock,
                                     chief=distribution.chief)
        return dataclasses.replace(result, run_dir=worker.run_dir)


def _train_in_scope(config: TrainConfig, resume_dir, locks: ExitStack, distribute: DistributeInfo, precision: str,
                    clock: TrainingClock, chief: bool) -> TrainResult:
    # data checked, backbone built: nothing is written before this succeeds
    prepared = _prepare(config, resuming=resume_dir is not None)
    run = _open_run_directory(config, prepared, resume_dir, locks)
    if run.resume is not None:  # the earlier sessions' time, as its checkpoint recorded it
        clock.resume_from(run.resume.state)
    if chief:  # its config.json is written: until it is complete, an interrupt's message names it for --resume
        rd.set_active_run(run.run_dir)
    job = _training_job(config, prepared, run, chief, clock)
    refit = decide_refit(config, any(e.split == "val" for e in prepared.scan.examples), len(job.train_examples),
                         len(prepared.scan.class_names))
    result = _train_and_refit(job, run, refit, prepared.report)
    detector = fit_run_detector(result.task_model, config, prepared.scan.modality, prepared.backbone.size,
                                job.train_examples, job.val_examples, job.train_features, job.val_features,
                                run.run_dir, result.held_out_head, result.validation_trained,
                                result.threshold_offsets)  # unknown-class rejection, fitted on training data only
    return _write_results(config, prepared, run, job, result, detector, precision, distribute, resume_dir is not None,
                          clock, chief)


@dataclass
class _Prepared:
    """What is known before the run directory exists."""

    scan: object  # data/scan.py's ScanResult
    examples: list  # every file, with its split
    report: dict  # data_report.json
    backbone: object  # app/backbone_choice.py's ResolvedBackbone
    feature_extractor: keras.Model

    def split(self, name: str) -> list:
        return [e for e in self.examples if e.split == name]


# Below this many files per class the test carve-out costs accuracy: BENCHMARKS.md "carveout" measured a
# median 3.5 points at 5 images per class (linear), about nothing at 10 and 20.
CARVE_OUT_COSTS_BELOW_PER_CLASS = 10


def fraction_text(fraction: float) -> str:
    """A split fraction as a percentage to 3 significant digits: `:.0%` showed --test-fraction 0.001 as "0%"."""
    return f"{percent(fraction)}%"


def held_out_line(config: TrainConfig, scan, test_files: int, files_per_class: float | None = None) -> str:
    """One line saying which files no training step sees, and what to do with them."""
    if "test" in scan.splits_present():
        return f"Held out for testing: the folder's test/ split ({test_files} files); training never sees them."
    if test_files:
        few = files_per_class is not None and files_per_class < CARVE_OUT_COSTS_BELOW_PER_CLASS
        return (f"Held out for testing: {test_files} files ({fraction_text(config.test_fraction)} of each class, at "
                "least 1 of every class with 3 files or more, --test-fraction); training never sees them and "
                "`evaluate.py RUN_DIR DATA_DIR` scores them. "
                + (f"With {files_per_class:g} files per class that costs accuracy (a median 3.5 points at 5 per "
                   "class, measured): consider --test-fraction 0 and evaluating on another folder."
                   if few else "--test-fraction 0 trains on them instead (then evaluate on another folder)."))
    return ("No test files held out (no test/ folder, --test-fraction 0): evaluate this run on files it never "
            "saw (another folder) for an honest estimate.")


def median_files_per_class(examples, num_classes: int) -> float:
    """The median number of `examples` per class (a class without any counts as 0)."""
    counts = Counter(e.label for e in examples)
    return float(np.median([counts.get(label, 0) for label in range(num_classes)]))


def _prepare(config: TrainConfig, resuming: bool = False) -> _Prepared:
    """The data doctor, the checks that need no backbone, then the backbone itself. `resuming`: the options'
    warnings were given when the run started (config.json's options, which a resume cannot change)."""
    scan, examples, report = check_data(config)
    per_class = median_files_per_class([e for e in examples if e.split == "train"], len(scan.class_names))
    if (filled := config.apply_modality_defaults(scan.modality, per_class)) and config.strategy == "finetune":
        logger.info("finetune recipe for %s data with %g training files per class (median): %s", scan.modality,
                    per_class, ", ".join(f"{k}={v}" for k, v in filled.items()))
    backbone = resolve_backbone(config, scan.modality)
    if backbone.reused is not None:  # a finished run's backbone: its resize mode too (app/backbone_reuse.py)
        config.resize = backbone.resize
        logger.info("Backbone: the run %s (%s, %s), its %d-d penultimate output", backbone.reused.run_dir,
                    backbone.name, backbone.reused.metadata.strategy, backbone.spec.feature_dim)
    train_examples = [e for e in examples if e.split == "train"]
    val_examples = [e for e in examples if e.split == "val"]
    logger.info(
        "Data: %d classes, %d train / %d val / %d test files, %d skipped",
        len(scan.class_names), len(train_examples), len(val_examples),
        sum(e.split == "test" for e in examples), len(scan.skipped),
    )
    logger.info(held_out_line(config, scan, sum(e.split == "test" for e in examples),
                              median_files_per_class(examples, len(scan.class_names))))
    if backbone.reused is not None:
        warn_of_held_out_files_it_trained_on(backbone.reused, examples)
    if not val_examples:
        raise UserError(_no_validation_message(scan.class_names, train_examples))
    if config.exclude_label_issues != "0":  # the ranking needs enough files per class: say so before any work
        require_enough_for_folds([e.label for e in train_examples + val_examples], scan.class_names)
    warnings = [warning for warning in (
        unused_mixup_warning(config, scan.modality), unused_image_option_warning(config, scan.modality),
        unused_source_warning(config), phase2_schedule_warning(config), phase2_imbalance_warning(config),
        unused_strategy_options_warning(config, scan.modality, meta_input_mode(config, backbone.weights))) if warning]
    if warnings and resuming:
        # The same warnings on every resume said nothing new, about options --resume takes no others for; one INFO
        # line keeps them in this session's log (the console is a run's only log).
        logger.info("As warned when this run started (a resume keeps its options): %s", " ".join(warnings))
    else:
        for warning in warnings:
            logger.warning(warning)
    check_source_folder(config, scan)  # a wrong --meta-data folder is refused before any work
    check_target_pools(config, scan, train_examples, val_examples)  # so is a target that cannot fill an episode
    check_init_run(config)
    check_meta_input_options(config, scan.modality, backbone.weights)
    # Whether any text fine-tuning runs needs the input mode checked just above (protonet's target stage).
    fine_tunes = config.strategy == "finetune" or (
        config.strategy == "protonet"
        and target_finetune_applies(config, scan.modality, meta_input_mode(config, backbone.weights))[0])
    pair_warning = unused_pair_loss_warning(config, scan.modality, fine_tunes)
    if pair_warning:
        logger.warning(pair_warning)

    # Build the backbone before creating the run directory: missing weights (offline
    # downloads, bad paths) fail here, within seconds, leaving nothing behind.
    keras.utils.set_random_seed(config.seed)
    feature_extractor = backbone.spec.build_features(backbone.size, backbone.weights, backbone.pooling)
    feature_extractor.trainable = False
    if unfreezes_blocks(config, backbone.weights, fine_tunes):
        cap_unfreeze(config, backbone.spec, feature_extractor, backbone.name)
    check_init_fits(config, feature_extractor, backbone.name, backbone.weights)  # needs the built backbone

    if scan.modality == "text":
        texts = read_texts([e.path for e in examples], [e.encoding for e in examples])
        report["truncation"] = truncation_report(feature_extractor, texts, backbone.size)
        if report["truncation"]["num_truncated"]:
            logger.info("%d of %d texts are longer than %d tokens and are truncated",
                        report["truncation"]["num_truncated"], len(texts), backbone.size)
    return _Prepared(scan, examples, report, backbone, feature_extractor)


def unfreezes_blocks(config: TrainConfig, weights: str, fine_tunes: bool) -> bool:
    """Whether the run trains the backbone's top `--unfreeze` blocks: fine-tuning (`fine_tunes`: finetune, or
    protonet's target stage), meta-training a pretrained backbone on raw inputs, or protonet's top_blocks source
    stage. (A backbone from scratch trains whole; the others keep it frozen.)"""
    if fine_tunes:
        return True
    if config.strategy not in META_STRATEGIES:
        return False
    mode = meta_input_mode(config, weights)
    return (mode == "raw" and weights != "none") or "top_blocks" in (source_candidates(config, mode) or ())


@dataclass
class _OpenRun:
    run_dir: Path
    resume: ResumePoint | None  # None: a fresh start
    resolved: dict  # config.json
    manifest_hash: str

    @property
    def log_dir(self) -> Path:
        return self.run_dir / rd.LOGS_DIR


def _open_run_directory(config: TrainConfig, prepared: _Prepared, resume_dir, locks: ExitStack) -> _OpenRun:
    """A new run directory with config.json, data_report.json and manifest.json, or the one to resume."""
    scan, backbone = prepared.scan, prepared.backbone
    manifest = build_manifest(scan, prepared.examples, config.seed)
    manifest_hash = manifest_sha256(manifest)
    if backbone.reused is not None:  # a resume must go on over the backbone it started on
        check_recorded_weights(config.weights, backbone.reused, resume_dir)
    run_dir, resume = _start_or_resume(config, resume_dir, backbone.name, manifest, locks)
    logger.info("Run directory: %s", run_dir)
    # The run directory as an absolute path, as the data folders are (app/config_cli.py::_merged_config): config.json
    # says where the run is wherever `--config` or `--resume` is typed later.
    resolved = config.to_dict() | {"output": str(run_dir.absolute()), "backbone": backbone.name,
                                   "weights": backbone.weights}
    if backbone.reused is not None:  # --resume and --config must open the same run again, with the same weights
        resolved |= {"backbone": config.backbone, "weights": backbone.weights}
    resolved["image_size" if scan.modality == "image" else "sequence_length"] = backbone.size
    if resume is None:
        rd.write_json(run_dir / rd.CONFIG_FILE, resolved)
        rd.write_json(run_dir / rd.DATA_REPORT_FILE, prepared.report)
        rd.write_json(run_dir / rd.MANIFEST_FILE, manifest)
    return _OpenRun(run_dir, resume, resolved, manifest_hash)


def _training_job(config: TrainConfig, prepared: _Prepared, run: _OpenRun, chief: bool,
                  clock: TrainingClock) -> TrainingJob:
    """Features once (cached), likely label issues ranked (and optionally left out), the phase context.
    `chief`: this process writes the run directory (false on the other workers of a multi-worker run); `clock`: the
    run's training time, which every checkpoint records."""
    scan, backbone, feature_extractor = prepared.scan, prepared.backbone, prepared.feature_extractor
    train_examples, val_examples = prepared.split("train"), prepared.split("val")
    if config.profile and run.resume is None:
        profile_feature_pass(feature_extractor, train_examples, scan.modality, backbone.size, config, run.log_dir)
    store_key = (feature_store_key(feature_extractor, backbone.name, backbone.weights, scan.modality, backbone.size,
                                   config.resize, backbone.pooling) if config.cache_features else None)
    train_features = cached_features(feature_extractor, train_examples, scan.modality, backbone.size,
                                     config.batch_size, config.resize, store_key)
    val_features = cached_features(feature_extractor, val_examples, scan.modality, backbone.size,
                                   config.batch_size, config.resize, store_key)

    # Likely mislabelled files (data_report.json), optionally left out of training. The list is written once, into
    # a new run's data report; otherwise it is needed only to leave files out: a resumed run keeps the report it
    # wrote, and a non-chief worker's report goes into a folder it removes, so those two rank only when files are
    # left out (the five-fold heads cost seconds to minutes on many files).
    report = prepared.report
    # A resumed run whose data_report.json went missing or was damaged while it was stopped writes it again (the
    # same scan, split, features and seed give the same report): otherwise it was marked complete with a report
    # that evaluate.py's report.md then refused to read.
    writes_report = chief and (run.resume is None or _report_lost(run.run_dir / rd.DATA_REPORT_FILE))
    if config.exclude_label_issues != "0" or writes_report:
        issues = rank_label_issues(report, train_examples + val_examples,
                                   np.concatenate([train_features, val_features]), scan.class_names, config.seed,
                                   required=config.exclude_label_issues != "0")
    else:
        issues = not_ranked(report, "a resumed run keeps the list it wrote" if run.resume is not None else
                            "this worker is not the chief, which ranks them into the run directory")
    train_examples, train_features, val_examples, val_features = exclude_label_issues(
        report, issues, config.exclude_label_issues, train_examples, train_features, val_examples, val_features)
    if report.get("label_issues_excluded"):
        _check_episodes_after_exclusion(config, scan, train_examples, val_examples, run.run_dir)
    if chief:
        _mark_excluded(run.run_dir, report.get("label_issues_excluded", []))
    if writes_report:
        rd.write_json(run.run_dir / rd.DATA_REPORT_FILE, report)
    if run.resume is None:
        log_label_issues(run.log_dir, issues, scan.modality, backbone.size, config.resize)

    context = PhaseContext(config, run.log_dir, Checkpoints(run.run_dir, clock), scan.class_names,
                           list(run.resume.state.history) if run.resume else [], run.resume)
    if scan.modality == "image" and run.resume is None:
        first = train_examples[:config.batch_size]
        tb.log_sample_inputs(run.log_dir, [e.path for e in first], [e.label for e in first], scan.class_names,
                             (backbone.size, backbone.size), config.resize,
                             note="Training inputs after decode and resize, before any augmentation: the head "
                                  "phase trains on features computed once from these.")
    return TrainingJob(context, scan, backbone, feature_extractor, train_examples, val_examples, train_features,
                       val_features, run.run_dir, store_key)


def _report_lost(path: Path) -> bool:
    """True when a resumed run's data report is missing, damaged, or the first one written (before the label issues
    were ranked into it: a run killed between the two writes); logged, as it is written again."""
    try:
        written = rd.read_json(path)
    except UserError as error:
        logger.warning("%s The resumed run writes it again.", error)
        return True
    if not isinstance(written, dict) or "label_issues" not in written:
        logger.warning("%r does not hold a complete data report. The resumed run writes it again.", str(path))
        return True
    return False


@dataclass
class _Result:
    """The model to save and what metadata.json and history.json say about it."""

    task_model: keras.Model
    phases: list[str]
    val_accuracy: float  # the first model's, before any refit
    val_loss: float
    temperature: float
    refitted: bool  # on train + validation, after the first model (linear, finetune: app/refit.py)
    refit: dict  # metadata.json's "refit"
    meta: dict | None  # metadata.json's "meta" (meta strategies)
    # The first model's head_dense (kernel, bias), which never saw the validation files, when a refit retrained
    # only that layer: the unknown-class detector scores with it (app/open_set.fit_run_detector). None otherwise.
    held_out_head: tuple[np.ndarray, np.ndarray] | None = None
    validation_trained: bool = False  # a refit (transfer or meta) trained the final model on the validation files
    # When that refit retrained the embedding: the first model's unknown-class thresholds, carried over to the final
    # model's (app/threshold_transfer.py). None otherwise.
    threshold_offsets: dict[str, float] | None = None


def _held_out_head(config: TrainConfig, refit: RefitDecision, trained) -> tuple[np.ndarray, np.ndarray] | None:
    """The head_dense weights the unknown-class detector scores with when the final model will have trained on
    the validation files: the first model's, which did not (None: the final model's own head is used).

    Why: the detector's threshold is the score that keeps --reject-recall of the validation files. Scored by a
    head refitted on those very files, they look more familiar than a new file of a known class will (bundled
    Fashion-MNIST sample, linear, --reject-recall 0.95, 3 seeds: 5.0-13.5% of 200 new known files rejected; scored
    by the first head, 2.0-4.5%). Scored by the first head they are new to it, as a served file is. This holds only
    where the refit changes nothing but head_dense (refit_keeps_embedding): the first head then reads the final
    model's embedding as its own, and the detector is exactly the one the run would fit without the refit."""
    if refit.applies and refit_keeps_embedding(config):
        return head_weights(trained.task_model)
    return trained.held_out_head  # a meta strategy's first classifier, when its own refit changed only the head


def _train_and_refit(job: TrainingJob, run: _OpenRun, refit: RefitDecision, report: dict) -> _Result:
    """The strategy's training, its validation scores and temperature, then the refit when it applies."""
    config, context, scan, backbone = job.config, job.context, job.scan, job.backbone
    val_labels = [e.label for e in job.val_examples]
    # The backbone as built (pretrained), for the refit's second fine-tuning.
    pristine_backbone = job.feature_extractor.get_weights() if refit.applies and config.strategy == "finetune" else None
    trained = None
    if context.resumed_phase in REFIT_PHASES:
        # The first model is gone (the refit's checkpoints replaced it): what it left was saved with them.
        selection = run.resume.state.selection
        phase_names = selection["phases"]
        val_accuracy, val_loss, temperature = selection["val_accuracy"], selection["val_loss"], selection["temperature"]
        held_out_head = held_out_head_from_state(selection)
        threshold_offsets = selection.get("threshold_offsets")  # None from a checkpoint written before they were kept
    else:
        trained = strategy_for(config).train(job)
        task_model, phase_names, val_probabilities = trained.task_model, trained.phases, trained.val_probabilities
        if trained.features is not None:  # the top_blocks source stage retrained the backbone's top blocks
            job.train_features, job.val_features = trained.features
        val_accuracy = float(np.mean(val_probabilities.argmax(axis=1) == np.asarray(val_labels)))
        picked = val_probabilities[np.arange(len(val_labels)), np.asarray(val_labels)]
        val_loss = float(0.0 - np.mean(np.log(np.clip(picked, 1e-7, 1.0))))  # 0.0, not -0.0, when all are certain
        temperature = fit_temperature(val_probabilities, val_labels)
        _write_tensorboard_extras(run.log_dir, run.resolved, report,
                                  _penultimate(trained.head_model, trained.head_inputs, trained.hidden_units),
                                  val_probabilities, job.val_examples, scan, backbone, config,
                                  {"val_accuracy": val_accuracy, "val_loss": val_loss})
        held_out_head = _held_out_head(config, refit, trained)
        threshold_offsets = None
        if refit.applies and held_out_head is None:  # the refit retrains the embedding: app/threshold_transfer.py
            threshold_offsets = first_model_offsets(task_model, config, scan.modality, backbone.size,
                                                    job.train_examples, job.val_examples, job.train_features,
                                                    job.val_features)
        selection = {"phases": phase_names, "epochs": refit_epochs(context.history, config.strategy),
                     "steps": trained.steps_taken, "val_accuracy": val_accuracy, "val_loss": val_loss,
                     "temperature": temperature,
                     **({"held_out_head": held_out_head_state(*held_out_head)} if held_out_head is not None else {}),
                     **({"threshold_offsets": threshold_offsets} if threshold_offsets is not None else {}),
                     } if refit.applies else None

    if refit.applies:
        logger.info("Refit: %s.", refit.reason)
        task_model = refit_transfer(context, scan, backbone, job.feature_extractor, pristine_backbone,
                                    job.train_examples + job.val_examples,
                                    np.concatenate([job.train_features, job.val_features]), selection)
        phase_names = phase_names + [REFIT_HEAD] + ([REFIT_FINETUNE] if config.strategy == "finetune" else [])
    elif config.strategy not in META_STRATEGIES:
        logger.info("No refit (%s).", refit.reason)
    refit_record = trained.refit if config.strategy in META_STRATEGIES else {
        "applied": refit.applies, "reason": refit.reason,
        **({"epochs": selection["epochs"], "num_files": len(job.train_examples) + len(job.val_examples),
            "note": "The model was trained again on train + validation for the epochs early stopping chose; "
                    "the validation metrics and the temperature are the first model's."} if refit.applies else {}),
    }
    validation_trained = refit.applies or bool(refit_record.get("applied"))  # meta strategies refit themselves
    if trained is not None and trained.threshold_offsets is not None:  # a meta strategy's target fine-tuning
        threshold_offsets = trained.threshold_offsets
    return _Result(task_model, phase_names, val_accuracy, val_loss, temperature, refit.applies, refit_record,
                   trained.meta if trained is not None else None, held_out_head, validation_trained,
                   threshold_offsets)


def _write_results(config: TrainConfig, prepared: _Prepared, run: _OpenRun, job: TrainingJob, result: _Result,
                   detector, precision: str, distribute: DistributeInfo, resumed: bool,
                   clock: TrainingClock, chief: bool = True) -> TrainResult:
    """model.keras, history.json and metadata.json; then the run is marked complete and its checkpoints go."""
    scan, backbone, run_dir = prepared.scan, prepared.backbone, run.run_dir
    require_still_held(run_dir)  # moved away: model.keras would make its old path again, as a run without config
    rd.save_model(result.task_model, run_dir)
    history = job.context.history
    rd.write_json(run_dir / rd.HISTORY_FILE, {
        "phases": [{"name": name, "epochs": sum(e["phase"] == name for e in history)} for name in result.phases],
        "epochs": history,
    })
    wall_time = clock.total_s()
    epochs_trained = len(history)
    RunMetadata(
        class_names=scan.class_names,
        modality=scan.modality,
        input_spec=input_spec(scan.modality, backbone.size, config.resize),
        backbone=backbone.name,
        weights=backbone.weights,
        backbone_run=backbone.reused.record if backbone.reused is not None else None,
        strategy=config.strategy,
        class_digest=class_digest(result.task_model, scan.class_names),  # ties this file to model.keras
        metrics={"val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
                 "epochs_trained": epochs_trained, **_wall_times(clock, resumed)},
        calibration={"temperature": result.temperature, "fitted_on": "validation split" + (
            " (the first model's, before the refit)" if result.refitted else "")},
        precision=precision,
        distribute=distribute.to_metadata(),
        meta=result.meta,
        refit=result.refit,
        unknown={"score": detector.score, "threshold": detector.threshold, "reject_recall": detector.reject_recall,
                 "file": DETECTOR_FILE},
        resumed=resumed,
        data_dir=scan.root,
        manifest_sha256=run.manifest_hash,
        seed=config.seed,
        versions=package_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    ).write(run_dir)
    require_still_held(run_dir)
    rd.mark_complete(run_dir)
    job.context.checkpoints.remove()  # only needed to resume (a crash before this only leaves them behind)
    refit_count = sum(e["phase"].startswith("refit") for e in history)  # refit_head, refit_finetune, refit_target_...
    # A non-chief worker wrote into a scratch folder it removes next (its config's output is that folder): the run
    # directory is the chief's.
    shown = run_dir if chief else f"the chief's (this worker's scratch copy {run_dir} is removed)"
    time_text = training_time_text(clock, resumed)
    logger.info("Done: best validation accuracy %.4f (loss %.4f); %d epochs%s in %s. Run directory: %s",
                result.val_accuracy, result.val_loss, epochs_trained,
                f" ({refit_count} of them the refit on train + validation)" if refit_count else "", time_text, shown)
    return TrainResult(run_dir, result.val_accuracy, result.val_loss, epochs_trained, wall_time, time_text)


def _wall_times(clock: TrainingClock, resumed: bool) -> dict:
    """metadata.json's training times: `wall_time_s` every session's, as the last lines say; a resumed run adds
    this session's and the earlier ones' (null when the checkpoint it resumed from did not record them)."""
    times = {"wall_time_s": round(clock.total_s(), 2)}
    if resumed:
        times |= {"wall_time_this_session_s": round(clock.session_s(), 2),
                  "wall_time_earlier_sessions_s": None if clock.earlier_s is None else round(clock.earlier_s, 2)}
    return times


def training_time_text(clock: TrainingClock, resumed: bool) -> str:
    """How long the run trained, for its last lines: a resumed run's total is what a user asks (the interrupted
    session's time counts), with this session's part beside it."""
    session = clock.session_s()
    if not resumed:
        return f"{session:.1f} s"
    if clock.earlier_s is None:
        return (f"{session:.1f} s, this resumed session only (the checkpoint it resumed from, written by an earlier "
                "version, does not record the earlier sessions' time)")
    return (f"{clock.total_s():.1f} s in all, {session:.1f} s of it in this resumed session (earlier sessions count "
            "up to their last checkpoint)")
