"""The stored unknown-class threshold: split conformal's quantile, and a detector that rejects nothing when the
validation files are too few to keep --reject-recall of known files (app/unknown_scores.detector_threshold)."""

import json
import logging
import math

import numpy as np
import pytest

from app.parity import borderline
from app.unknown_scores import detector_threshold, fewest_files_for_recall
from app.unknown_selection import fit_unknown_detector
from app.unknown_store import load_detector, save_detector


@pytest.mark.parametrize("recall, fewest", [(0.95, 19), (0.9, 9), (0.8, 4), (0.5, 1), (0.99, 99), (0.999, 999)])
def test_the_fewest_files_are_where_the_conformal_rank_first_fits(recall, fewest):
    assert fewest_files_for_recall(recall) == fewest
    assert math.isfinite(detector_threshold(np.arange(float(fewest)), recall))
    assert math.isinf(detector_threshold(np.arange(float(fewest - 1)), recall))


@pytest.mark.parametrize("n", [19, 20, 37, 100, 333])
@pytest.mark.parametrize("recall", [0.9, 0.95])
def test_a_new_known_score_is_accepted_at_least_recall_of_the_time(n, recall):
    """Exchangeability: a new score is equally likely to fall in any of the n + 1 gaps around the n sorted
    scores, so it is accepted (at or below the threshold) with probability rank / (n + 1) >= recall."""
    threshold = detector_threshold(np.random.default_rng(n).permutation(np.arange(float(n))), recall)
    rank = int(threshold) + 1  # the scores are 0 .. n-1: the threshold is the rank-th smallest
    assert rank / (n + 1) >= recall
    assert (rank - 1) / (n + 1) < recall  # and the smallest such rank: no more is rejected than needed


def world(rng, val_per_class):
    centres = rng.normal(scale=3.0, size=(3, 8))
    train = np.concatenate([c + 0.3 * rng.normal(size=(30, 8)) for c in centres])
    val = np.concatenate([c + 0.3 * rng.normal(size=(val_per_class, 8)) for c in centres])
    head = (2 * centres.T / 4.0, -(centres ** 2).sum(axis=1) / 4.0)
    return train, np.repeat(np.arange(3), 30), val, np.repeat(np.arange(3), val_per_class), head


def test_too_few_validation_files_reject_nothing_with_a_warning_and_round_trip_as_null(tmp_path, caplog):
    train, train_labels, val, val_labels, head = world(np.random.default_rng(0), val_per_class=2)
    with caplog.at_level(logging.WARNING, logger="app.unknown_selection"):
        scorer, detector = fit_unknown_detector(train, train_labels, val, val_labels, *head, 0.95)
    assert math.isinf(detector.threshold)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "rejects nothing" in warning and "6 known validation file(s)" in warning and "at least 19" in warning
    assert "--reject-recall 0.857 or lower" in warning  # 6 files keep at most 6/7 of new known files
    save_detector(tmp_path, scorer, detector)
    assert json.loads((tmp_path / "unknown.json").read_text())["threshold"] is None  # strict JSON: no Infinity
    _, loaded = load_detector(tmp_path)
    assert math.isinf(loaded.threshold)
    assert not (scorer.score(loaded.score, val * 50) > loaded.threshold).any()  # even far-away inputs pass
    assert not borderline(np.array([1e300, -1e300, 0.0]), loaded.threshold).any()


def test_the_recall_the_warning_offers_sets_a_threshold(caplog):
    train, train_labels, val, val_labels, head = world(np.random.default_rng(1), val_per_class=2)
    _, detector = fit_unknown_detector(train, train_labels, val, val_labels, *head, 0.857)
    assert math.isfinite(detector.threshold)
    with caplog.at_level(logging.WARNING, logger="app.unknown_selection"):
        _, enough = fit_unknown_detector(train, train_labels, *world(np.random.default_rng(1), 7)[2:4], *head, 0.95)
    assert math.isfinite(enough.threshold) and "rejects nothing" not in caplog.text  # 21 files keep 95%
