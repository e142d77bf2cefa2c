"""The training phases: the head on cached features (linear, and finetune phase 1), then the
top backbone blocks with the head (finetune phase 2). Each phase checkpoints every epoch
and can start again from its last completed epoch (see app/checkpoints.py). A phase given
no validation data (the refit, app/refit.py) trains for exactly its number of epochs.

Every phase, meta-training's included (app/meta_training.py), runs through `run_phase`, given
one `PhaseSpec`: it is where every phase's model is compiled (`compile_model`) and fit, so that
running under a distribution strategy changes this module, not its callers. (The source stages of
--meta-data fit their own models, and `fit_fixed_epochs` is a plain, seconds-long fit.)"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app import tensorboard_logging as tb
from app.checkpoint_state import CheckpointState, ResumePoint
from app.checkpoints import Checkpoints, EpochCheckpoint, ResumableEarlyStopping, StopOnNaN
from app.config import TrainConfig
from app.distributed_loop import fit_with_own_step, needs_own_step
from app.errors import UserError
from app.progress import BatchProgress
from app.text_phase2 import activation_dataset
from data.augment import AugmentConfig, build_augmenter
from data.pipeline import balanced_dataset, image_dataset, read_texts, text_dataset, without_autotune_thread
from data.splits import class_weights
from models.finetuning import learning_rate_multipliers, unfreeze_top_blocks
from models.optimizers import DiscriminativeAdam
from models.pair_loss import PairLossClassifier, probabilities_and_embedding
from models.text_split import TextSplit, top_task_model

logger = logging.getLogger(__name__)
HEAD, FINETUNE, META = "head", "finetune", "meta"
PLATEAU_FACTOR = 0.2


@dataclass
class PhaseContext:
    config: TrainConfig
    log_dir: Path
    checkpoints: Checkpoints
    class_names: list[str]
    history: list[dict] = field(default_factory=list)  # every completed epoch of the run, all phases
    resume: ResumePoint | None = None  # the checkpoint to continue from

    @property
    def resumed_phase(self) -> str | None:
        """The phase the run is continuing (None: a fresh start)."""
        return self.resume.state.phase if self.resume else None

    def resume_of(self, phase: str) -> ResumePoint | None:
        return self.resume if self.resumed_phase == phase else None


@dataclass
class PhaseResult:
    epochs: int  # completed in this phase
    best_epoch: int  # 1-based within the phase
    steps_per_epoch: int
    wall_time_s: float
    model: keras.Model | None = None  # the model the phase trained, its best weights restored (what it saved)


def loss_and_targets(config: TrainConfig, num_classes: int, one_hot: bool = False):
    """Loss, and how labels must look for it (label smoothing and MixUp need one-hot targets in Keras)."""
    if config.label_smoothing or one_hot:
        return (keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                lambda x, y: (x, tf.one_hot(y, num_classes)))
    return keras.losses.SparseCategoricalCrossentropy(), None


class EpochSummary(keras.callbacks.Callback):
    """One log line per epoch: phase, epoch, train and validation metrics, learning rate, time."""

    def __init__(self, phase: str, epoch_offset: int, max_epochs: int):
        super().__init__()
        self.phase, self.epoch_offset, self.max_epochs = phase, epoch_offset, max_epochs
        self.started = 0.0
        self.rate: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.rate = tb.current_rate(self.model.optimizer)  # the rate this step uses (after it: the next one's)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        rate = self.rate if self.rate is not None else tb.current_rate(self.model.optimizer)
        validation = (f" | val_loss {logs['val_loss']:.4f} val_acc {logs.get('val_accuracy', math.nan):.4f}"
                      if "val_loss" in logs else "")
        logger.info("%s epoch %d/%d: loss %.4f acc %.4f%s | lr %.2e | %.1f s",
                    self.phase, epoch + 1 - self.epoch_offset, self.max_epochs, logs.get("loss", math.nan),
                    logs.get("accuracy", math.nan), validation, rate, time.perf_counter() - self.started)


@dataclass
class CompileSpec:
    """What a phase compiles its model with (`compile_model`). Keyword arguments only: Keras 3's
    `compile(optimizer, loss, metrics)` takes a third positional argument as `loss_weights`."""

    optimizer: keras.optimizers.Optimizer
    loss: object = None  # None: the model computes its own loss (meta learners' train_step)
    metrics: list | None = None


def compile_model(model: keras.Model, spec: CompileSpec) -> None:
    """The one place a model is compiled: a distribution strategy's scope will wrap this."""
    model.compile(optimizer=spec.optimizer, loss=spec.loss, metrics=spec.metrics)


