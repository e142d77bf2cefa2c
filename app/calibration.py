"""Temperature scaling (Guo et al. 2017): one scalar T that rescales logits to fix over/under-confidence.

Fitted on held-out validation predictions at training time, stored in
metadata.json, and applied at evaluation only when the user asks for it.
Written with numpy: a one-dimensional convex fit does not need an optimiser library.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-12
LOG_T_RANGE = (-3.0, 3.0)  # T between ~0.05 and ~20


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T (softmax is shift-invariant)."""
    logits = np.log(np.clip(probabilities, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0))))


def fit_temperature(probabilities, labels, iterations: int = 60) -> float:
    """The T minimising validation NLL, by golden-section search over log T (NLL is unimodal in log T)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), labels)

    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = LOG_T_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(iterations):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2.0))
