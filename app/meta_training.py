"""Meta strategies (protonet, reptile, fomaml, maml): episodic meta-training, then the target classifier.

Episodes come from the target's training split, or from a separate `--meta-data`
folder whose classes must not overlap the target's (then meta-validation episodes
come from a class-disjoint part of that folder). Two input modes:
- features: the pretrained backbone is frozen and computed once (cached); the meta
  learner trains a small embedding (Dense + ReLU) over those features, plus its head.
  Fast on a CPU.
- raw: episodes of raw inputs; the backbone itself is the embedding and trains (its
  top `--unfreeze` blocks with BatchNorm frozen when pretrained, everything when it
  has no pretrained weights, e.g. conv4 from scratch).

After meta-training the result is the standard classifier bundle over the target
classes: for protonet the prototypes of every target training example written into
the Dense head (squared Euclidean distance is linear in x); for the others a head
trained on the meta-learned embedding of the target training set. The meta learner
itself is saved as `meta_learner.keras` (reusable with `--init RUN_DIR`, and what
`evaluate.py --episodes` adapts per episode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app import run_dir as rd
from app import tensorboard_logging as tb
from app.checkpoints import CHECKPOINTS_DIR
from app.config import TrainConfig
from app.errors import UserError
from app.features import cached_features
from app.phases import HEAD, META, PhaseContext, _run_phase, train_head
from data.episodes import EpisodeSampler, array_meta_batches, check_disjoint_meta_classes, meta_split_indices
from data.episodes import text_meta_batches
from data.atomic_write import write_atomically
from data.pipeline import image_dataset, read_texts
from data.scan import require_trainable, scan_folder
from data.splits import class_disjoint_splits
from models.finetuning import unfreeze_top_blocks
from models.heads import ClassificationHead
from models.meta import ALGORITHMS, MAML, build_meta_learner, prototype_head_weights

logger = logging.getLogger(__name__)
META_LEARNER_FILE, META_MANIFEST_FILE = rd.META_LEARNER_FILE, rd.META_MANIFEST_FILE
META_DATA_FRACTIONS = (0.8, 0.2, 0.0)  # --meta-data classes: meta-train / meta-val / (no meta-test)
META_DONE_WEIGHTS = "meta_done.weights.h5"
VALIDATION_META_STEPS = 10
META_VAL_SEED_OFFSET = 1_000_003


@dataclass
class MetaOutcome:
    head: ClassificationHead
    head_model: keras.Model
    embedding: keras.Model | None  # features mode: the trained embedding over backbone features
    val_embeddings: np.ndarray
    metadata: dict
    phases: list[str]


def meta_input_mode(config: TrainConfig, weights: str) -> str:
    if config.meta_input != "auto":
        return config.meta_input
    return "raw" if weights == "none" else "features"


def _adapt_setting(config: TrainConfig):
    if config.adapt == "auto":
        return "all" if config.strategy == "reptile" else "head"
    return int(config.adapt) if config.adapt.isdigit() else config.adapt


def _pools(config: TrainConfig, scan, train_examples, val_examples):
    """(meta-train examples, their labels, meta-val examples, their labels, class names, where they come from,
    the --meta-data folder's manifest or None)."""
    if not config.meta_data:
        return (train_examples, [e.label for e in train_examples], val_examples, [e.label for e in val_examples],
                scan.class_names, "the target's training split (meta-validation: its validation split)", None)
    meta_scan = scan_folder(config.meta_data)
    require_trainable(meta_scan, min_per_class=2)
    if meta_scan.modality != scan.modality:
        raise UserError(f"--meta-data holds {meta_scan.modality} files but the target folder holds {scan.modality} "
                        f"files. Received: --meta-data {config.meta_data}")
    check_disjoint_meta_classes(meta_scan.class_names, scan.class_names)
    examples = list(meta_scan.examples)
    labels = [e.label for e in examples]
    split = meta_split_indices(labels, meta_scan.class_names, fractions=META_DATA_FRACTIONS, seed=config.seed)
    train = [examples[i] for i in split["meta_train"]]
    val = [examples[i] for i in split["meta_val"]]
    # Which files and classes meta-trained the run, as the target's manifest.json does for its split.
    class_splits = class_disjoint_splits(meta_scan.class_names, META_DATA_FRACTIONS, config.seed)
    manifest = {"root": meta_scan.root, "class_names": meta_scan.class_names, "class_splits": class_splits,
                "files": [{"path": str(Path(e.path).relative_to(meta_scan.root)), "sha256": e.sha256,
                           "label": meta_scan.class_names[e.label],
                           "split": class_splits[meta_scan.class_names[e.label]]} for e in examples]}
    return (train, [e.label for e in train], val, [e.label for e in val], meta_scan.class_names,
            f"{config.meta_data} ({len(set(e.label for e in train))} meta-train classes, "
            f"{len(set(e.label for e in val))} class-disjoint meta-validation classes)", manifest)


def _validation_shots(labels, ways: int, shots: int, queries: int) -> tuple[int, int] | None:
    """Shots and queries that let `ways` classes of a (small) validation pool form episodes."""
    counts = sorted(np.bincount(np.asarray(labels, np.int64)).tolist(), reverse=True) if len(labels) else []
    if len(counts) < ways or counts[ways - 1] < 2:
        return None
    room = counts[ways - 1]
    val_shots = min(shots, room - 1)
    return val_shots, min(queries, room - val_shots)


def _raw_inputs(examples, modality: str, size: int, resize: str):
    """Decoded images (uint8 array) or texts for in-memory episodes."""
    if modality == "text":
        return np.asarray(read_texts([e.path for e in examples], [e.encoding for e in examples]), dtype=object)
    dataset = image_dataset([e.path for e in examples], None, (size, size), 64, resize=resize)
    return np.concatenate(list(dataset.as_numpy_iterator())) if examples else np.zeros((0, size, size, 3), np.uint8)


def _episodes(sampler: EpisodeSampler, inputs, tasks: int, steps: int | None, modality: str):
    if modality == "text" and inputs.dtype == object:
        return text_meta_batches(sampler, list(inputs), tasks, steps)
    return array_meta_batches(sampler, inputs, tasks, steps)


class MetaStepLogger(keras.callbacks.Callback):
    """Per meta step: episode loss/accuracy; per epoch: the inner loop's support losses on a fixed episode."""

    def __init__(self, log_dir: Path, probe_episode=None, step_offset: int = 0):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / tb.TRAIN))
        self.probe, self.step_offset = probe_episode, step_offset

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + int(self.model.optimizer.iterations.numpy())
        with self.writer.as_default():
            for key in ("loss", "accuracy"):
                if logs and key in logs:
                    tf.summary.scalar(f"meta_train/episode_{key}", float(logs[key]), step=step)

    def on_epoch_end(self, epoch, logs=None):
        if self.probe is None or not hasattr(self.model, "adapt_params"):
            return
        (support_x, support_y, _), _ = self.probe
        _, losses = self.model.adapt_params(self.model.read_params(), support_x[0], support_y[0], training=False)
        with self.writer.as_default():
            for k, loss in enumerate(losses):
                tf.summary.scalar(f"inner_loop/support_loss_before_step_{k + 1}", float(loss), step=epoch,
                                  description="Support-set loss of a fixed validation episode before each inner step")

    def on_train_end(self, logs=None):
        self.writer.flush()


