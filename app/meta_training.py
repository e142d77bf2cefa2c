"""Meta strategies (protonet, reptile, fomaml, maml): episodic meta-training, then the target classifier.

Episodes come from the target's training split, or from a separate `--meta-data`
folder whose classes must not overlap the target's; app/meta_pools.py decides the
meta-validation pool (class-disjoint whenever the classes allow it) and fits the episode
shapes to what the classes hold. Two input modes:
- features: the pretrained backbone is frozen and computed once (cached); the meta
  learner trains a small embedding (Dense + ReLU) over those features, plus its head.
  Fast on a CPU.
- raw: episodes of raw inputs; the backbone itself is the embedding and trains (its
  top `--unfreeze` blocks with BatchNorm frozen when pretrained, everything when it
  has no pretrained weights, e.g. conv4 from scratch).

After meta-training the result is the standard classifier bundle over the target
classes (app/meta_target.py): for protonet the prototypes written into the Dense head
(squared Euclidean distance is linear in x); for the others a head trained on the
meta-learned embedding; both refit on train + validation files. The meta learner
itself is saved as `meta_learner.keras` (reusable with `--init RUN_DIR`, and what
`evaluate.py --episodes` adapts per episode).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app import run_dir as rd
from app import tensorboard_logging as tb
from app.checkpoints import CHECKPOINTS_DIR
from app.config import META_STRATEGIES, TrainConfig, is_count
from app.errors import UserError, tensorflow_error_summary
from app.run_integrity import load_model_file
from app.backbone_reuse import REUSED_WEIGHTS_PREFIX
from app.features import cached_features
from app.meta_pools import build_meta_pools
from app.meta_pools import describe as describe_pools
from app.episode_learner import choose_episode_learners
from app.meta_target import target_classifier
from app.support_finetuning import choose_for_run as choose_support_finetuning
from app.target_finetuning import TARGET_FINETUNE_PHASES, finetune_on_target, starting_head, target_finetune_applies
from app.target_heads import candidate_heads
from app.source_stage import (CHOICE_SEED_OFFSET, META_VAL_SEED_OFFSET, SOURCE_STAGES, dense_embedding,
                              identity_embedding, train_supervised)
from app.source_stage import choose as choose_stage
from app.source_stage import score as score_stage
from app.source_stage import summary as stage_summary
from app.phases import HEAD, META, CompileSpec, PhaseContext, PhaseSpec, compile_model, run_phase
from app.text_top_block_stage import (TextTopBlockCut, cut_text_backbone, features_through_text_cut,
                                      text_top_block_candidate)
from app.top_block_stage import cut_backbone, features_through_cut, top_block_candidate
from data.episodes import EpisodeSampler, array_meta_batches
from data.episodes import text_meta_batches
from data.atomic_write import write_atomically
from data.pipeline import image_dataset, read_texts
from models.finetuning import unfreeze_top_blocks
from models.meta import ALGORITHMS, MAML, build_meta_learner

logger = logging.getLogger(__name__)
META_LEARNER_FILE, META_MANIFEST_FILE = rd.META_LEARNER_FILE, rd.META_MANIFEST_FILE
META_DONE_WEIGHTS = "meta_done.weights.h5"
VALIDATION_META_STEPS = 10


@dataclass
class MetaOutcome:
    head: ClassificationHead
    head_model: keras.Model
    embedding: keras.Model | None  # features mode: the trained embedding over backbone features
    val_embeddings: np.ndarray
    val_probabilities: np.ndarray  # the first classifier's (before the refit on train + validation)
    metadata: dict
    phases: list[str]
    refit: dict
    # The final extractor's features of the target's train and validation files (the top_blocks
    # source stage changes the extractor, and with it the features computed before meta-training).
    features: tuple[np.ndarray, np.ndarray]
    # The first classifier's head_dense (kernel, bias) when the refit changed only the head (TargetClassifier's);
    # None when the target stage's fine-tuning retrained the embedding too, or without a refit.
    held_out_head: tuple[np.ndarray, np.ndarray] | None = None
    # When the target stage's fine-tuning refit retrained the embedding: the first fine-tuned model's unknown-class
    # thresholds (app/threshold_transfer.py).
    threshold_offsets: dict[str, float] | None = None


def meta_input_mode(config: TrainConfig, weights: str) -> str:
    if config.meta_input != "auto":
        return config.meta_input
    return "raw" if weights == "none" else "features"


def _batchnorm_mode(config: TrainConfig) -> str:
    """metadata.json's `meta.batchnorm`: how the learner's queries are normalised."""
    if config.transductive:
        return "transductive (query statistics)"
    if config.strategy == "protonet":
        return "inductive"
    return "inductive (queries normalised with the support's statistics)"


def resolved_adapt(config: TrainConfig, weights: str):
    """What the inner loop adapts. `auto`: every layer for Reptile (it only meta-learns what adapts) and
    for FOMAML on a backbone trained from scratch; the head for MAML, and for FOMAML over a pretrained
    backbone.

    Measured on the fonts bench (conv4 from scratch, train.py's other defaults: 5-way 5-shot 10-query
    episodes, 4 per step, inner lr 0.01, 5 inner steps; bench/notes.md), 5-way 1 / 5 shots: FOMAML
    adapting the head only 77.9% / 83.7% after 2,000 meta steps, every layer 86.6% / 97.0% (2.8x the
    time per step: the first-order outer step gets nothing through the head's adaptation, so the
    embedding must adapt too); MAML adapting the head 92.5% / 96.5% after 2,000 steps in 437 s (second
    order trains the embedding through the head's adaptation), every layer 66.1% / 94.0% after 500
    steps in 573 s (6x the time per step). Over pretrained features the head keeps the inner loop cheap
    (feature reuse, Raghu et al. 2020); not measured against all there."""
    if config.adapt == "auto":
        return "all" if config.strategy == "reptile" or (config.strategy == "fomaml" and weights == "none") else "head"
    return int(config.adapt) if is_count(config.adapt) else config.adapt


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
        if self.probe is not None and hasattr(self.model, "adapt_params"):
            (support_x, support_y, _), _ = self.probe
            _, losses = self.model.adapt_params(self.model.read_params(), support_x[0], support_y[0], training=False)
            with self.writer.as_default():
                for k, loss in enumerate(losses):
                    tf.summary.scalar(f"inner_loop/support_loss_before_step_{k + 1}", float(loss), step=epoch,
                                      description="Support-set loss of a fixed validation episode before each inner "
                                                  "step")
        self.writer.flush()  # before the epoch's checkpoint (see app/tensorboard_logging.RunTensorBoard)

    def on_train_end(self, logs=None):
        self.writer.flush()


def _build_learner(config: TrainConfig, embedding: keras.Model, input_shape,
                   weights: str) -> tuple[keras.Model, CompileSpec]:
    """The meta learner, and how it compiles (its meta optimizer; the phase runner compiles it)."""
    kwargs = {"transductive": config.transductive}
    if config.strategy != "protonet":
        # Queries normalised with the support's statistics at the adapted weights (MetaBN), not the moving
        # statistics: on the fonts bench it took every gradient learner past 90% at 5-way 1-shot, inductively
        # (models/meta/base.py, GradientMetaLearner.query_logits; BENCHMARKS.md, few-shot section).
        kwargs |= {"adapt": resolved_adapt(config, weights), "inner_learning_rate": config.inner_learning_rate,
                   "inner_steps": config.inner_steps, "query_statistics": "support"}
    if config.strategy == "reptile":
        kwargs["seed"] = config.seed
    learner = build_meta_learner(config.strategy, embedding, config.ways, **kwargs)
    adapt = kwargs.get("adapt")
    if isinstance(adapt, int) and adapt > len(learner.adapted_layers) - 1:  # the head is the last adapted layer
        logger.warning("--adapt %d: the embedding has %d layers with weights, so every one of them adapts (as with "
                       "--adapt all).", adapt, len(learner.adapted_layers) - 1)
    if isinstance(learner, MAML) and not learner.first_order:
        # Second order keeps every inner step's graph: refuse before training if it cannot fit.
        learner.check_memory((config.ways * config.shots, *input_shape), (config.ways * config.queries, *input_shape))
    if config.strategy == "reptile":  # SGD on (theta - phi) with step eps: theta <- theta + eps * mean(phi - theta)
        optimizer = keras.optimizers.SGD(config.meta_step_size)
    else:
        optimizer = keras.optimizers.Adam(config.meta_learning_rate)
    if config.init:
        _initialise_from(learner, Path(config.init))
    return learner, CompileSpec(optimizer)


@contextlib.contextmanager
def _sized_to_fit(config: TrainConfig, run_dir: Path):
    """An embedding or a meta batch too large for memory (--embedding-units 100000000: a 1280 x 10^8 kernel;
    --meta-batch-size 100000000 episodes per step) was TensorFlow's ResourceExhaustedError traceback, with the
    run left INCOMPLETE. The sizes are the user's: name them. (Second-order MAML's unrolled inner loop is
    estimated before any training, by check_memory.)"""
    try:
        yield
    except tf.errors.ResourceExhaustedError as error:
        raise UserError(
            f"Meta-training ran out of memory ({tensorflow_error_summary(error)}): the embedding or the episodes and meta batches are likely "
            f"too large for this machine. Received: --embedding-units {config.embedding_units}, --meta-batch-size "
            f"{config.meta_batch_size}, --ways {config.ways} --shots {config.shots} --queries {config.queries}. "
            f"Use smaller values and a new run directory (--output NEW_DIR); {rd.shell_path(run_dir)} stays "
            "INCOMPLETE.") from None


def check_init_run(config: TrainConfig) -> None:
    """`--init RUN_DIR` checked before the run directory exists: a missing, unfinished or non-meta run, or one of
    another strategy, was refused only after the feature pass, leaving an INCOMPLETE run behind. (Whether its
    learner's shapes match this one's needs the learner: `_initialise_from` checks that.)"""
    if not config.init or config.strategy not in META_STRATEGIES:
        return
    try:
        run_dir = rd.require_complete_run(config.init)
    except UserError as error:
        raise UserError(f"--init {config.init}: {error}") from None
    if not (run_dir / META_LEARNER_FILE).is_file():
        raise UserError(f"--init needs a run directory of a meta strategy (with {META_LEARNER_FILE}). "
                        f"Received: --init {run_dir}")
    metadata = rd.read_json(run_dir / rd.METADATA_FILE, rd.retrain_remedy(run_dir))
    strategy = metadata.get("strategy")
    if strategy != config.strategy:
        raise UserError(f"--init {run_dir} is a {strategy} run; this run is {config.strategy}. Use the same "
                        f"--strategy. Received: --init {run_dir} --strategy {config.strategy}")
    if not _load_init_learner(run_dir).embedding.weights:
        # A --meta-data protonet run whose source stage kept the pretrained features (none; on text also
        # top_blocks) saves an identity embedding: there is nothing to start from, and the shape mismatch said
        # "backbone, embedding_units or ways differ" after the run directory and the feature pass.
        stage = ((metadata.get("meta") or {}).get("source_stage") or {}).get("chosen")
        raise UserError(f"--init {run_dir} has no meta-learned embedding to start from (its source stage kept "
                        f"{stage!r}: the backbone's own features). Leave --init out, or pass a run whose source "
                        "stage trained an embedding (--source-stage protonet or supervised).")


def check_init_fits(config: TrainConfig, feature_extractor: keras.Model, backbone_name: str, weights: str) -> None:
    """`--init RUN_DIR` whose learner cannot start this one (another backbone, --meta-input, --embedding-units, or
    --ways for the fixed-head learners), refused once the backbone is built and before the run directory exists:
    `_initialise_from` found it only after the feature pass, leaving an INCOMPLETE run directory (whose --resume
    failed the same way) that blocked the same --output. Compares the weight shapes the learner will have."""
    if not config.init or config.strategy not in META_STRATEGIES:
        return
    run_dir = Path(config.init)
    source = _load_init_learner(run_dir)
    mode = meta_input_mode(config, weights)
    if mode == "features":  # the Dense embedding over the backbone's features (dense_embedding)
        _refuse_other_reused_features(config, run_dir, backbone_name, weights)
        expected = [(int(feature_extractor.output_shape[-1]), config.embedding_units), (config.embedding_units,)]
        out = config.embedding_units
    else:  # the backbone itself
        expected = [tuple(w.shape) for w in feature_extractor.weights]
        out = int(feature_extractor.output_shape[-1])
    saved = [tuple(w.shape) for w in source.embedding.weights]
    if config.strategy != "protonet":  # a Dense head of --ways units on the embedding
        expected += [(out, config.ways), (config.ways,)]
        saved += [tuple(w.shape) for w in source.head.weights]
    if sorted(saved) == sorted(expected):
        return
    differences = _init_differences(config, run_dir, backbone_name, mode)
    raise UserError(f"--init {run_dir}: its meta-learner does not fit this run's ({differences}). Pass the options "
                    f"that run was trained with, or leave --init out. Received: --init {run_dir}")


def _refuse_other_reused_features(config: TrainConfig, run_dir: Path, backbone_name: str, weights: str) -> None:
    """On features, the --init run's embedding was meta-trained over its backbone's features. A reused backbone
    (`--backbone RUN_DIR`, weights "run:<digest>") on either side gives features of the same width as its family's
    but other values, so the shapes matched and the run started from an embedding of another feature space without
    a word."""
    metadata = rd.read_json(run_dir / rd.METADATA_FILE, rd.retrain_remedy(run_dir))
    theirs = metadata.get("weights") if isinstance(metadata, dict) else None
    if not isinstance(theirs, str) or theirs == weights:
        return
    if not any(value.startswith(REUSED_WEIGHTS_PREFIX) for value in (theirs, weights)):
        return  # pretrained weights of one name are the same features
    source = metadata.get("backbone_run") if isinstance(metadata.get("backbone_run"), dict) else {}
    there = f"the run {source['path']}'s" if source.get("path") else str(metadata.get("backbone"))
    here = f"the run {config.backbone}'s" if weights.startswith(REUSED_WEIGHTS_PREFIX) else backbone_name
    raise UserError(f"--init {run_dir}: its meta-learned embedding was trained on the features of another backbone "
                    f"({there}, weights {theirs}) than this run's ({here}, weights {weights}): the same width, other "
                    f"features. Pass the --backbone that run was trained on, or leave --init out. Received: --init "
                    f"{run_dir} --backbone {config.backbone or backbone_name}")


def _init_differences(config: TrainConfig, run_dir: Path, backbone_name: str, mode: str) -> str:
    """What differs between the --init run's settings and this run's, in flags (its config.json and metadata.json)."""
    try:
        saved = rd.read_json(run_dir / rd.CONFIG_FILE)
        saved_mode = (rd.read_json(run_dir / rd.METADATA_FILE).get("meta") or {}).get("input")
    except UserError:
        saved, saved_mode = {}, None
    pairs = [("--backbone", saved.get("backbone"), backbone_name), ("--meta-input", saved_mode, mode)]
    if mode == "features":
        pairs.append(("--embedding-units", saved.get("embedding_units"), config.embedding_units))
    if config.strategy != "protonet":
        pairs.append(("--ways", saved.get("ways"), config.ways))
    differing = [f"{flag} {theirs} there, {ours} here" for flag, theirs, ours in pairs
                 if theirs is not None and str(theirs) != str(ours)]
    return "; ".join(differing) or "the backbone's weights differ in shape"


def _load_init_learner(run_dir: Path) -> keras.Model:
    """The --init run's saved learner; a damaged or unsafe file is one UserError (it was a traceback)."""
    import models.layers  # noqa: F401  (registers the layers a saved learner may contain)
    import models.meta  # noqa: F401  (registers the learners)

    return load_model_file(run_dir / META_LEARNER_FILE,
                           lambda file: keras.saving.load_model(file, safe_mode=True, compile=False),
                           rd.retrain_remedy(run_dir))


