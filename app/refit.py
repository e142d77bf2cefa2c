"""The refit (`--refit`): once early stopping has chosen how many epochs each phase of a
`linear` or `finetune` run trains, train again from the start on train + validation for
those epochs, and keep that model.

Why: early stopping needs a validation split, and with few files per class that split is a
large share of the labelled data (at the default 20%, 2 of every 8 files). Measured on
Reuters R8 with 8 texts per class (seed 0): `finetune` trained on all 8 scored 0.892 on 204
test texts, against 0.838 for the same recipe trained on 6 with 2 held out (BENCHMARKS.md,
row 6, has the full comparison). The refit repeats the first run exactly (same seed, head
initialisation, learning-rate schedule, augmentation), only with more files and without the
validation that would stop it.

What the run reports: the validation metrics and the calibration temperature come from the
first model (after the refit the validation files are training files, so no held-out
validation number exists for the final model); metadata.json says so. The test split is
never touched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import keras
import numpy as np

from app.config import REFIT_AUTO_BELOW_PER_CLASS, TRANSFER_STRATEGIES, TrainConfig
from app.phases import FINETUNE, HEAD, PhaseContext, finetune_backbone, finetune_inputs, train_head
from app.text_phase2 import text_phase2_cut
from models.heads import ClassificationHead
from models.task_model import build_task_model

logger = logging.getLogger(__name__)
REFIT_HEAD, REFIT_FINETUNE = "refit_head", "refit_finetune"
REFIT_PHASES = (REFIT_HEAD, REFIT_FINETUNE)


@dataclass(frozen=True)
class RefitDecision:
    applies: bool
    reason: str


def decide_refit(config: TrainConfig, val_from_folder: bool, num_train: int, num_classes: int) -> RefitDecision:
    """Whether this run refits, and why (the reason goes into the log and metadata.json)."""
    if config.strategy not in TRANSFER_STRATEGIES:
        return RefitDecision(False, f"the {config.strategy} strategy does not refit")
    if config.refit != "auto":
        return RefitDecision(config.refit == "yes", f"--refit {config.refit}")
    if val_from_folder:
        return RefitDecision(False, "auto: the validation files come from a val/ folder")
    per_class = num_train / num_classes
    if per_class >= REFIT_AUTO_BELOW_PER_CLASS:
        return RefitDecision(False, f"auto: {per_class:.1f} training files per class "
                                    f"(auto refits below {REFIT_AUTO_BELOW_PER_CLASS})")
    return RefitDecision(True, f"auto: {per_class:.1f} training files per class, the validation split carved out "
                               f"of them (auto refits below {REFIT_AUTO_BELOW_PER_CLASS})")


def refit_keeps_embedding(config: TrainConfig) -> bool:
    """Whether the refit leaves the model's embedding (the input of `head_dense`) as the first model had it,
    retraining only `head_dense`: `linear` without a hidden layer, whose embedding is the frozen backbone's
    features. Then the first model's head can still score the final model's files for the unknown-class
    detector (`held_out_head`). `finetune` retrains the backbone and `--hidden-units` the hidden layer."""
    return config.strategy == "linear" and not config.hidden_units


def held_out_head_state(kernel: np.ndarray, bias: np.ndarray) -> dict:
    """The first model's head_dense weights as the refit's `selection` keeps them (JSON, exact: float32 values
    written as floats), so a refit resumed after its first model is gone still has them."""
    return {"kernel": np.asarray(kernel, np.float64).tolist(), "bias": np.asarray(bias, np.float64).tolist()}


def held_out_head_from_state(selection: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """`held_out_head_state`'s arrays back; None from a checkpoint written before it was kept."""
    stored = selection.get("held_out_head")
    if not stored:
        return None
    return np.asarray(stored["kernel"], np.float64), np.asarray(stored["bias"], np.float64)


def best_epoch(history: list[dict], phase: str) -> int:
    """The phase's epoch whose weights early stopping kept: the first lowest validation loss
    (Keras' EarlyStopping counts only strict improvements and restores the best weights)."""
    entries = [e for e in history if e["phase"] == phase]
    if not entries:
        raise ValueError(f"No epochs of phase {phase!r} in the history: nothing to refit.")
    losses = [e.get("val_loss", math.inf) for e in entries]
    return entries[losses.index(min(losses))]["phase_epoch"]


def refit_epochs(history: list[dict], strategy: str) -> dict[str, int]:
    phases = [HEAD, FINETUNE] if strategy == "finetune" else [HEAD]
    return {phase: best_epoch(history, phase) for phase in phases}


def refit_transfer(context: PhaseContext, scan, backbone, feature_extractor: keras.Model, pristine_backbone,
                   examples, features: np.ndarray, selection: dict) -> keras.Model:
    """Train the run's recipe again on `examples` (train + validation) for the selected epochs.

    `pristine_backbone`: the backbone's weights before any fine-tuning (finetune only).
    `selection`: what the first model left (its epochs per phase, validation metrics); it goes
    into every refit checkpoint, because a resumed refit has no first model to ask.
    Returns the task model to save.
    """
    config = context.config
    epochs = selection["epochs"]
    labels = [e.label for e in examples]
    head = ClassificationHead(len(scan.class_names), config.dropout, seed=config.seed, hidden_units=config.hidden_units)
    head_model = head.features_model(features.shape[-1])
    if context.resumed_phase in REFIT_PHASES:  # where the interrupted refit phase started
        offset, steps = context.resume.state.epoch_offset, context.resume.state.step_offset
    else:  # after the first run's epochs and optimizer steps
        offset, steps = len(context.history), selection["steps"]
    logger.info("Refit on train + validation (%d files): %s", len(examples),
                ", ".join(f"{phase} {count} epoch(s)" for phase, count in epochs.items()))
    if context.resume_of(REFIT_FINETUNE) is None:
        result = train_head(context, head_model, features, labels, None, None, phase_number=3, epoch_offset=offset,
                            step_offset=steps, phase=REFIT_HEAD, max_epochs=epochs[HEAD], selection=selection)
        offset, steps = offset + result.epochs, steps + result.epochs * result.steps_per_epoch
    if pristine_backbone is not None:
        feature_extractor.set_weights(pristine_backbone)  # the first run's phase 2 changed them
    task_model = build_task_model(feature_extractor, head)
    if FINETUNE not in epochs:
        return task_model
    text_cut = text_phase2_cut(config, backbone.spec, feature_extractor, scan.modality, len(examples))
    inputs = finetune_inputs(config, scan.modality, backbone.size, examples, [], len(scan.class_names), text_cut)
    finetune_backbone(context, backbone.spec, feature_extractor, task_model, head.layers, inputs,
                      epoch_offset=offset, step_offset=steps, phase=REFIT_FINETUNE, phase_number=4,
                      max_epochs=epochs[FINETUNE], selection=selection)
    return task_model