def _build_learner(config: TrainConfig, embedding: keras.Model, input_shape, weights: str):
    kwargs = {"transductive": config.transductive}
    if config.strategy != "protonet":
        kwargs |= {"adapt": _adapt_setting(config), "inner_learning_rate": config.inner_learning_rate,
                   "inner_steps": config.inner_steps}
    if config.strategy == "reptile":
        kwargs["seed"] = config.seed
    learner = build_meta_learner(config.strategy, embedding, config.ways, **kwargs)
    if isinstance(learner, MAML) and not learner.first_order:
        # Second order keeps every inner step's graph: refuse before training if it cannot fit.
        learner.check_memory((config.ways * config.shots, *input_shape), (config.ways * config.queries, *input_shape))
    if config.strategy == "reptile":  # SGD on (theta - phi) with step eps: theta <- theta + eps * mean(phi - theta)
        optimizer = keras.optimizers.SGD(config.meta_step_size)
    else:
        optimizer = keras.optimizers.Adam(config.meta_learning_rate)
    learner.compile(optimizer=optimizer)
    if config.init:
        _initialise_from(learner, Path(config.init))
    return learner


def _initialise_from(learner, run_dir: Path) -> None:
    import models.layers  # noqa: F401  (registers the layers a saved learner may contain)

    path = run_dir / META_LEARNER_FILE
    if not path.is_file():
        raise UserError(f"--init needs a run directory of a meta strategy (with {META_LEARNER_FILE}). "
                        f"Received: --init {run_dir}")
    source = keras.saving.load_model(path, safe_mode=True, compile=False)
    if type(source) is not type(learner):
        raise UserError(f"--init {run_dir} holds a {type(source).__name__} learner; this run is a "
                        f"{type(learner).__name__}. Use the same --strategy.")
    try:
        learner.embedding.set_weights(source.embedding.get_weights())
        if hasattr(learner, "head"):
            learner.head.set_weights(source.head.get_weights())
    except ValueError as error:
        raise UserError(f"--init {run_dir}: its learner does not match this one (backbone, embedding_units or "
                        f"ways differ): {error}") from None
    logger.info("Meta-learned initialisation loaded from %s", path)