def _initialise_from(learner, run_dir: Path) -> None:
    import models.layers  # noqa: F401  (registers the layers a saved learner may contain)

    path = run_dir / META_LEARNER_FILE
    if not path.is_file():
        raise UserError(f"--init needs a run directory of a meta strategy (with {META_LEARNER_FILE}). "
                        f"Received: --init {run_dir}")
    source = _load_init_learner(run_dir)
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


def source_candidates(config: TrainConfig, mode: str) -> tuple[str, ...] | None:
    """The source stages to try (app/source_stage.py), or None where there is no choice to make:
    only protonet on cached features with a separate source folder has one."""
    if config.strategy != "protonet" or not config.meta_data or mode != "features":
        if config.source_stage not in ("auto", "protonet"):
            raise UserError(f"--source-stage {config.source_stage} needs --meta-data, --strategy protonet and the "
                            f"features input (this run's input is {mode}). Received: --source-stage "
                            f"{config.source_stage}")
        return None
    return SOURCE_STAGES if config.source_stage == "auto" else (config.source_stage,)


def check_meta_input_options(config: TrainConfig, modality: str, weights: str) -> None:
    """The options that need the resolved input mode (`--meta-input auto` depends on the backbone's weights),
    checked before the run directory exists: refused later, they left an INCOMPLETE run behind, after the
    feature pass (`--source-stage`) or the whole meta-training (`--target-finetune yes`)."""
    if config.strategy not in META_STRATEGIES:
        return
    mode = meta_input_mode(config, weights)
    if source_candidates(config, mode) == ("top_blocks",) and config.unfreeze == "all":
        # (whether the backbone's blocks can be cut at all needs the cut: _top_block_cut, once the run has started)
        raise _no_top_blocks(config, "--unfreeze all leaves no frozen bottom")
    target_finetune_applies(config, modality, mode)


