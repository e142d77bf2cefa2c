"""The logistic-regression baseline solves scikit-learn's problem exactly (the reference is scikit-learn itself)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from app.fewshot_baselines import logistic_regression_predict


def _episode(rng, ways, shots, queries, dims, spread):
    centers = rng.normal(scale=spread, size=(ways, dims))
    support_y, query_y = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
    # ReLU features like a backbone's pooled output: non-negative, far from the origin.
    support = np.maximum(centers[support_y] + rng.normal(size=(len(support_y), dims)), 0.0)
    query = np.maximum(centers[query_y] + rng.normal(size=(len(query_y), dims)), 0.0)
    return support, support_y, query, query_y


def _sklearn(support, support_y, query, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(max_iter=20000, tol=tol).fit(support, support_y).predict(query)


@pytest.mark.slow
@pytest.mark.parametrize("ways,shots,dims", [(5, 1, 64), (5, 5, 300), (20, 1, 300), (3, 4, 2)])
def test_matches_scikit_learn_fitted_to_convergence(ways, shots, dims):
    rng = np.random.default_rng(ways * 100 + shots)
    agree = []
    for _ in range(8):
        support, support_y, query, _ = _episode(rng, ways, shots, 6, dims, spread=0.3)
        agree.append(logistic_regression_predict(support, support_y, query, ways) ==
                     _sklearn(support, support_y, query, tol=1e-10))
    # The same strongly convex problem has one optimum: predictions agree except on exact near-ties.
    assert np.mean(np.concatenate(agree)) >= 0.99


@pytest.mark.slow
def test_mean_accuracy_matches_scikit_learn_defaults():
    """What evaluate.py reports: the mean query accuracy over episodes, within 0.1 point of scikit-learn's."""
    rng = np.random.default_rng(3)
    mine, reference = [], []
    for _ in range(30):
        support, support_y, query, query_y = _episode(rng, 5, 1, 15, 128, spread=0.5)
        mine.append(np.mean(logistic_regression_predict(support, support_y, query, 5) == query_y))
        reference.append(np.mean(_sklearn(support, support_y, query, tol=1e-4) == query_y))
    assert 0.3 < np.mean(reference) < 0.95  # neither trivial nor chance: the comparison means something
    assert abs(np.mean(mine) - np.mean(reference)) <= 0.001


def test_support_of_identical_points_and_missing_class_labels():
    support = np.ones((4, 10))
    predicted = logistic_regression_predict(support, np.array([0, 0, 1, 1]), np.ones((3, 10)), 2)
    assert predicted.shape == (3,) and set(predicted) <= {0, 1}
    # A label absent from the support cannot be predicted, and the output has one label per query.
    rng = np.random.default_rng(0)
    predicted = logistic_regression_predict(rng.normal(size=(4, 6)), np.array([0, 0, 2, 2]), rng.normal(size=(5, 6)), 3)
    assert predicted.shape == (5,) and 1 not in set(predicted)


def test_newton_and_trust_region_reach_the_same_optimum():
    from app.softmax_regression import _Problem, support_basis

    rng = np.random.default_rng(5)
    support, support_y, query, _ = _episode(rng, 6, 3, 4, 50, spread=0.4)
    basis = support_basis(support)
    problem = _Problem(support @ basis, support_y, 6, 1.0)
    newton, trust = problem.newton(), problem.trust_region()
    assert problem.value(newton) == pytest.approx(problem.value(trust), rel=1e-7)
    assert np.max(np.abs(problem.gradient(newton))) < 1e-6
    np.testing.assert_allclose(query @ basis @ newton[:-1] + newton[-1], query @ basis @ trust[:-1] + trust[-1],
                               atol=1e-4)
