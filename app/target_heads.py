"""The classifier a protonet run writes over its embedding, and how candidates are scored on the target.

Two classifiers, both a Dense softmax layer in the end:
- prototypes: the class means (kernel = 2·Pᵀ, bias = −‖p‖², models/meta/protonet.py);
- logistic regression: a multinomial logistic regression fitted on the embeddings
  (scikit-learn, C = 1, as the `evaluate.py --episodes` baseline), its weights written into the
  Dense layer. With 5+ files per class it often beats prototypes on pretrained features
  (Reuters R8 at 8 texts per class, MiniLM features: 0.895 against 0.845 test accuracy, issue 18).

Scores come from stratified k-fold cross-validation over the target's train + validation files
(every labelled file the run may use; the test split is never passed in): each fold's files are
classified by a classifier fitted on the others.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from app.small_fits import one_thread
from models.meta import prototype_head_weights

TARGET_HEADS = ("prototypes", "logistic_regression")
CV_FOLDS = 5
# Logistic regression's cost grows with classes x files (thousands of classes in the classic
# layout): above this many classes `auto` keeps the prototypes without trying it.
LOGISTIC_MAX_CLASSES = 100
# (embeddings, labels, num_classes) -> Dense (kernel [D, C], bias [C])
FitHead = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def prototype_weights(embeddings: np.ndarray, labels: np.ndarray, num_classes: int):
    return prototype_head_weights(embeddings, labels, num_classes)


def logistic_regression_weights(embeddings: np.ndarray, labels: np.ndarray, num_classes: int):
    """Multinomial logistic regression as Dense weights; classes absent from `labels` never win."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(embeddings, np.float64)
    y = np.asarray(labels, np.int64)
    present = np.unique(y)
    kernel = np.zeros((x.shape[1], num_classes))
    bias = np.full(num_classes, -1e9)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return kernel.astype(np.float32), bias.astype(np.float32)
    model = LogisticRegression(max_iter=1000)
    with warnings.catch_warnings(), one_thread():  # app/small_fits.py: small fits run faster on one thread
        # Few files per class are often separable: lbfgs may stop at max_iter; the fit is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn keeps one logit (for the second class) with two classes
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel[:, present] = coef.T
    bias[present] = intercept
    return kernel.astype(np.float32), bias.astype(np.float32)


FIT = {"prototypes": prototype_weights, "logistic_regression": logistic_regression_weights}


def stratified_folds(labels, folds: int = CV_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold number of every file: each class's files dealt round-robin after a seeded shuffle.
    Files of single-file classes get -1 (never held out: they would have nothing to match)."""
    labels = np.asarray(labels, np.int64)
    assignment = np.full(len(labels), -1)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) > 1:
            assignment[members] = np.arange(len(members)) % folds
    return assignment


def cross_validated_accuracy(fit: FitHead, embeddings: np.ndarray, labels, num_classes: int,
                             seed: int = 0) -> float:
    x = np.asarray(embeddings, np.float64)
    y = np.asarray(labels, np.int64)
    folds = stratified_folds(y, CV_FOLDS, seed)
    hits = total = 0
    for fold in range(CV_FOLDS):
        held = folds == fold
        if not held.any():
            continue
        kernel, bias = fit(x[~held], y[~held], num_classes)
        predicted = np.argmax(x[held] @ kernel + bias, axis=1)
        hits += int(np.sum(predicted == y[held], axis=0))
        total += int(held.sum())
    return hits / total if total else float("nan")


def candidate_heads(asked: str, num_classes: int) -> tuple[str, ...]:
    if asked != "auto":
        return (asked,)
    return TARGET_HEADS if num_classes <= LOGISTIC_MAX_CLASSES else ("prototypes",)


def choose_head(embeddings: np.ndarray, labels, num_classes: int, heads: tuple[str, ...],
                seed: int = 0) -> tuple[str, dict[str, float]]:
    """(best head, every head's cross-validated accuracy); ties keep the earlier head (prototypes first)."""
    if len(heads) == 1:
        return heads[0], {}
    scores = {name: cross_validated_accuracy(FIT[name], embeddings, labels, num_classes, seed) for name in heads}
    return max(heads, key=lambda name: (scores[name], -heads.index(name))), scores