@dataclass
class _ChosenStage:
    embedding: keras.Model
    head: str  # the target head that scored best with it
    summary: dict
    target_features: np.ndarray | None = None  # top_blocks kept: the trained extractor's features of train + val


def _no_top_blocks(config: TrainConfig, why: str) -> UserError:
    return UserError(f"--source-stage top_blocks cannot train this backbone's top blocks: {why}. Received: "
                     f"--backbone {config.backbone} --unfreeze {config.unfreeze}. Use --source-stage auto or "
                     "protonet, or a pretrained backbone with blocks left below --unfreeze.")


def _top_block_cut(config: TrainConfig, candidates, backbone, feature_extractor, modality: str, num_files: int):
    """The cut for the top_blocks candidate, or None (auto skips it with a line; asked for alone: one error).
    `num_files`: the source's and the target's files (text keeps their hidden states at the cut in memory)."""
    if "top_blocks" not in candidates:
        return None
    if modality == "text":
        cut, why = cut_text_backbone(feature_extractor, backbone.spec, config.unfreeze, num_files)
    else:
        cut, why = cut_backbone(feature_extractor, backbone.spec, backbone.name, backbone.weights, backbone.size,
                                config.resize, config.unfreeze)
    if cut is None and config.source_stage == "top_blocks":
        raise _no_top_blocks(config, why)
    if cut is None:
        logger.info("Source stage top_blocks skipped: %s", why)
    return cut