@dataclass
class PhaseSpec:
    """One phase for `run_phase`: the model, how it compiles, its data and where it sits in the run."""

    phase: str  # HEAD, FINETUNE, META or a refit phase: names its checkpoints and history entries
    number: int  # the phase's number in TensorBoard's phase markers
    model: keras.Model
    compile: CompileSpec
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None  # None: exactly `max_epochs` epochs, nothing stops the phase early
    max_epochs: int
    epoch_offset: int = 0  # epochs of earlier phases: fit() counts epochs across the whole run
    step_offset: int = 0  # optimizer steps of earlier phases (TensorBoard's step axis)
    steps_per_epoch: int | None = None  # None: one pass over `train_ds`
    confusion_inputs: object = None  # validation inputs (dataset or array) for the per-epoch confusion matrix
    val_labels: list[int] | None = None
    extra_callbacks: tuple = ()
    class_weight: dict | None = None
    description: str = ""
    monitor: str = "val_loss"  # what early stopping watches
    selection: dict | None = None  # the refit: what the first model left, kept in every checkpoint


def run_phase(context: PhaseContext, spec: PhaseSpec) -> PhaseResult:
    """Compile and fit() one phase with early stopping, NaN guard, checkpoints, TensorBoard; resume-aware.

    Without validation data (`spec.val_ds` None) nothing can stop the phase early: it trains
    exactly `spec.max_epochs` epochs and keeps the last weights."""
    config = context.config
    phase, model, max_epochs, epoch_offset = spec.phase, spec.model, spec.max_epochs, spec.epoch_offset
    fixed_epochs = spec.val_ds is None
    started = time.perf_counter()
    compile_model(model, spec.compile)
    resume = context.resume_of(phase)
    completed = 0
    resume_best = None
    if resume:
        state = resume.state
        context.checkpoints.restore(resume.folder, model, model.optimizer)
        completed = state.epoch
        if state.done:
            logger.info("Resuming after the end of %s (%s)", phase, resume.folder)
            return PhaseResult(completed, state.early_stopping["best_epoch"] + 1 - epoch_offset,
                               state.steps_per_epoch or 0, 0.0, model)
        resume_best = context.checkpoints.best_weights(model, state)
        if completed < max_epochs:
            logger.info("Resuming %s at epoch %d/%d from %s", phase, completed + 1, max_epochs, resume.folder)
        else:
            logger.info("Resuming %s after its last epoch (%d/%d) from %s", phase, completed, max_epochs,
                        resume.folder)
    # A fixed-length phase still gets the callback (its state goes into every checkpoint), made
    # unable to stop or to restore anything.
    early_stopping = ResumableEarlyStopping(monitor="loss" if fixed_epochs else spec.monitor,
                                            patience=max_epochs + 1 if fixed_epochs else config.patience,
                                            restore_best_weights=not fixed_epochs,
                                            resume_state=resume.state.early_stopping if resume else None,
                                            resume_best_weights=resume_best)
    nan_guard = StopOnNaN()
    steps = spec.steps_per_epoch or int(spec.train_ds.cardinality().numpy())
    # What every checkpoint of this phase records besides its progress.
    extra_state = {"steps_per_epoch": steps, "epoch_offset": epoch_offset, "step_offset": spec.step_offset,
                   "selection": spec.selection}
    callbacks = [
        nan_guard,
        early_stopping,
        tb.RunTensorBoard(context.log_dir, spec.step_offset),
        tb.PhaseMarker(context.log_dir, spec.number, spec.description, resumed=resume is not None),
        BatchProgress(phase),  # listed before EpochSummary: the bar is cleared before the epoch's line
        EpochSummary(phase, epoch_offset, max_epochs),
        *spec.extra_callbacks,
    ]
    if spec.confusion_inputs is not None:  # episodes have no fixed classes: no confusion matrix for meta phases
        callbacks.append(tb.ConfusionMatrixPerEpoch(context.log_dir, spec.confusion_inputs, spec.val_labels,
                                                    context.class_names))
    # Last: the epoch is checkpointed once everything above has logged (and flushed) it, so an epoch a resumed run
    # does not repeat is never missing from TensorBoard or the log.
    callbacks.append(EpochCheckpoint(context.checkpoints, phase, context.history, early_stopping,
                                     extra_state, epoch_offset, resume.state.best_weights if resume else None))
    if completed < max_epochs and not (resume and early_stopping_exhausted(resume.state, config.patience)):
        # fit() makes new iterators every epoch: none may carry the autotuning thread (see data/pipeline.py).
        train_ds = without_autotune_thread(spec.train_ds)
        val_ds = None if fixed_epochs else without_autotune_thread(spec.val_ds)
        if needs_own_step(model):  # --distribute multi-worker: fit() fails there (app/distributed_loop.py)
            fit_with_own_step(model, spec.compile.loss, train_ds, val_ds, epoch_offset + max_epochs,
                              epoch_offset + completed, callbacks, spec.steps_per_epoch, spec.class_weight)
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=epoch_offset + max_epochs,
                      initial_epoch=epoch_offset + completed, callbacks=callbacks,
                      steps_per_epoch=spec.steps_per_epoch, class_weight=spec.class_weight, shuffle=False,
                      verbose=0)  # datasets shuffle themselves, seeded
    elif resume_best is not None and not fixed_epochs:
        model.set_weights(resume_best)
    if nan_guard.stopped_at:
        epoch, batch = nan_guard.stopped_at
        last = context.checkpoints.latest()
        kept = f"the last good checkpoint ({last.folder.name}) is kept in {context.checkpoints.root}" if last else \
            "no epoch had completed, so there is no checkpoint"
        raise UserError(
            f"Training diverged: the {phase} loss became NaN/inf at epoch {epoch - epoch_offset}, batch {batch}. "
            f"{kept[0].upper()}{kept[1:]}. Lower {rates_to_lower(phase, config.strategy)} and start a new run; "
            "the run directory stays marked INCOMPLETE."
        )
    phase_epochs = sum(1 for entry in context.history if entry["phase"] == phase)
    best_epoch = early_stopping.best_epoch + 1 - epoch_offset
    state = CheckpointState(phase, phase_epochs, context.history, done=True, early_stopping=early_stopping.state(),
                            **extra_state)
    context.checkpoints.save(state, model)  # best weights restored: what the next phase starts from
    return PhaseResult(phase_epochs, best_epoch, steps, time.perf_counter() - started, model)


