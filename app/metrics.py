"""Classification metrics from predicted probabilities (numpy; the keys of metrics.json in the README).

Written with numpy rather than scikit-learn: a few lines each, and it keeps a
heavy dependency out of the install for a handful of formulas.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
# The most bootstrap resamples (evaluate.py --bootstrap): each is a Python-level pass over the files (0.1 ms per 2000
# files), so 10**8 ran for hours, and 10**12 ended in an out-of-memory line naming other options. The percentiles'
# own sampling error is already far below the interval's width at 10000.
MAX_BOOTSTRAP_RESAMPLES = 100_000


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where undefined (no predictions / no examples)."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return precision, recall, f1, support.astype(np.int64)


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    top_k = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top_k == y_true[:, None], axis=1)))


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    table = reliability_bins(y_true, probabilities, bins)
    total = sum(row["count"] for row in table)
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]))


def classification_metrics(y_true, probabilities, class_names: list[str], k: int = 5) -> dict:
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    if probabilities.shape != (len(y_true), num_classes):
        raise ValueError(f"probabilities must have shape ({len(y_true)}, {num_classes}). Received: {probabilities.shape}")
    if len(y_true) == 0:
        raise ValueError("Cannot compute metrics on zero examples.")
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1, support = per_class_scores(matrix)
    k = max(1, min(k, num_classes))
    return {
        "num_examples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "top_k_accuracy": top_k_accuracy(y_true, probabilities, k),
        "k": k,
        "macro_f1": float(f1[scored_classes(matrix)].mean()),
        "weighted_f1": float(np.average(f1, weights=support)),
        "ece": expected_calibration_error(y_true, probabilities),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def most_confused_pairs(matrix, class_names: list[str], limit: int = 5) -> list[tuple[str, str, int]]:
    """(true, predicted, count) for the largest off-diagonal cells, largest first."""
    matrix = np.asarray(matrix)
    off_diagonal = [
        (class_names[t], class_names[p], int(matrix[t, p]))
        for t in range(len(class_names)) for p in range(len(class_names))
        if t != p and matrix[t, p] > 0
    ]
    return sorted(off_diagonal, key=lambda item: -item[2])[:limit]


def scored_classes(matrix) -> np.ndarray:
    """The classes macro F1 averages over: those in the evaluated labels or the predictions (scikit-learn's
    default). A class with no files that was predicted counts with F1 0; leaving it out would hide the mistakes."""
    matrix = np.asarray(matrix)
    return (matrix.sum(axis=1) > 0) | (matrix.sum(axis=0) > 0)


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    _, _, f1, _ = per_class_scores(matrix)
    scored = scored_classes(matrix)
    return float(f1[scored].mean()) if scored.any() else 0.0


def bootstrap_ci95(y_true, y_pred, num_classes: int, resamples: int = 1000, seed: int = 0) -> dict:
    """Percentile bootstrap 95% intervals for accuracy and macro F1 (examples resampled with replacement)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    accuracies, f1s = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        index = rng.integers(0, len(y_true), len(y_true))
        accuracies[r] = np.mean(y_true[index] == y_pred[index])
        f1s[r] = macro_f1_score(y_true[index], y_pred[index], num_classes)
    return {
        "accuracy": [float(np.percentile(accuracies, 2.5)), float(np.percentile(accuracies, 97.5))],
        "macro_f1": [float(np.percentile(f1s, 2.5)), float(np.percentile(f1s, 97.5))],
        "resamples": resamples,
    }


def reliability_bins(y_true, probabilities, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: range, count, mean confidence, accuracy (for the reliability diagram)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    result = []
    for b in range(bins):
        members = bin_index == b
        result.append({
            "low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
            "confidence": float(confidence[members].mean()) if members.any() else None,
            "accuracy": float(correct[members].mean()) if members.any() else None,
        })
    return result