def _features_through(cut, backbone, config: TrainConfig):
    """With a top_blocks stage ahead, the source's features are top(bottom(x)) and the bottom's output is kept
    for the stage: one bottom pass per source file serves both (app/top_block_stage.py,
    app/text_top_block_stage.py). None: the whole extractor computes them."""
    if cut is None:
        return None
    if isinstance(cut, TextTopBlockCut):
        return functools.partial(features_through_text_cut, cut)
    return functools.partial(features_through_cut, cut, size=backbone.size, resize=config.resize,
                             use_cache=bool(config.cache_features))


def _choose_source_stage(config: TrainConfig, candidates, protonet_embedding, meta_train_x, meta_val_x, pools,
                         target_x, target_labels, num_classes: int, backbone, feature_extractor,
                         target_examples, cut) -> _ChosenStage:
    """Every candidate's embedding, both its scores, and the one kept (see app/source_stage.py)."""
    val = pools.val_shape
    choice_sampler = stopping_sampler = None
    if val is not None:
        choice_sampler = EpisodeSampler(pools.val_labels, val.ways, val.shots, val.queries,
                                        seed=config.seed + CHOICE_SEED_OFFSET)
        stopping_sampler = EpisodeSampler(pools.val_labels, val.ways, val.shots, val.queries,
                                          seed=config.seed + META_VAL_SEED_OFFSET)
    embeddings, inputs, top = {}, {name: (target_x, meta_val_x) for name in candidates}, None
    supervised_epochs = None
    for name in candidates:
        if name == "protonet":
            embeddings[name] = protonet_embedding
        elif name == "top_blocks":
            if isinstance(cut, TextTopBlockCut):
                top = text_top_block_candidate(cut, backbone.spec, feature_extractor, pools, target_examples, config)
            else:
                top = top_block_candidate(cut, backbone.spec, feature_extractor, pools, target_examples,
                                          backbone.size, config.resize, config,
                                          protonet_embedding if "protonet" in candidates else None)
            embeddings[name], inputs[name] = top.scorer, (top.target_rows, top.meta_val_rows)
        elif name == "none":
            embeddings[name] = identity_embedding(meta_train_x.shape[-1])
        else:
            logger.info("Supervised source stage: a softmax classifier over the %d meta-training classes",
                        len(set(pools.train_labels)))
            embeddings[name], supervised_epochs = train_supervised(
                meta_train_x, pools.train_labels, meta_val_x, stopping_sampler, config.embedding_units,
                config.meta_learning_rate, config.meta_epochs, config.patience, config.batch_size, config.seed)
    heads = candidate_heads(config.target_head, num_classes)
    scores = [score_stage(name, embeddings[name], inputs[name][0], target_labels, num_classes, heads, inputs[name][1],
                          choice_sampler, config.seed) for name in candidates]
    chosen = choose_stage(scores)
    logger.info("Source stage kept: %s with the %s head (%s)", chosen.name, chosen.head,
                "the only one asked for" if len(scores) == 1 else "best on the target's train + validation files")
    summary = stage_summary(scores, chosen, config.source_stage)
    if supervised_epochs is not None:  # outside the phase runner, it is in no history: say what it trained
        summary["supervised"] = {"epochs_kept": supervised_epochs, "max_epochs": config.meta_epochs}
    if top is None:
        return _ChosenStage(embeddings[chosen.name], chosen.head, summary)
    summary["top_blocks"] = top.summary()
    if chosen.name != "top_blocks":
        top.discard(feature_extractor)  # the extractor goes back to the pretrained weights
        return _ChosenStage(embeddings[chosen.name], chosen.head, summary)
    return _ChosenStage(top.embedding, chosen.head, summary, top.target_features())