# The learning rates each meta strategy's meta phase uses (app/meta_training.py::_build_learner).
META_RATES = {"protonet": "--meta-learning-rate", "reptile": "--inner-learning-rate or --meta-step-size",
              "fomaml": "--inner-learning-rate or --meta-learning-rate",
              "maml": "--inner-learning-rate or --meta-learning-rate"}


def rates_to_lower(phase: str, strategy: str) -> str:
    """The options whose learning rate a phase that diverged trains with: a meta-training phase that diverged was
    told to lower --learning-rate or --finetune-learning-rate, neither of which it uses."""
    if phase == META:
        return META_RATES.get(strategy, "--meta-learning-rate")
    if FINETUNE in phase:  # finetune's phase 2, its refit, and protonet's target stage
        return "--finetune-learning-rate"
    return "--learning-rate"


def fit_fixed_epochs(model: keras.Model, compile_spec: CompileSpec, dataset, epochs: int, class_weight=None) -> None:
    """A plain fit for `epochs` epochs: no validation, checkpoints or callbacks. For seconds-long fits
    that a resumed run simply repeats (app/meta_target.py's refit head)."""
    compile_model(model, compile_spec)
    model.fit(dataset, epochs=epochs, class_weight=class_weight, shuffle=False, verbose=0)  # datasets shuffle, seeded


def early_stopping_exhausted(state: CheckpointState, patience: int) -> bool:
    """The interrupted phase had already decided to stop (it died while wrapping up)."""
    return state.early_stopping["wait"] >= patience


