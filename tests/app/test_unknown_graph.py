"""The exported unknown-class score (app/unknown_graph.py) against the numpy detector it mirrors."""

from __future__ import annotations

import numpy as np
import pytest

from app.unknown_graph import UnknownServing
from app.unknown_scores import SCORES, UnknownScorer
from app.unknown_selection import UnknownDetector


@pytest.fixture(scope="module")
def scorer() -> UnknownScorer:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    embeddings = rng.normal(size=(60, 12)) + 3 * np.eye(12)[labels]
    kernel, bias = rng.normal(size=(12, 3)), rng.normal(size=3)
    fitted = UnknownScorer.fit(embeddings, labels, kernel, bias)
    fitted.calibrate(rng.normal(size=(15, 12)) + 3 * np.eye(12)[np.repeat(np.arange(3), 5)])
    return fitted


@pytest.mark.parametrize("name", SCORES)
def test_every_score_in_the_graph_matches_numpy_and_gives_the_same_verdicts(scorer, name):
    rng = np.random.default_rng(1)
    queries = np.concatenate([rng.normal(size=(20, 12)) + 3 * np.eye(12)[rng.integers(0, 3, 20)],
                              rng.normal(size=(20, 12)) * 4])  # known-like, then far from every class
    expected = scorer.score(name, queries)
    threshold = float(np.median(expected))  # half of the files on each side: every verdict is exercised
    score, unknown = UnknownServing(scorer, UnknownDetector(name, threshold, 0.95, "test")).score_function()(
        queries.astype(np.float32))
    # float32 embeddings in, float64 arithmetic: the numpy score of the same float32 values, to rounding.
    reference = scorer.score(name, queries.astype(np.float32))
    np.testing.assert_allclose(score.numpy(), reference, rtol=1e-5, atol=1e-5)
    assert np.array_equal(unknown.numpy(), reference > threshold)
    assert unknown.numpy().any() and not unknown.numpy().all()


def test_a_file_on_the_threshold_is_no_disagreement_but_a_flipped_verdict_is():
    from app.parity import compare_unknown

    reference = np.array([1.0, 2.0, 3.0, 4.0])
    on_threshold = compare_unknown("s", "centroid", 2.0, reference, reference + np.array([0, 1e-7, 0, 0]), list("abcd"))
    assert on_threshold.passed and on_threshold.verdict_agreement == 1.0
    flipped = compare_unknown("s", "centroid", 2.0, reference, np.array([1.0, 2.0, 1.5, 4.0]), list("abcd"))
    assert not flipped.passed and flipped.disagreements == ["c"]
