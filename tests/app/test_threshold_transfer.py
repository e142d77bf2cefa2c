"""The unknown-class threshold carried over from a first model to one that trained on its validation files
(app/threshold_transfer.py)."""

import numpy as np
import pytest

from app.threshold_transfer import held_out_offsets, transferred_threshold
from app.unknown_scores import SCORES, UnknownScorer, detector_threshold
from app.unknown_selection import DEFAULT_SCORE, fit_unknown_detector

RECALL = 0.95


def softmax_head(centres, temperature=4.0):
    centres = np.asarray(centres)
    return 2 * centres.T / temperature, -(centres ** 2).sum(axis=1) / temperature


def draw(rng, centres, per_class, pull=0.0, spread=1.0):
    """Files of each class around its centre; `pull` > 0 moves them towards it, as training on them does to a
    model's embedding of its own training files (they look more typical than new files)."""
    x = np.concatenate([c + (1.0 - pull) * spread * rng.normal(size=(per_class, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per_class)


@pytest.fixture
def centres():
    return np.random.default_rng(0).normal(scale=4.0, size=(4, 8))


def test_an_offset_applied_to_the_first_models_own_training_scores_gives_back_its_threshold():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=1.5, size=(4, 8))  # classes that overlap: no softmax saturates
    train, train_labels = draw(rng, centres, 60, pull=0.3)
    val, _ = draw(rng, centres, 15)
    kernel, bias = softmax_head(centres)
    offsets = held_out_offsets(train, train_labels, val, kernel, bias, RECALL, seed=0)
    assert set(offsets) == set(SCORES)
    scorer = UnknownScorer.fit(train, train_labels, kernel, bias, 0)
    scorer.calibrate(train)  # both models standardise on their training split
    for name, offset in offsets.items():
        first_threshold = detector_threshold(scorer.score(name, val), RECALL)  # the first model's, as stored
        assert transferred_threshold(scorer.score(name, train), offset) == pytest.approx(first_threshold, abs=1e-9)


def test_the_offset_follows_a_shift_and_a_rescaling_of_the_scores():
    scores = np.random.default_rng(2).gamma(2.0, size=300)
    offset = (3.0 - np.median(scores)) / (np.quantile(scores, 0.75) - np.quantile(scores, 0.25))
    assert transferred_threshold(scores, offset) == pytest.approx(3.0)
    assert transferred_threshold(2.5 * scores - 7.0, offset) == pytest.approx(2.5 * 3.0 - 7.0)


def test_scores_without_spread_get_no_offset(centres):
    train = np.repeat(centres, 5, axis=0)  # every training file on its class centre: every distance is 0
    labels = np.repeat(np.arange(4), 5)
    offsets = held_out_offsets(train, labels, train + 0.1, *softmax_head(centres), RECALL)
    assert "mahalanobis" not in offsets and "centroid" not in offsets


def test_a_model_trained_on_its_validation_files_keeps_the_asked_share_of_new_known_files(centres):
    """The first model trained on its training split; the final one on train + validation. Set on the final
    model's validation files, which it trained on, the threshold rejects far more new known files than 5%;
    carried over from the first model, about 5%."""
    rng = np.random.default_rng(3)
    kernel, bias = softmax_head(centres)
    first_train, train_labels = draw(rng, centres, 150, pull=0.4)
    first_val, val_labels = draw(rng, centres, 40)
    offsets = held_out_offsets(first_train, train_labels, first_val, kernel, bias, RECALL, seed=0)
    final_train, _ = draw(rng, centres, 150, pull=0.4)
    final_val, _ = draw(rng, centres, 40, pull=0.4)  # trained on, like the training files
    new_known, _ = draw(rng, centres, 1000)
    rejected = {}
    for name, given in (("on validation", None), ("carried over", offsets)):
        scorer, detector = fit_unknown_detector(final_train, train_labels, final_val, val_labels, kernel, bias, RECALL,
                                                DEFAULT_SCORE, 0, given)
        rejected[name] = float(np.mean(scorer.score(DEFAULT_SCORE, new_known) > detector.threshold))
        assert ("threshold_offset" in detector.selection) == (given is not None)
    assert rejected["on validation"] > 0.2
    assert 0.02 <= rejected["carried over"] <= 0.10, rejected


def test_a_score_without_an_offset_keeps_the_validation_threshold(centres):
    rng = np.random.default_rng(4)
    train, train_labels = draw(rng, centres, 30)
    val, val_labels = draw(rng, centres, 10)
    kernel, bias = softmax_head(centres)
    plain = fit_unknown_detector(train, train_labels, val, val_labels, kernel, bias, RECALL, "centroid")[1]
    other = fit_unknown_detector(train, train_labels, val, val_labels, kernel, bias, RECALL, "centroid", 0,
                                 {"energy": 1.0})[1]
    assert other.threshold == plain.threshold and "threshold_offset" not in other.selection