def train_head(context: PhaseContext, head_model: keras.Model, train_features, train_labels, val_features,
               val_labels, phase_number: int, epoch_offset: int = 0, step_offset: int = 0, phase: str = HEAD,
               max_epochs: int | None = None, selection: dict | None = None) -> PhaseResult:
    """The head on cached features: epochs cost milliseconds, so early stopping can be patient.
    `val_features` None: exactly `max_epochs` epochs, no validation (the refit)."""
    config = context.config
    num_classes = len(context.class_names)
    compile_spec, to_targets = head_training(config, num_classes)
    steps_per_epoch = None
    if config.balanced_sampler:
        train_ds = balanced_dataset(train_features, train_labels, num_classes, config.seed).batch(config.batch_size)
        steps_per_epoch = -(-len(train_labels) // config.batch_size)
    else:
        train_ds = (tf.data.Dataset.from_tensor_slices((train_features, np.asarray(train_labels, np.int32)))
                    .shuffle(len(train_labels), seed=config.seed).batch(config.batch_size))
    val_ds = None
    if val_features is not None:
        val_ds = tf.data.Dataset.from_tensor_slices((val_features, np.asarray(val_labels, np.int32))).batch(config.batch_size)
    if to_targets:
        train_ds = train_ds.map(to_targets)
        val_ds = None if val_ds is None else val_ds.map(to_targets)
    weights = class_weights(train_labels, num_classes) if config.class_weight == "auto" else None
    description = "head on cached backbone features" + (", train + validation" if val_ds is None else "")
    return run_phase(context, PhaseSpec(
        phase, phase_number, head_model, compile_spec, train_ds, val_ds, max_epochs or config.epochs, epoch_offset,
        step_offset, steps_per_epoch, confusion_inputs=val_features, val_labels=val_labels, class_weight=weights,
        description=description, selection=selection))


def head_training(config: TrainConfig, num_classes: int) -> tuple[CompileSpec, object]:
    """How a head on cached features compiles (Adam at --learning-rate), and the map its labels
    need (None: as they are)."""
    loss, to_targets = loss_and_targets(config, num_classes)
    return CompileSpec(keras.optimizers.Adam(config.learning_rate), loss, ["accuracy"]), to_targets


@dataclass
class FinetuneInputs:
    """What phase 2 trains and validates on (`finetune_inputs`), with the text cut its batches were
    made for, so the datasets and the model they feed cannot be paired wrongly."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None  # None: no validation files (a refit)
    confusion: tf.data.Dataset | None  # the validation inputs alone, for predict()
    val_labels: list[int]
    text_cut: TextSplit | None = None  # app/text_phase2.py: batches of hidden states instead of texts

    def predictor(self, task_model: keras.Model, feature_extractor: keras.Model) -> keras.Model:
        """The model these batches feed: the task model, or its top over the cached hidden states
        (the same layers, so training it trains the task model)."""
        return task_model if self.text_cut is None else top_task_model(self.text_cut, task_model, feature_extractor)


def finetune_inputs(config: TrainConfig, modality: str, size: int, train_examples, val_examples, num_classes: int,
                    text_cut: TextSplit | None = None) -> FinetuneInputs:
    """Phase-2 datasets of raw inputs: shuffled training batches, and the validation batches and
    inputs (None without `val_examples`). Image augmentation is not here: it is the first
    layer of the model phase 2 trains (`phase2_training_model`). With `text_cut`
    (app/text_phase2.py), text batches hold the hidden states below the top blocks instead of
    the texts."""
    train_paths = [e.path for e in train_examples]
    train_labels = [e.label for e in train_examples]
    val_labels = [e.label for e in val_examples]
    if modality == "image":
        train_ds = image_dataset(train_paths, train_labels, (size, size), config.batch_size, shuffle=True,
                                 seed=config.seed, resize=config.resize, cache=config.image_cache,
                                 content_keys=[e.sha256 for e in train_examples])
        val_ds = image_dataset([e.path for e in val_examples], val_labels, (size, size), config.batch_size,
                               resize=config.resize, cache=config.image_cache,
                               content_keys=[e.sha256 for e in val_examples]) if val_examples else None
    else:
        batches = text_dataset if text_cut is None else partial(activation_dataset, text_cut)
        texts = read_texts(train_paths, [e.encoding for e in train_examples])
        train_ds = batches(texts, train_labels, config.batch_size, shuffle=True, seed=config.seed)
        val_ds = batches(read_texts([e.path for e in val_examples], [e.encoding for e in val_examples]),
                         val_labels, config.batch_size) if val_examples else None
    mixup = uses_mixup(config, modality)
    _, to_targets = loss_and_targets(config, num_classes, one_hot=mixup)
    # (x,): a one-element tuple, so that predict() takes cached text inputs [hidden, mask] as one x.
    confusion_inputs = None if val_ds is None else val_ds.map(lambda x, y: (x,))
    if to_targets:
        train_ds = train_ds.map(to_targets)
        val_ds = None if val_ds is None else val_ds.map(to_targets)
    if mixup:
        train_ds = train_ds.map(MixUpBatches(config.mixup, config.seed))
    return FinetuneInputs(train_ds, val_ds, confusion_inputs, val_labels, text_cut)


def uses_pair_loss(config: TrainConfig, modality: str) -> bool:
    """Text fine-tuning adds SetFit's pair loss (models/pair_loss.py) when `--pair-loss` is above 0."""
    return modality == "text" and config.pair_loss > 0


def unused_pair_loss_warning(config: TrainConfig, modality: str, fine_tunes: bool = True) -> str | None:
    """What to tell a user who set `--pair-loss` where it does not apply (None otherwise): on images, and on text
    when the run fine-tunes nothing (`fine_tunes`: the strategy is finetune, or protonet's target stage fine-tunes;
    a linear text run ignored it without a word)."""
    if config.pair_loss == TrainConfig.pair_loss or (modality == "text" and fine_tunes):
        return None
    where = f"{modality} data" if modality != "text" else f"strategy {config.strategy}, no text fine-tuning"
    return (f"--pair-loss {config.pair_loss:g} has no effect in this run ({where}): the pair loss applies to text "
            "fine-tuning only (--strategy finetune, or protonet's target stage with --meta-data).")


def unused_image_option_warning(config: TrainConfig, modality: str) -> str | None:
    """What to tell a user who gave a text run an images-only option that it ignores (None otherwise): --image-cache
    and --no-augment act on decoded images only, and were ignored without a word. (--image-size and --resize are
    refused: they would change what the saved model takes.)"""
    if modality != "text":
        return None
    given = ([f"--image-cache {config.image_cache}"] if config.image_cache != TrainConfig.image_cache else []) + (
        ["--no-augment"] if not config.augment else [])
    if not given:
        return None
    one = len(given) == 1
    return (f"{' and '.join(given)} {'has' if one else 'have'} no effect in this run (text data): "
            f"{'it applies' if one else 'they apply'} to images only.")


def uses_mixup(config: TrainConfig, modality: str) -> bool:
    return modality == "image" and config.mixup > 0


def unused_mixup_warning(config: TrainConfig, modality: str) -> str | None:
    """What to tell a user whose `--mixup` this run will not apply (None when it applies or is off)."""
    if not config.mixup or (config.strategy == "finetune" and uses_mixup(config, modality)):
        return None
    return (f"--mixup {config.mixup:g} has no effect in this run (strategy {config.strategy}, {modality} data): "
            "MixUp applies to finetune phase 2 on images only.")


class MixUpBatches:
    """tf.data map: Keras' MixUp layer on an (uint8 images, one-hot labels) batch.

    MixUp blends labels as well as images, so it cannot be a layer of the model (which never
    sees labels) like the rest of the augmentation: it runs in tf.data, before the model's
    flip/rotation/zoom. The blend comes back rounded to uint8, the dtype the model's input takes.
    The layer computes in float32 whatever the precision policy (mixed_float16 would round the
    mixing weights of the labels)."""

    def __init__(self, alpha: float, seed: int):
        self.layer = keras.layers.MixUp(alpha=alpha, seed=seed, dtype="float32")

    def __call__(self, images, labels):
        mixed = self.layer({"images": tf.cast(images, tf.float32), "labels": labels}, training=True)
        pixels = tf.cast(tf.clip_by_value(tf.round(mixed["images"]), 0, 255), images.dtype)
        return pixels, tf.cast(mixed["labels"], labels.dtype)


def phase2_augmentation(config: TrainConfig, modality: str) -> AugmentConfig | None:
    """The augmentation phase 2 applies: images with `--augment` (the default) only."""
    return AugmentConfig() if modality == "image" and config.augment else None


def phase2_training_model(task_model: keras.Model, augment: AugmentConfig | None, seed: int) -> keras.Model:
    """The model phase 2's fit() trains: with augmentation, the augmentation layer and then the task
    model, whose layers and weights it shares (training it trains the task model, which is what is
    saved, without the augmentation); otherwise the task model itself.

    Why a layer of the trained model rather than a step of the tf.data pipeline: on a GPU it then
    runs on the device, next to the model (Keras' preprocessing guide recommends this for
    augmentation), and on a CPU it runs inside the training step instead of in tf.data threads
    that contend with the step's own threads for the same cores: on 2 cores, side by side, the
    cached epochs trained 7% faster this way (BENCHMARKS.md, compute section, has both
    placements). Validation and prediction call the model with `training=False`, where the
    augmentation is the identity."""
    if augment is None or augment.is_identity:
        return task_model
    inputs = keras.Input(shape=task_model.input_shape[1:], dtype=task_model.inputs[0].dtype, name="training_pixels")
    return keras.Model(inputs, task_model(build_augmenter(augment, seed=seed)(inputs)),
                       name=f"{task_model.name}_augmented")


def phase2_schedule_warning(config: TrainConfig) -> str | None:
    """What to tell a finetune run whose phase-2 schedule cannot do what its options say (None: nothing). The
    cosine schedule spans all --finetune-epochs, a maximum that early stopping usually cuts short: with
    --finetune-epochs 2147483647 the warm-up alone lasted 214 million epochs, phase 2 trained at a rate of 1e-13
    until --patience ended it, and the run finished "complete" with a backbone that had not moved. And
    --warmup-fraction with another schedule was ignored without a word."""
    if config.strategy != "finetune":
        return None
    if config.lr_schedule != "cosine":
        if config.warmup_fraction == TrainConfig().warmup_fraction:
            return None
        return (f"--warmup-fraction {config.warmup_fraction:g} has no effect with --lr-schedule {config.lr_schedule}: "
                "only the cosine schedule warms up. The run goes on without it.")
    warmup_epochs = config.finetune_epochs * config.warmup_fraction
    if warmup_epochs <= config.patience:
        return None
    return (f"Phase 2 warms its learning rate up over {warmup_epochs:.3g} epochs (--warmup-fraction "
            f"{config.warmup_fraction:g} of --finetune-epochs {config.finetune_epochs}, which the cosine schedule "
            f"spans), longer than --patience {config.patience}: early stopping can end it before it trains at "
            f"--finetune-learning-rate. Lower --finetune-epochs or --warmup-fraction, or use --lr-schedule constant.")


def phase2_imbalance_warning(config: TrainConfig) -> str | None:
    """--class-weight auto and --balanced-sampler shape the head phase, trained on cached features (and its refit);
    finetune's phase 2 draws the files as they are and weighs them alike. The run said nothing, so a user who asked for
    either on an imbalanced folder took the whole training for corrected."""
    if config.strategy != "finetune" or not (config.class_weight == "auto" or config.balanced_sampler):
        return None
    given = "--class-weight auto" if config.class_weight == "auto" else "--balanced-sampler"
    return (f"{given} applies to the head phase (trained on cached features) only: phase 2, which fine-tunes the "
            "backbone, trains on the files as they are, each weighing the same.")


def phase2_learning_rate(config: TrainConfig, steps_per_epoch: int):
    """Warm-up + cosine decay over the whole phase (default), or a constant rate."""
    if config.lr_schedule != "cosine":
        return config.finetune_learning_rate
    total = max(1, steps_per_epoch * config.finetune_epochs)
    warmup = int(total * config.warmup_fraction)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.finetune_learning_rate, decay_steps=max(1, total - warmup),
        warmup_target=config.finetune_learning_rate if warmup else None, warmup_steps=warmup, alpha=0.0,
    )


