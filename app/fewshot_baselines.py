"""Few-shot learners that work on arrays, one episode at a time, and the protocol's interval.

Every learner has the same signature, `predict(support, support_labels, query, ways)
-> predicted query labels`, so the evaluation loop runs the run's learner and the
baselines on exactly the same episodes.
"""

from __future__ import annotations

import numpy as np

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


def _support_basis(support: np.ndarray) -> np.ndarray:
    """Orthonormal basis [D, r] of the span of the support rows (r <= number of support examples)."""
    _, singular, vt = np.linalg.svd(support, full_matrices=False)
    keep = singular > singular[0] * 1e-10 if singular.size and singular[0] > 0 else np.zeros(len(singular), bool)
    return vt[keep].T


def logistic_regression_predict(support, support_labels, query, ways: int, c: float = 1.0) -> np.ndarray:
    """Multinomial logistic regression fitted on the support only: scikit-learn's model (C=1, L2 on the weights,
    unpenalised intercept), solved to its exact optimum.

    Why not scikit-learn itself: its lbfgs fit on 1280-d features took about 0.6 s per 20-way episode (most of a
    600-episode evaluation), and at its default tolerance it stops before the optimum (on hard episodes refitting
    with a tight tolerance changed up to a quarter of the query predictions). Two exact reductions make the same
    problem tiny: the optimal weights lie in the span of the support rows (the loss gradient X^T(P - Y) and the L2
    term both keep them there), so the fit runs in an orthonormal basis of that span (r <= S dimensions, same
    norms, same optimum); and the problem is small and smooth, so Newton steps with conjugate-gradient
    Hessian-vector products (scipy's trust-ncg) reach the optimum in about ten iterations.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp, softmax

    support, query = _flat(support), _flat(query)
    labels = np.asarray(support_labels).astype(np.int64).reshape(-1)
    ways = max(int(ways), int(labels.max()) + 1)
    basis = _support_basis(support)
    x = np.hstack([support @ basis, np.ones((len(support), 1))])  # last column: the intercept
    rows, targets = x.shape[1], np.eye(ways)[labels]
    penalty = np.ones((rows, ways))
    penalty[-1] = 0.0  # scikit-learn does not penalise the intercept

    def objective(theta):
        weights = theta.reshape(rows, ways)
        logits = x @ weights
        return c * np.sum(logsumexp(logits, axis=1) - np.sum(logits * targets, axis=1), axis=0) + \
            0.5 * np.sum(penalty * weights * weights)

    def gradient(theta):
        weights = theta.reshape(rows, ways)
        return (c * x.T @ (softmax(x @ weights, axis=1) - targets) + penalty * weights).ravel()

    def hessian_times(theta, vector):
        probabilities = softmax(x @ theta.reshape(rows, ways), axis=1)
        direction = vector.reshape(rows, ways)
        change = x @ direction
        mixed = probabilities * (change - np.sum(probabilities * change, axis=1, keepdims=True))
        return (c * x.T @ mixed + penalty * direction).ravel()

    result = minimize(objective, np.zeros(rows * ways), jac=gradient, hess=None, hessp=hessian_times,
                      method="trust-ncg", options={"gtol": 1e-6, "maxiter": 200})
    weights = result.x.reshape(rows, ways)
    return np.argmax(query @ basis @ weights[:-1] + weights[-1], axis=1).astype(np.int64)


BASELINES = {
    "nearest_centroid": nearest_centroid_predict,
    "logistic_regression": logistic_regression_predict,
}
