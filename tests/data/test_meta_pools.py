"""Meta-validation pools and fitted episode shapes: class-disjoint whenever the classes allow it."""

import numpy as np
import pytest

from data.episodes import EpisodeSampler
from data.meta_pools import (EpisodeShape, fit_training_queries, hold_out_classes, holdout_examples,
                             validation_shape)


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_classic_layout_queries_shrink_to_what_the_classes_hold():
    # Omniglot-shaped: 20 files a class minus 4 validation and 4 test = 12 training files a class.
    labels = _labels([12] * 50)
    queries = fit_training_queries(labels, ways=5, shots=5, queries=10)
    assert queries == 7
    EpisodeSampler(labels, 5, 5, queries).episode(0)  # every class can be drawn


def test_queries_are_kept_when_the_classes_hold_enough_and_a_few_small_classes_do_not_shrink_them():
    assert fit_training_queries(_labels([40] * 10), ways=5, shots=5, queries=10) == 10
    # 2 tiny classes among 30 are left out of the fit (below the 10th percentile), not shrinking everyone.
    counts = [30] * 28 + [7, 7]
    assert fit_training_queries(_labels(counts), ways=5, shots=5, queries=10) == 10


def test_unsampleable_pools_keep_the_asked_queries_so_the_sampler_refuses():
    labels = _labels([3] * 10)
    assert fit_training_queries(labels, ways=5, shots=5, queries=10) == 10
    with pytest.raises(Exception, match="5-way episode needs 5 classes"):
        EpisodeSampler(labels, 5, 5, 10)


def test_validation_shape_uses_fewer_ways_and_shots_when_the_pool_is_small():
    assert validation_shape(_labels([20] * 8), 5, 5, 10) == EpisodeShape(5, 5, 10)
    assert validation_shape(_labels([20] * 4), 5, 5, 10) == EpisodeShape(4, 5, 10)
    assert validation_shape(_labels([4] * 6), 5, 5, 10) == EpisodeShape(5, 3, 1)
    assert validation_shape(_labels([9, 1]), 5, 5, 10) is None
    for shape, labels in [(validation_shape(_labels([4] * 6), 5, 5, 10), _labels([4] * 6)),
                          (validation_shape(_labels([20] * 4), 5, 5, 10), _labels([20] * 4))]:
        EpisodeSampler(labels, shape.ways, shape.shots, shape.queries).episode(0)


@pytest.mark.parametrize("n", [10, 20, 100, 1000])
def test_enough_classes_hold_out_at_least_ways_classes_disjoint(n):
    names = [f"c{i:04d}" for i in range(n)]
    holdout = hold_out_classes(names, ways=5, seed=3)
    assert holdout.kind == "class-disjoint"
    assert set(holdout.meta_train).isdisjoint(holdout.meta_val)
    assert set(holdout.meta_train) | set(holdout.meta_val) == set(names)
    assert len(holdout.meta_val) >= 5 and len(holdout.meta_train) >= 5
    assert len(holdout.meta_val) == max(5, round(0.2 * n)) or len(holdout.meta_train) == 5
    assert hold_out_classes(list(reversed(names)), ways=5, seed=3) == holdout  # order-free, seeded


def test_few_classes_validate_with_fewer_ways_and_too_few_fall_back_to_held_out_examples():
    holdout = hold_out_classes([f"c{i}" for i in range(8)], ways=5, seed=0)
    assert holdout.kind == "class-disjoint" and len(holdout.meta_val) == 2 and len(holdout.meta_train) == 6
    assert "2-way" in holdout.note
    fallback = hold_out_classes([f"c{i}" for i in range(6)], ways=5, seed=0)
    assert fallback.kind == "examples" and fallback.meta_val == [] and "not class-disjoint" in fallback.note


def test_held_out_examples_leave_every_class_training_files():
    labels = _labels([10, 3, 2, 1])
    held = holdout_examples(labels, seed=0)
    per_class = [int(held[labels == c].sum()) for c in range(4)]
    assert per_class == [2, 1, 0, 0]
    assert all((~held[labels == c]).sum() >= 1 for c in range(4))
    np.testing.assert_array_equal(held, holdout_examples(labels, seed=0))