def _check_source_unchanged(run_dir: Path, manifest: dict, config: TrainConfig) -> None:
    """A resumed run continues on the --meta-data source it started on, as on the target's data (app/training.py):
    with files added, removed or edited, the classes held out for meta-validation could change, so classes that
    chose the epochs before the interruption were meta-trained after it, and meta_manifest.json, rewritten, no
    longer said what trained the run. A fresh run directory has no meta_manifest.json yet."""
    saved = run_dir / META_MANIFEST_FILE
    if not saved.is_file():
        return
    start_again = ("The run cannot be resumed; start a new run (python train.py --config RUN_DIR/config.json "
                   "--output NEW_DIR).")
    recorded, now = rd.read_json(saved, start_again), json.loads(json.dumps(manifest))
    if isinstance(recorded, dict) and recorded != now and recorded | {"root": now.get("root")} == now:
        # The same files under another folder: the source was moved and config.json's meta_data set to its new
        # place (this said "changed": files added, removed or edited, none of which had happened). The caller
        # rewrites meta_manifest.json, which then names the new folder.
        logger.info("The run's --meta-data folder moved from %s to %s (the same files): continuing",
                    recorded.get("root"), now.get("root"))
        return
    if recorded != now:
        raise UserError(f"The --meta-data folder {config.meta_data!r} changed since {str(run_dir)!r} started (files "
                        "added, removed or edited), so its meta-training and meta-validation classes cannot be "
                        "continued. Put the folder back as it was and resume again, or start a new run (python "
                        "train.py --config RUN_DIR/config.json --output NEW_DIR).")


