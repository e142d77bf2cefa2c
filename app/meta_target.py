"""The target classifier of a meta run, on the meta-learned embedding of the target's files.

protonet: the class prototypes, or a logistic regression, written into the Dense head
(app/target_heads.py; `--target-head auto` picks by cross-validation on train + validation
files). reptile / fomaml / maml: a head trained on the embeddings with early stopping on the
validation files.

Then the refit, as `linear` / `finetune` do (app/refit.py): once the choices are made on the
validation files, the final prototypes / head use every labelled training file (train +
validation). With few files per class the validation files are a large share of them (the
R8 case of issue 18: prototypes from 4 texts per class while 2 more sat in validation). The
run's validation metrics and temperature are the first classifier's, measured before the
refit; the test split is never touched. `--refit no` keeps the first classifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from app.config import TrainConfig
from app.phases import HEAD, PhaseContext, fit_fixed_epochs, head_training, train_head
from data.splits import class_weights
from models.heads import ClassificationHead
from app.target_heads import CV_FOLDS, FIT, candidate_heads, choose_head

logger = logging.getLogger(__name__)


@dataclass
class TargetClassifier:
    head: ClassificationHead
    head_model: keras.Model
    val_probabilities: np.ndarray  # the first classifier's, on the validation files (before any refit)
    phases: list[str]
    refit: dict  # what metadata.json["refit"] records
    metadata: dict  # protonet: which head and why, for metadata.json["meta"]
    # After a refit: the first classifier's head_dense (kernel, bias), fitted without the validation files, for
    # the unknown-class detector's threshold on them (app/training.py::_held_out_head). None without a refit.
    held_out_head: tuple[np.ndarray, np.ndarray] | None = None


def _written_head(num_classes: int, seed: int, embeddings: np.ndarray, labels, kind: str) -> tuple:
    """A Dense softmax head whose weights are computed, not trained: prototypes or logistic regression."""
    return ClassificationHead.written(*FIT[kind](embeddings, np.asarray(labels), num_classes), seed=seed)


def _fit_head_fixed_epochs(config: TrainConfig, num_classes: int, embeddings: np.ndarray, labels,
                           epochs: int) -> tuple:
    """The head trained again from its initialisation for the chosen epochs on train + validation.

    A plain fit without checkpoints: on cached embeddings it takes seconds, and a run killed
    here resumes after the head phase (whose checkpoint holds the chosen epochs) and repeats it.
    """
    head = ClassificationHead(num_classes, config.dropout, seed=config.seed, hidden_units=0)
    head_model = head.features_model(embeddings.shape[-1])
    compile_spec, to_targets = head_training(config, num_classes)
    dataset = (tf.data.Dataset.from_tensor_slices((embeddings, np.asarray(labels, np.int32)))
               .shuffle(len(labels), seed=config.seed).batch(config.batch_size))
    if to_targets:
        dataset = dataset.map(to_targets)
    weights = class_weights(list(labels), num_classes) if config.class_weight == "auto" else None
    fit_fixed_epochs(head_model, compile_spec, dataset, epochs, weights)
    return head, head_model


def target_classifier(context: PhaseContext, config: TrainConfig, num_classes: int, train_embeddings: np.ndarray,
                      train_labels: list[int], val_embeddings: np.ndarray, val_labels: list[int],
                      epoch_offset: int, step_offset: int, head: str | None = None) -> TargetClassifier:
    """`head`: protonet's head when already chosen (by the source stage); None: chosen here."""
    phases, head_choice = [], {}
    if config.strategy == "protonet":
        kind = head
        if kind is None:
            kind, scores = choose_head(np.concatenate([train_embeddings, val_embeddings]),
                                       list(train_labels) + list(val_labels), num_classes,
                                       candidate_heads(config.target_head, num_classes), config.seed)
            if scores:
                logger.info("Target head: %s (%d-fold accuracy on train + validation files: %s)", kind, CV_FOLDS,
                            ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
            head_choice = {"target_head": {"chosen": kind, "cross_validated_accuracy": scores}}
        else:
            head_choice = {"target_head": {"chosen": kind, "chosen_with": "the source stage"}}
        head, head_model = _written_head(num_classes, config.seed, train_embeddings, train_labels, kind)
    else:
        head = ClassificationHead(num_classes, config.dropout, seed=config.seed, hidden_units=0)
        head_model = head.features_model(train_embeddings.shape[-1])
        result = train_head(context, head_model, train_embeddings, train_labels, val_embeddings, val_labels,
                            phase_number=2, epoch_offset=epoch_offset, step_offset=step_offset)
        phases.append(HEAD)
    val_probabilities = head_model.predict(val_embeddings, verbose=0) if len(val_labels) else \
        np.zeros((0, num_classes), np.float32)
    if config.refit == "no" or not len(val_labels):
        reason = "--refit no" if config.refit == "no" else "no validation files"
        logger.info("Classifier: %s of %d target training files (no refit: %s)",
                    kind if config.strategy == "protonet" else "head", len(train_labels), reason)
        return TargetClassifier(head, head_model, val_probabilities, phases, {"applied": False, "reason": reason},
                                head_choice)
    first_head = tuple(np.asarray(w, np.float64) for w in head.dense.get_weights())
    embeddings = np.concatenate([train_embeddings, val_embeddings])
    labels = list(train_labels) + list(val_labels)
    if config.strategy == "protonet":
        head, head_model = _written_head(num_classes, config.seed, embeddings, labels, kind)
        what = "prototypes" if kind == "prototypes" else "logistic regression head"
        extra = {}
    else:
        head, head_model = _fit_head_fixed_epochs(config, num_classes, embeddings, labels, result.best_epoch)
        what = f"head trained for the {result.best_epoch} epoch(s) early stopping chose"
        extra = {"epochs": {HEAD: result.best_epoch}}
    logger.info("Classifier: %s of %d target files (train + validation, the refit); validation metrics are the "
                "classifier's before the refit", what, len(labels))
    return TargetClassifier(head, head_model, val_probabilities, phases, {
        "applied": True, "reason": "meta strategies refit by default (--refit no keeps the first classifier)",
        "num_files": len(labels), **extra,
        "note": f"The final {'prototypes use' if what == 'prototypes' else 'head uses'} train + validation "
                "files; the validation metrics and the temperature are the first classifier's."}, head_choice,
                            first_head)
