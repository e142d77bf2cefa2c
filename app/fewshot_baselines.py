"""Few-shot learners that work on arrays, one episode at a time, and the protocol's interval.

Every learner has the same signature, `predict(support, support_labels, query, ways)
-> predicted query labels`, so the evaluation loop runs the run's learner and the
baselines on exactly the same episodes.
"""

from __future__ import annotations

import numpy as np

from app.softmax_regression import fit_predict

CI_Z = 1.96  # two-sided 95% normal quantile


def mean_and_ci95(accuracies) -> tuple[float, float]:
    """(mean, half-width of the 95% interval) of per-episode accuracies: 1.96 * std / sqrt(episodes).

    The standard few-shot protocol (population std, ddof=0, as most published code
    computes it; with hundreds of episodes ddof hardly matters). One episode: width 0.
    """
    values = np.asarray(accuracies, dtype=np.float64).reshape(-1)
    if not values.size:
        raise ValueError("No episode accuracies to summarise. Received: an empty list")
    return float(np.mean(values, axis=0)), float(CI_Z * np.std(values, axis=0) / np.sqrt(values.size))


def _flat(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def nearest_centroid_predict(support, support_labels, query, ways: int) -> np.ndarray:
    """Label of the nearest class mean (squared Euclidean), as ProtoNet classifies."""
    support, query = _flat(support), _flat(query)
    labels = np.asarray(support_labels).astype(np.int64).reshape(-1)
    one_hot = np.eye(ways)[labels]  # [S, ways]
    counts = np.maximum(one_hot.sum(axis=0), 1.0)
    prototypes = (one_hot.T @ support) / counts[:, None]  # [ways, D]
    distances = np.sum(np.square(query[:, None, :] - prototypes[None, :, :]), axis=-1)
    return np.argmin(distances, axis=1)


def logistic_regression_predict(support, support_labels, query, ways: int, c: float = 1.0) -> np.ndarray:
    """Multinomial logistic regression fitted on the support only: scikit-learn's model (C=1, L2 on the weights,
    unpenalised intercept) solved to its exact optimum (app/softmax_regression.py says how and why)."""
    return fit_predict(_flat(support), support_labels, _flat(query), ways, c)


BASELINES = {
    "nearest_centroid": nearest_centroid_predict,
    "logistic_regression": logistic_regression_predict,
}