def run_meta_training(context: PhaseContext, config: TrainConfig, scan, backbone, feature_extractor,
                      train_examples, val_examples, train_features, val_features, run_dir: Path,
                      store_key: str | None) -> MetaOutcome:
    with _sized_to_fit(config, run_dir):
        return _run_meta_training(context, config, scan, backbone, feature_extractor, train_examples, val_examples,
                                  train_features, val_features, run_dir, store_key)


def _run_meta_training(context: PhaseContext, config: TrainConfig, scan, backbone, feature_extractor,
                       train_examples, val_examples, train_features, val_features, run_dir: Path,
                       store_key: str | None) -> MetaOutcome:
    modality = scan.modality
    mode = meta_input_mode(config, backbone.weights)
    pools = build_meta_pools(config, scan, train_examples, val_examples)
    if pools.manifest is not None:
        _check_source_unchanged(run_dir, pools.manifest, config)
        rd.write_json(run_dir / META_MANIFEST_FILE, pools.manifest)
    shape = pools.train_shape
    logger.info("%s: %s; inputs: %s", config.strategy, describe_pools(pools, config),
                "cached frozen features" if mode == "features" else "raw inputs, backbone training")
    pool_train, pool_val, pool_names = pools.train, pools.val, pools.class_names
    sampler = EpisodeSampler(pools.train_labels, shape.ways, shape.shots, shape.queries, seed=config.seed,
                             class_names=pool_names)

    candidates = source_candidates(config, mode)
    cut = None
    if candidates is not None:  # before any training: an impossible top_blocks stage fails in seconds
        cut = _top_block_cut(config, candidates, backbone, feature_extractor, modality,
                             len(pools.train) + len(pools.val) + len(train_examples) + len(val_examples))
        candidates = tuple(name for name in candidates if name != "top_blocks" or cut is not None)

    # Inputs of the pools and of the target sets, in the learner's input space.
    if mode == "features":
        # Pools drawn from the target's files reuse the features already computed for them.
        known = dict(zip((e.path for e in train_examples + val_examples), np.concatenate([train_features,
                                                                                          val_features])))
        extract = _features_through(cut, backbone, config)

        def to_inputs(examples):
            if examples and all(e.path in known for e in examples):
                return np.stack([known[e.path] for e in examples])
            return cached_features(feature_extractor, examples, modality, backbone.size, config.batch_size,
                                   config.resize, store_key, extract)
        meta_train_x = to_inputs(pool_train)
        meta_val_x = to_inputs(pool_val)
        embedding = dense_embedding(meta_train_x.shape[-1], config.embedding_units)
    else:
        meta_train_x = _raw_inputs(pool_train, modality, backbone.size, config.resize)
        meta_val_x = _raw_inputs(pool_val, modality, backbone.size, config.resize)
        embedding = feature_extractor
        if backbone.weights == "none":
            feature_extractor.trainable = True  # from scratch: everything trains, BatchNorm included
        else:
            unfreeze_top_blocks(backbone.spec, feature_extractor, config.unfreeze)
    learner, compile_spec = _build_learner(config, embedding, meta_train_x.shape[1:], backbone.weights)

    train_ds = _episodes(sampler, meta_train_x, config.meta_batch_size, None, modality)
    val_ds, monitor, probe = None, "val_loss", None
    if pools.val_shape:
        val = pools.val_shape
        val_sampler = EpisodeSampler(pools.val_labels, val.ways, val.shots, val.queries,
                                     seed=config.seed + META_VAL_SEED_OFFSET, class_names=pool_names)
        val_ds = _episodes(val_sampler, meta_val_x, config.meta_batch_size, VALIDATION_META_STEPS, modality).cache()
        probe = next(iter(val_ds.take(1)))
    else:
        monitor = "loss"
        logger.warning("No meta-validation (%s).", pools.validation)

    done_weights = run_dir / CHECKPOINTS_DIR / META_DONE_WEIGHTS
    if candidates is not None and "protonet" not in candidates:
        meta_epochs, meta_steps = 0, 0  # no episodic source stage asked for
    elif context.resumed_phase in (HEAD, *TARGET_FINETUNE_PHASES):  # meta-training finished before the interruption
        compile_model(learner, compile_spec)  # saved below as it would have been after its phase
        learner.load_weights(done_weights)
        if context.resumed_phase == HEAD:
            meta_epochs = context.resume.state.epoch_offset
            meta_steps = context.resume.state.step_offset
        else:  # the target stage's phases record where meta-training ended
            meta_epochs = context.resume.state.selection["meta_epochs"]
            meta_steps = context.resume.state.selection["meta_steps"]
    else:
        result = run_phase(context, PhaseSpec(
            META, 1, learner, compile_spec, train_ds, val_ds, config.meta_epochs, steps_per_epoch=config.meta_steps,
            extra_callbacks=(MetaStepLogger(context.log_dir, probe),), monitor=monitor,
            description=f"{config.strategy} meta-training, {config.ways}-way {config.shots}-shot episodes"))
        # The head phase's checkpoints do not hold the embedding.
        write_atomically(done_weights, lambda temporary: learner.save_weights(temporary))
        meta_epochs, meta_steps = result.epochs, result.epochs * config.meta_steps
    stage = None
    if candidates is not None:
        stage = _choose_source_stage(config, candidates, embedding, meta_train_x, meta_val_x, pools,
                                     np.concatenate([train_features, val_features]),
                                     [e.label for e in train_examples + val_examples], len(scan.class_names),
                                     backbone, feature_extractor, train_examples + val_examples, cut)
        embedding = stage.embedding
        if stage.target_features is not None:  # the backbone's top blocks trained: its features changed
            train_features, val_features = np.split(stage.target_features, [len(train_examples)])
        learner = build_meta_learner("protonet", embedding, config.ways, transductive=config.transductive)

    # The target classifier on the meta-learned embedding.
    def embed(examples, features):
        if mode == "features":
            return embedding.predict(features, verbose=0, batch_size=256)
        return embedding.predict(_raw_inputs(examples, modality, backbone.size, config.resize), verbose=0,
                                 batch_size=config.batch_size)

    val_embeddings = embed(val_examples, val_features)
    train_embeddings = embed(train_examples, train_features)
    train_labels, val_labels = [e.label for e in train_examples], [e.label for e in val_examples]
    target = target_classifier(context, config, len(scan.class_names), train_embeddings, train_labels,
                               val_embeddings, val_labels, meta_epochs, meta_steps,
                               head=None if stage is None else stage.head)
    # On text with a source, the target stage fine-tunes the backbone too (app/target_finetuning.py).
    finetune, why = target_finetune_applies(config, modality, mode)
    tuned = None
    if finetune:
        tuned = finetune_on_target(context, config, backbone, feature_extractor, embedding,
                                   starting_head(config, len(scan.class_names)),
                                   train_examples, val_examples,
                                   train_embeddings, val_embeddings, modality, meta_epochs, meta_steps, why)
        train_features, val_features = tuned.features
        train_embeddings, val_embeddings = tuned.embeddings
    # Saved once the target stage is done: its fine-tuning (text) trains the learner's embedding and extractor.
    write_atomically(run_dir / META_LEARNER_FILE, lambda temporary: learner.save(temporary))
    episode_learner = None
    if config.strategy == "protonet":  # what evaluate.py --episodes runs on the embedding, per shot count
        episode_learner = choose_episode_learners(np.concatenate([train_embeddings, val_embeddings]),
                                                  np.asarray(train_labels + val_labels), config.seed)
    support_finetuning = None
    if mode == "features":  # how much evaluate.py --episodes fine-tunes on each support (app/support_finetuning.py)
        support_finetuning = choose_support_finetuning(
            learner, config.strategy, np.concatenate([train_features, val_features]),
            np.concatenate([train_embeddings, val_embeddings]), train_labels + val_labels, episode_learner, config.seed)
    metadata = {"algorithm": config.strategy, "ways": shape.ways, "shots": shape.shots, "queries": shape.queries,
                "input": mode, "transductive": config.transductive,
                "batchnorm": _batchnorm_mode(config),
                "inner_steps": config.inner_steps if config.strategy != "protonet" else None,
                "inner_learning_rate": config.inner_learning_rate if config.strategy != "protonet" else None,
                "adapt": resolved_adapt(config, backbone.weights) if config.strategy != "protonet" else None,
                "meta_batch_size": config.meta_batch_size, "episodes_from": pools.source, **pools.summary,
                "meta_epochs": meta_epochs, "meta_steps": meta_steps,
                **({"source_stage": stage.summary} if stage is not None else {}), **target.metadata,
                "target_finetune": tuned.metadata if tuned is not None else {"applied": False, "reason": why},
                **({"episode_learner": episode_learner} if episode_learner else {}),
                **({"support_finetuning": support_finetuning} if support_finetuning else {})}
    if tuned is not None:
        return MetaOutcome(tuned.head, tuned.head_model, embedding, val_embeddings, tuned.val_probabilities, metadata,
                           [META] + target.phases + tuned.phases, tuned.refit, (train_features, val_features),
                           threshold_offsets=tuned.threshold_offsets)
    return MetaOutcome(target.head, target.head_model, embedding if mode == "features" else None, val_embeddings,
                       target.val_probabilities, metadata, [META] + target.phases, target.refit,
                       (train_features, val_features), target.held_out_head)


__all__ = ["ALGORITHMS", "META_LEARNER_FILE", "MetaOutcome", "meta_input_mode", "run_meta_training"]
