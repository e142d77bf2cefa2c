"""The target stage's fine-tuning of a protonet run: the backbone's top blocks + a prototype-initialised head
trained on the target (the "F" of P>M>F in train.py, issue 18 item 3).

Why: on text, a classifier written over frozen MiniLM features (prototypes or logistic
regression over the source stage's embedding) stays below `finetune`, which trains MiniLM's top
blocks on the target (BENCHMARKS.md, text vs SetFit: Reuters R8 at 8 texts per class, `finetune`
87.9% against `protonet` 79.0%). A `--meta-data` run must never leave the target worse than no
source at all, so on text its target stage does what `finetune` does, starting from what the
source stage learnt:

1. a logistic-regression head (`starting_head`: prototypes only when asked for or above 100
   classes) is written from the target's TRAINING split only, over the chosen embedding;
   prototypes are scaled so that their mean logit gap is LOGIT_GAP (raw squared distances
   saturate the softmax: no gradient);
2. the backbone's top `--unfreeze` blocks (finetune's recipe: BatchNorm frozen, discriminative
   learning rates, warm-up + cosine), the embedding and that head train on the training split,
   early-stopped on the validation split (`target_finetune`, a phase like every other:
   checkpointed, in TensorBoard and history.json);
3. the refit, as `finetune` does (app/refit.py): the backbone and embedding go back to where the
   source stage left them, the head is written from train + validation files, and the same
   schedule runs again on train + validation for the epochs early stopping chose
   (`refit_target_finetune`). The run's validation metrics are step 2's model's. The test split
   is never touched.

`--target-finetune auto` does this for text runs with `--meta-data` (the case measured);
image runs keep the written classifier (their measured results, BENCHMARKS.md "meta-transfer",
came without it); `yes` / `no` force it either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np

from app.config import TrainConfig
from app.errors import UserError
from app.features import extract_features
from app.open_set import head_weights
from app.phases import PhaseContext, finetune_backbone, finetune_inputs, uses_pair_loss
from app.target_heads import FIT, candidate_heads
from app.text_phase2 import text_phase2_cut
from app.threshold_transfer import held_out_offsets
from models.heads import ClassificationHead
from models.meta import scaled_prototype_head
from models.task_model import build_task_model

logger = logging.getLogger(__name__)
TARGET_FINETUNE, REFIT_TARGET_FINETUNE = "target_finetune", "refit_target_finetune"
TARGET_FINETUNE_PHASES = (TARGET_FINETUNE, REFIT_TARGET_FINETUNE)


def target_finetune_applies(config: TrainConfig, modality: str, mode: str) -> tuple[bool, str]:
    """(whether the target stage fine-tunes the backbone, why), refusing `yes` where it cannot."""
    possible = config.strategy == "protonet" and mode == "features"
    if config.target_finetune == "yes" and not possible:
        raise UserError("--target-finetune yes needs --strategy protonet on the features input (--meta-input "
                        f"features). Received: --strategy {config.strategy}, input {mode}. Use --target-finetune "
                        "auto or no.")
    if config.target_finetune != "auto":
        return config.target_finetune == "yes", f"--target-finetune {config.target_finetune}"
    if possible and modality == "text" and config.meta_data:
        return True, "auto: a text run with --meta-data"
    return False, "auto: only text runs with --meta-data fine-tune the backbone in the target stage"


def starting_head(config: TrainConfig, num_classes: int) -> str:
    """The head fine-tuning starts from: logistic regression unless `--target-head prototypes` asked otherwise.

    Why not the head `--target-head auto` chose for the frozen embedding: that choice scores a
    classifier that stays frozen, and on the text bench (BENCHMARKS.md, Reuters R8 at 8 texts per
    class, 4 seeds) the three runs that started from the logistic-regression head ended 0.5 to 1.8
    points above `finetune`, the one that started from the scaled prototypes (auto's pick there)
    2.7 points below it. Logistic regression is a calibrated softmax head, what `finetune`'s second
    phase starts from too (its first phase trains a Dense softmax head); scaled prototypes need a
    temperature guessed from the training split. The frozen head's choice stays in metadata.json
    (`meta.target_head`); this one is `meta.target_finetune.head`.
    """
    if config.target_head == "prototypes" or "logistic_regression" not in candidate_heads("auto", num_classes):
        return "prototypes"  # asked for, or too many classes for logistic regression (app/target_heads.py)
    return "logistic_regression"


def written_starting_head(num_classes: int, seed: int, embeddings: np.ndarray, labels, kind: str
                          ) -> ClassificationHead:
    """The source stage's classifier written from `embeddings`, as the starting head of fine-tuning:
    prototypes scaled to a mean logit gap of LOGIT_GAP (`models.meta.scaled_prototype_head`: the
    ranking is the same, and the softmax is not one-hot in float32, so the loss has gradients), or
    logistic regression (calibrated already)."""
    labels = np.asarray(labels, np.int64)
    if kind == "prototypes":
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in scaled_prototype_head(embeddings, labels, num_classes))
    else:
        kernel, bias = FIT[kind](embeddings, labels, num_classes)
    return ClassificationHead.written(kernel, bias, seed=seed)[0]


@dataclass
class TargetFinetuned:
    head: ClassificationHead  # the final head (after the refit when it applies)
    head_model: keras.Model  # that head on embeddings
    embedding: keras.Model
    val_probabilities: np.ndarray  # the first fine-tuned model's, on the validation files
    features: tuple[np.ndarray, np.ndarray]  # the fine-tuned backbone's features of train and validation files
    embeddings: tuple[np.ndarray, np.ndarray]  # ... and their embeddings
    phases: list[str]
    refit: dict
    metadata: dict  # metadata.json["meta"]["target_finetune"]
    # After the refit: the first fine-tuned model's unknown-class thresholds, for the final model's
    # (app/threshold_transfer.py). None without a refit, or resumed from a checkpoint written before they were kept.
    threshold_offsets: dict[str, float] | None = None


def finetune_on_target(context: PhaseContext, config: TrainConfig, backbone, feature_extractor: keras.Model,
                       embedding: keras.Model, kind: str, train_examples, val_examples, train_embeddings: np.ndarray,
                       val_embeddings: np.ndarray, modality: str, epoch_offset: int, step_offset: int,
                       reason: str) -> TargetFinetuned:
    """Steps 1-3 of the module docstring. `kind`: the head the source stage chose for the embedding."""
    num_classes = len(context.class_names)
    train_labels, val_labels = [e.label for e in train_examples], [e.label for e in val_examples]
    start = (feature_extractor.get_weights(), embedding.get_weights())
    head = written_starting_head(num_classes, config.seed, train_embeddings, train_labels, kind)
    task_model = build_task_model(feature_extractor, head, embedding)
    text_cut = text_phase2_cut(config, backbone.spec, feature_extractor, modality,
                               len(train_examples) + len(val_examples))
    inputs = finetune_inputs(config, modality, backbone.size, train_examples, val_examples, num_classes, text_cut)
    logger.info("Target stage: the backbone's top %s block(s), the embedding and the %s head fine-tuned on the "
                "target (%s)", config.unfreeze, kind, reason)
    selection = {"meta_epochs": epoch_offset, "meta_steps": step_offset}
    if context.resumed_phase == REFIT_TARGET_FINETUNE:  # the first fine-tuning finished before the interruption
        selection = context.resume.state.selection
        best_epoch, epochs, steps_per_epoch = selection["best_epoch"], selection["epochs"], selection["steps_per_epoch"]
        val_probabilities = np.asarray(selection["val_probabilities"], np.float32).reshape(-1, num_classes)
    else:
        first = finetune_backbone(context, backbone.spec, feature_extractor, task_model, head.layers, inputs,
                                  epoch_offset, step_offset, phase=TARGET_FINETUNE, phase_number=2,
                                  selection=selection)
        best_epoch, epochs, steps_per_epoch = first.best_epoch, first.epochs, first.steps_per_epoch
        # The model fit() trained (over the cached hidden states on text): no second copy to build and trace.
        val_probabilities = (first.model.predict(inputs.confusion, verbose=0)
                             if inputs.val is not None else np.zeros((0, num_classes), np.float32))
        # What a resume in the refit needs of the first model (its checkpoints are gone by then).
        selection = {**selection, "best_epoch": best_epoch, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                     "val_probabilities": np.asarray(val_probabilities, np.float64).round(6).tolist()}
        if config.refit != "no" and val_examples:  # the refit retrains the embedding: app/threshold_transfer.py
            selection["threshold_offsets"] = _first_model_offsets(config, backbone.size, modality, feature_extractor,
                                                                  embedding, task_model, train_examples, val_examples)
    phases = [TARGET_FINETUNE]
    refit = {"applied": False, "reason": "--refit no" if config.refit == "no" else "no validation files"}
    if config.refit != "no" and val_examples:
        feature_extractor.set_weights(start[0])
        embedding.set_weights(start[1])
        everything = list(train_examples) + list(val_examples)
        head = written_starting_head(num_classes, config.seed, np.concatenate([train_embeddings, val_embeddings]),
                                     train_labels + val_labels, kind)
        task_model = build_task_model(feature_extractor, head, embedding)
        refit_inputs = finetune_inputs(config, modality, backbone.size, everything, [], num_classes, text_cut)
        logger.info("Refit of the target stage: %d epoch(s) on %d train + validation files", best_epoch,
                    len(everything))
        finetune_backbone(context, backbone.spec, feature_extractor, task_model, head.layers, refit_inputs,
                          epoch_offset + epochs, step_offset + epochs * steps_per_epoch,
                          phase=REFIT_TARGET_FINETUNE, phase_number=3, max_epochs=best_epoch, selection=selection)
        phases.append(REFIT_TARGET_FINETUNE)
        refit = {"applied": True, "reason": "meta strategies refit by default (--refit no keeps the first model)",
                 "num_files": len(everything), "epochs": {TARGET_FINETUNE: best_epoch},
                 "note": "The backbone, embedding and head were fine-tuned again on train + validation for the "
                         "epochs early stopping chose; the validation metrics and the temperature are the first "
                         "model's."}
    feature_extractor.trainable = False
    features, embeddings = _features_and_embeddings(config, backbone.size, modality, feature_extractor, embedding,
                                                    train_examples, val_examples)
    return TargetFinetuned(head, head.features_model(embeddings[0].shape[-1]), embedding, val_probabilities,
                           features, embeddings, phases, refit,
                           {"applied": True, "reason": reason, "head": kind, "epochs": best_epoch,
                            "epochs_run": epochs, "unfreeze": config.unfreeze,
                            "learning_rate": config.finetune_learning_rate,
                            "pair_loss": config.pair_loss if uses_pair_loss(config, modality) else 0.0},
                           selection.get("threshold_offsets") if refit["applied"] else None)


def _features_and_embeddings(config: TrainConfig, size: int, modality: str, feature_extractor: keras.Model,
                             embedding: keras.Model, train_examples, val_examples) -> tuple[tuple, tuple]:
    """The backbone's features and the embedding of the training and the validation files, as the model stands."""
    features = tuple(extract_features(feature_extractor, examples, modality, size, config.batch_size, config.resize)
                     for examples in (train_examples, val_examples))
    return features, tuple(embedding.predict(f, verbose=0, batch_size=256) for f in features)


def _first_model_offsets(config: TrainConfig, size: int, modality: str, feature_extractor: keras.Model,
                         embedding: keras.Model, task_model: keras.Model, train_examples, val_examples) -> dict:
    """The first fine-tuned model's unknown-class thresholds as offsets (app/threshold_transfer.py), before the
    refit puts the source stage's weights back."""
    _, (train_embeddings, val_embeddings) = _features_and_embeddings(config, size, modality, feature_extractor,
                                                                     embedding, train_examples, val_examples)
    return held_out_offsets(train_embeddings, [e.label for e in train_examples], val_embeddings,
                            *head_weights(task_model), config.reject_recall, config.seed)