def compile_phase2(config: TrainConfig, spec, feature_extractor: keras.Model, task_model: keras.Model, head_layers,
                   steps_per_epoch: int, num_classes: int, augment: AugmentConfig | None = None) -> keras.Model:
    """`prepare_phase2`, compiled: the model phase 2 trains, ready for a fit()."""
    model, compile_spec = prepare_phase2(config, spec, feature_extractor, task_model, head_layers, steps_per_epoch,
                                         num_classes, augment)
    compile_model(model, compile_spec)
    return model


def prepare_phase2(config: TrainConfig, spec, feature_extractor: keras.Model, task_model: keras.Model, head_layers,
                   steps_per_epoch: int, num_classes: int,
                   augment: AugmentConfig | None = None) -> tuple[keras.Model, CompileSpec]:
    """Unfreeze the top blocks (BatchNorm stays frozen): the model phase 2 trains
    (`phase2_training_model`) and how it compiles, at lower, per-depth rates (recompiled because
    `trainable` changed)."""
    groups = unfreeze_top_blocks(spec, feature_extractor, config.unfreeze)
    multipliers = learning_rate_multipliers(head_layers, groups, config.lr_decay)
    trainable = sum(int(np.prod(v.shape)) for v in task_model.trainable_variables)
    logger.info("Phase 2: %d backbone block group(s) unfrozen (%s), %s trainable parameters, BatchNorm frozen, "
                "learning rate %.1e with x%.2g per group down%s", len(groups), config.unfreeze, f"{trainable:,}",
                config.finetune_learning_rate, config.lr_decay, ", augmentation in the model" if augment else "")
    model = phase2_training_model(task_model, augment, config.seed)
    loss, _ = loss_and_targets(config, num_classes, one_hot=uses_mixup(config, spec.modality))
    optimizer = DiscriminativeAdam(multipliers, learning_rate=phase2_learning_rate(config, steps_per_epoch))
    return model, CompileSpec(optimizer, loss, ["accuracy"])


