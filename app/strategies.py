"""The training strategies behind one interface: `strategy_for(config).train(job) -> TrainedModel`.

Transfer (linear, finetune): a head on the cached features, then, for finetune, the top
backbone blocks with it (app/phases.py). Meta (protonet, reptile, fomaml, maml): episodic
meta-training, then a classifier over the target classes (app/meta_training.py). Both end
in the same artifact, a plain task model over the target classes, so everything after
training (calibration, refit, unknown detector, run directory) treats them alike
(app/training.py). Every phase runs through the one phase runner, `app/phases.run_phase`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import keras
import numpy as np

from app import tensorboard_logging as tb
from app.config import META_STRATEGIES, TrainConfig
from app.features import extract_features
from app.meta_training import run_meta_training
from app.phases import FINETUNE, HEAD, PhaseContext, finetune_backbone, finetune_inputs, phase2_augmentation, train_head
from app.text_phase2 import text_phase2_cut
from data.augment import build_augmenter
from data.records import Example
from models.heads import ClassificationHead
from models.task_model import build_task_model

logger = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """What a strategy trains on: the run's phase context, data, backbone and cached features."""

    context: PhaseContext
    scan: object  # data/scan.py's ScanResult: class names, modality, root
    backbone: object  # app/backbone_choice.py's ResolvedBackbone
    feature_extractor: keras.Model
    train_examples: list[Example]
    val_examples: list[Example]
    train_features: np.ndarray
    val_features: np.ndarray
    run_dir: Path
    store_key: str | None  # the feature cache's key (None: --no-cache-features)

    @property
    def config(self) -> TrainConfig:
        return self.context.config


@dataclass
class TrainedModel:
    """What a strategy hands back: the task model and what the run records about it."""

    task_model: keras.Model  # raw input -> class probabilities
    head_model: keras.Model  # the classifier on (embedded) features
    head_inputs: np.ndarray  # the validation files as the head sees them (features or embeddings)
    hidden_units: int  # the head's hidden layer (the projector shows it when there is one)
    val_probabilities: np.ndarray  # before any refit on train + validation
    phases: list[str]
    steps_taken: int  # optimizer steps of every phase (a refit's TensorBoard steps continue from here)
    meta: dict | None = None  # meta strategies: metadata.json's "meta"
    refit: dict | None = None  # meta strategies refit themselves: metadata.json's "refit"
    # The backbone's (train, val) features after training, when training changed the backbone the run's
    # later steps (calibration, unknown detector) read features from (the top_blocks source stage).
    features: tuple[np.ndarray, np.ndarray] | None = None
    # Meta strategies that refit only their classifier: the first classifier's head_dense (kernel, bias), which
    # never saw the validation files, for the unknown-class detector (app/training.py::_held_out_head).
    held_out_head: tuple[np.ndarray, np.ndarray] | None = None
    # Meta strategies whose target fine-tuning refit retrained the embedding: the first model's unknown-class
    # thresholds, carried over to the final model's (app/threshold_transfer.py).
    threshold_offsets: dict[str, float] | None = None


class Strategy(Protocol):
    def train(self, job: TrainingJob) -> TrainedModel: ...


class TransferStrategy:
    """linear (head on cached features) and finetune (then the backbone top)."""

    def train(self, job: TrainingJob) -> TrainedModel:
        context, config, scan, backbone = job.context, job.config, job.scan, job.backbone
        train_labels = [e.label for e in job.train_examples]
        val_labels = [e.label for e in job.val_examples]
        head = ClassificationHead(len(scan.class_names), config.dropout, seed=config.seed,
                                  hidden_units=config.hidden_units)
        head_model = head.features_model(job.train_features.shape[-1])
        resumed_in_finetune = context.resumed_phase == FINETUNE
        if not resumed_in_finetune:
            head_result = train_head(context, head_model, job.train_features, train_labels, job.val_features,
                                     val_labels, phase_number=1)
            head_epochs, head_steps = head_result.epochs, head_result.epochs * head_result.steps_per_epoch
        else:
            head_epochs, head_steps = context.resume.state.epoch_offset, context.resume.state.step_offset
        task_model = build_task_model(job.feature_extractor, head)
        if config.strategy != "finetune":
            return self._trained(task_model, head_model, job.val_features, config, [HEAD], head_steps)
        text_cut = text_phase2_cut(config, backbone.spec, job.feature_extractor, scan.modality,
                                   len(job.train_examples) + len(job.val_examples))
        inputs = finetune_inputs(config, scan.modality, backbone.size, job.train_examples, job.val_examples,
                                 len(scan.class_names), text_cut)
        augment = phase2_augmentation(config, scan.modality)
        if augment is not None and not resumed_in_finetune:
            images, labels = next(iter(inputs.train.take(1)))
            # A separate augmenter with the run's seed: drawing this sample leaves training's random stream alone.
            images = np.asarray(build_augmenter(augment, seed=config.seed)(images, training=True))
            labels = labels.numpy()
            tb.log_augmented_batch(context.log_dir, images,
                                   (labels.argmax(axis=1) if labels.ndim == 2 else labels).tolist(), scan.class_names)
        phase2 = finetune_backbone(context, backbone.spec, job.feature_extractor, task_model, head.layers, inputs,
                                   epoch_offset=head_epochs, step_offset=head_steps)
        # The backbone changed: the head now sees new features (never cached: they belong to this run only).
        final_val_features = extract_features(job.feature_extractor, job.val_examples, scan.modality, backbone.size,
                                              config.batch_size, config.resize)
        return self._trained(task_model, head_model, final_val_features, config, [HEAD, FINETUNE],
                             head_steps + phase2.epochs * phase2.steps_per_epoch)

    @staticmethod
    def _trained(task_model, head_model, val_features, config: TrainConfig, phases, steps) -> TrainedModel:
        return TrainedModel(task_model, head_model, val_features, config.hidden_units,
                            head_model.predict(val_features, verbose=0), phases, steps)


class MetaStrategy:
    """protonet, reptile, fomaml, maml: episodic meta-training, then the target classifier (refit included)."""

    def train(self, job: TrainingJob) -> TrainedModel:
        outcome = run_meta_training(job.context, job.config, job.scan, job.backbone, job.feature_extractor,
                                    job.train_examples, job.val_examples, job.train_features, job.val_features,
                                    job.run_dir, job.store_key)
        task_model = build_task_model(job.feature_extractor, outcome.head, outcome.embedding)
        return TrainedModel(task_model, outcome.head_model, outcome.val_embeddings, 0, outcome.val_probabilities,
                            outcome.phases, 0, meta=outcome.metadata, refit=outcome.refit, features=outcome.features,
                            held_out_head=outcome.held_out_head, threshold_offsets=outcome.threshold_offsets)


def strategy_for(config: TrainConfig) -> Strategy:
    return MetaStrategy() if config.strategy in META_STRATEGIES else TransferStrategy()