def run_meta_training(context: PhaseContext, config: TrainConfig, scan, backbone, feature_extractor,
                      train_examples, val_examples, train_features, val_features, run_dir: Path,
                      store_key: str | None) -> MetaOutcome:
    modality = scan.modality
    mode = meta_input_mode(config, backbone.weights)
    pool_train, pool_train_labels, pool_val, pool_val_labels, pool_names, source, meta_manifest = _pools(
        config, scan, train_examples, val_examples)
    if meta_manifest is not None:
        rd.write_json(run_dir / META_MANIFEST_FILE, meta_manifest)
    logger.info("Meta-training %s on %d-way %d-shot episodes (%d queries per class, %d tasks per meta step) from %s; "
                "inputs: %s", config.strategy, config.ways, config.shots, config.queries, config.meta_batch_size,
                source, "cached frozen features" if mode == "features" else "raw inputs, backbone training")
    sampler = EpisodeSampler(pool_train_labels, config.ways, config.shots, config.queries, seed=config.seed,
                             class_names=pool_names)

    # Inputs of the pools and of the target sets, in the learner's input space.
    if mode == "features":
        def to_inputs(examples, known=None):
            return known if known is not None else cached_features(
                feature_extractor, examples, modality, backbone.size, config.batch_size, config.resize, store_key)
        meta_train_x = to_inputs(pool_train, train_features if pool_train is train_examples else None)
        meta_val_x = to_inputs(pool_val, val_features if pool_val is val_examples else None)
        inputs = keras.Input((meta_train_x.shape[-1],), name="features")
        embedding = keras.Model(inputs, keras.layers.Dense(config.embedding_units, activation="relu",
                                                           name="meta_embedding_dense")(inputs),
                                name="meta_embedding")
    else:
        meta_train_x = _raw_inputs(pool_train, modality, backbone.size, config.resize)
        meta_val_x = _raw_inputs(pool_val, modality, backbone.size, config.resize)
        embedding = feature_extractor
        if backbone.weights == "none":
            feature_extractor.trainable = True  # from scratch: everything trains, BatchNorm included
        else:
            unfreeze_top_blocks(backbone.spec, feature_extractor, config.unfreeze)
    learner = _build_learner(config, embedding, meta_train_x.shape[1:], backbone.weights)

    train_ds = _episodes(sampler, meta_train_x, config.meta_batch_size, None, modality)
    val_setting = _validation_shots(pool_val_labels, config.ways, config.shots, config.queries)
    val_ds, monitor, probe = None, "val_loss", None
    if val_setting:
        val_sampler = EpisodeSampler(pool_val_labels, config.ways, *val_setting, seed=config.seed + META_VAL_SEED_OFFSET,
                                     class_names=pool_names)
        val_ds = _episodes(val_sampler, meta_val_x, config.meta_batch_size, VALIDATION_META_STEPS, modality).cache()
        probe = next(iter(val_ds.take(1)))
        if val_setting != (config.shots, config.queries):
            logger.info("Meta-validation episodes use %d shots and %d queries per class (the validation pool is small)",
                        *val_setting)
    else:
        monitor = "loss"
        logger.warning("The meta-validation pool has fewer than %d classes with 2+ examples: early stopping watches "
                       "the meta-training episode loss instead.", config.ways)

    done_weights = run_dir / CHECKPOINTS_DIR / META_DONE_WEIGHTS
    resumed_after_meta = context.resume is not None and context.resume[0]["phase"] == HEAD
    if resumed_after_meta:
        learner.load_weights(done_weights)
        meta_epochs = context.resume[0]["epoch_offset"]
        meta_steps = context.resume[0]["step_offset"]
    else:
        result = _run_phase(
            context, META, 1, learner, train_ds, val_ds, config.meta_epochs, 0, 0, config.meta_steps, None, None,
            extra_callbacks=[MetaStepLogger(context.log_dir, probe)], monitor=monitor,
            description=f"{config.strategy} meta-training, {config.ways}-way {config.shots}-shot episodes")
        # The head phase's checkpoints do not hold the embedding.
        write_atomically(done_weights, lambda temporary: learner.save_weights(temporary))
        meta_epochs, meta_steps = result.epochs, result.epochs * config.meta_steps
    write_atomically(run_dir / META_LEARNER_FILE, lambda temporary: learner.save(temporary))

    # The target classifier on the meta-learned embedding.
    def embed(examples, features):
        if mode == "features":
            return embedding.predict(features, verbose=0, batch_size=256)
        return embedding.predict(_raw_inputs(examples, modality, backbone.size, config.resize), verbose=0,
                                 batch_size=config.batch_size)

    train_labels = [e.label for e in train_examples]
    val_labels = [e.label for e in val_examples]
    train_embeddings = embed(train_examples, train_features)
    val_embeddings = embed(val_examples, val_features)
    num_classes = len(scan.class_names)
    phases = [META]
    if config.strategy == "protonet":
        head = ClassificationHead(num_classes, 0.0, seed=config.seed)
        head_model = head.features_model(train_embeddings.shape[-1])
        kernel, bias = prototype_head_weights(train_embeddings, np.asarray(train_labels), num_classes)
        head.dense.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
        logger.info("Classifier: prototypes of %d target training examples written into the Dense head",
                    len(train_labels))
    else:
        head = ClassificationHead(num_classes, config.dropout, seed=config.seed, hidden_units=0)
        head_model = head.features_model(train_embeddings.shape[-1])
        train_head(context, head_model, train_embeddings, train_labels, val_embeddings, val_labels, phase_number=2,
                   epoch_offset=meta_epochs, step_offset=meta_steps)
        phases.append(HEAD)
    metadata = {"algorithm": config.strategy, "ways": config.ways, "shots": config.shots, "queries": config.queries,
                "input": mode, "transductive": config.transductive,
                "batchnorm": "transductive (query statistics)" if config.transductive else "inductive",
                "inner_steps": config.inner_steps if config.strategy != "protonet" else None,
                "inner_learning_rate": config.inner_learning_rate if config.strategy != "protonet" else None,
                "adapt": _adapt_setting(config) if config.strategy != "protonet" else None,
                "meta_batch_size": config.meta_batch_size, "episodes_from": source,
                "meta_epochs": meta_epochs, "meta_steps": meta_steps}
    return MetaOutcome(head, head_model, embedding if mode == "features" else None, val_embeddings, metadata, phases)


__all__ = ["ALGORITHMS", "META_LEARNER_FILE", "MetaOutcome", "meta_input_mode", "run_meta_training"]