def finetune_backbone(context: PhaseContext, spec, feature_extractor: keras.Model, task_model: keras.Model,
                      head_layers, inputs: FinetuneInputs, epoch_offset: int, step_offset: int, phase: str = FINETUNE,
                      phase_number: int = 2, max_epochs: int | None = None,
                      selection: dict | None = None) -> PhaseResult:
    """Phase 2 (`prepare_phase2`), checkpointed and early-stopped like every phase.
    `inputs.val` None: exactly `max_epochs` epochs, no validation (the refit). The learning-rate
    schedule always spans `--finetune-epochs`, so a shorter refit sees the same rates epoch by
    epoch as the run whose epochs it repeats. With a text cut, the model fit() trains is the task
    model's top over the cached hidden states (`FinetuneInputs.predictor`)."""
    config = context.config
    train_ds, val_ds, text_cut = inputs.train, inputs.val, inputs.text_cut
    steps = int(train_ds.cardinality().numpy())
    model, compile_spec = prepare_phase2(config, spec, feature_extractor, task_model, head_layers, steps,
                                         len(context.class_names), phase2_augmentation(config, spec.modality))
    pair_loss = uses_pair_loss(config, spec.modality)
    if pair_loss:  # the same layers, trained on cross-entropy + the pair loss
        model = PairLossClassifier(probabilities_and_embedding(
            feature_extractor if text_cut is None else text_cut.top, task_model, feature_extractor), config.pair_loss,
            name=f"{task_model.name}_pair_loss")
    elif text_cut is not None:
        model = inputs.predictor(task_model, feature_extractor)
    extra = []
    if config.lr_schedule == "plateau" and val_ds is not None:
        extra.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=PLATEAU_FACTOR,
                                                       patience=max(1, config.patience // 2), verbose=1))
    description = (f"top {config.unfreeze} backbone block(s) unfrozen, BatchNorm frozen"
                   + (", train + validation" if val_ds is None else "")
                   + (", over the lower blocks' cached hidden states" if text_cut is not None else "")
                   + (f", + {config.pair_loss:g} x pair loss" if pair_loss else ""))
    return run_phase(context, PhaseSpec(
        phase, phase_number, model, compile_spec, train_ds, val_ds, max_epochs or config.finetune_epochs, epoch_offset,
        step_offset, confusion_inputs=inputs.confusion, val_labels=inputs.val_labels, extra_callbacks=tuple(extra),
        description=description, selection=selection))
