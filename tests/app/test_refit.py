"""When a run refits (app/refit.py), which epochs it repeats, and what it keeps of the first model."""

import json

import numpy as np
import pytest

from app.config import REFIT_AUTO_BELOW_PER_CLASS, TrainConfig
from app.errors import UserError
from app.refit import (best_epoch, decide_refit, held_out_head_from_state, held_out_head_state, refit_epochs,
                       refit_keeps_embedding)


def _config(**overrides) -> TrainConfig:
    return TrainConfig(data_dir="unused", **overrides).validate()


def test_auto_refits_small_training_splits_whose_validation_was_carved_out():
    below = REFIT_AUTO_BELOW_PER_CLASS * 5 - 1
    decision = decide_refit(_config(strategy="finetune"), val_from_folder=False, num_train=below, num_classes=5)
    assert decision.applies and "auto" in decision.reason and f"{below / 5:.1f} training files per class" in decision.reason
    assert decide_refit(_config(), False, REFIT_AUTO_BELOW_PER_CLASS * 5, 5).applies is False


def test_auto_leaves_a_users_val_folder_alone():
    decision = decide_refit(_config(), val_from_folder=True, num_train=10, num_classes=5)
    assert not decision.applies and "val/ folder" in decision.reason


def test_yes_and_no_override_auto():
    assert decide_refit(_config(refit="yes"), val_from_folder=True, num_train=10_000, num_classes=2).applies
    assert not decide_refit(_config(refit="no"), val_from_folder=False, num_train=10, num_classes=5).applies


def test_meta_strategies_never_refit_and_reject_refit_yes():
    assert not decide_refit(_config(strategy="protonet"), False, 10, 5).applies
    with pytest.raises(UserError, match=r"refit must be auto or no with a meta strategy.*Received: refit='yes'"):
        _config(strategy="protonet", refit="yes")
    with pytest.raises(UserError, match=r"refit must be one of \['auto', 'yes', 'no'\]. Received: refit='maybe'"):
        _config(refit="maybe")


def _epoch(phase: str, phase_epoch: int, val_loss: float) -> dict:
    return {"phase": phase, "phase_epoch": phase_epoch, "val_loss": val_loss}


def test_the_refit_repeats_the_epochs_early_stopping_kept():
    """Keras' EarlyStopping keeps the first epoch with the lowest validation loss (strict improvements)."""
    history = [_epoch("head", 1, 1.0), _epoch("head", 2, 0.5), _epoch("head", 3, 0.5), _epoch("head", 4, 0.7),
               _epoch("finetune", 1, 0.6), _epoch("finetune", 2, 0.4), _epoch("finetune", 3, 0.45)]
    assert best_epoch(history, "head") == 2
    assert refit_epochs(history, "finetune") == {"head": 2, "finetune": 2}
    assert refit_epochs(history, "linear") == {"head": 2}
    with pytest.raises(ValueError, match="No epochs of phase 'finetune'"):
        best_epoch(history[:4], "finetune")


def test_the_first_heads_weights_survive_a_resumed_refit_exactly():
    """A refit resumed after its first model is gone still scores unknown classes with that model's head:
    kept in the checkpoints' `selection` (JSON), bit for bit; a checkpoint from before it was kept has none."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    selection = json.loads(json.dumps({"held_out_head": held_out_head_state(kernel, bias)}))
    restored_kernel, restored_bias = held_out_head_from_state(selection)
    assert np.array_equal(restored_kernel, kernel) and np.array_equal(restored_bias, bias)
    assert held_out_head_from_state({"phases": ["head"]}) is None


def test_only_a_refit_of_the_last_layer_keeps_the_embedding_the_first_head_reads():
    assert refit_keeps_embedding(_config())  # linear: the frozen backbone's features
    assert not refit_keeps_embedding(_config(hidden_units=8))  # the hidden layer is refitted too
    assert not refit_keeps_embedding(_config(strategy="finetune"))  # so is the backbone
