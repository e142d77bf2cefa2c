"""Unknown-class scores on a run's embedding (the input of its final `head_dense` layer).

Every score is "higher = less like the known classes" and needs only numpy arrays fitted once
on the training split: the head's kernel and bias (for the softmax and energy scores), the class
centroids, a shared covariance's whitening matrix, a bank of training embeddings (k-nearest
neighbours). `UnknownScorer` holds them; app/unknown_store.py writes them to the run directory
as `unknown.json` + `unknown.npz`, a format any later consumer (a SavedModel export, a server)
can read with numpy alone.

Candidates (the literature each comes from):
- `max_softmax`: the negated maximum softmax probability (Hendrycks & Gimpel 2017): the
  baseline every user gets from a closed-set classifier.
- `energy`: the negated log-sum-exp of the logits (Liu et al. 2020).
- `centroid`: cosine distance to the nearest class centroid (the prototype view).
- `knn`: cosine distance to the k-th nearest training embedding (Sun et al. 2022).
- `mahalanobis`: the smallest Mahalanobis distance to a class mean under one shared covariance,
  shrunk towards a multiple of the identity because a few hundred examples cannot estimate a
  1280-dimensional covariance (Lee et al. 2018).
- `relative_mahalanobis`: the class-conditional `mahalanobis` distance minus the distance under
  one background Gaussian fitted on all training embeddings (Ren et al. 2021, "A simple fix to
  Mahalanobis distance"). The background term cancels the directions every image varies in
  (stroke thickness, brightness, the backbone's generic ImageNet features) that make plain
  Mahalanobis call an unusual-looking known image far.
- `max_softmax+knn`: the sum of the two, each standardised by its mean and spread on known
  validation examples. They fail on different images (the head is unsure between two known
  classes vs the image lies far from every training image), which is why the sum beats both on
  Fashion-MNIST (BENCHMARKS.md, "unknowns and label noise").
- `energy+relative_mahalanobis`: the same construction with the head's energy and the relative
  Mahalanobis distance: over many Fashion-MNIST class splits it had the best upper decile and
  one of the best medians (BENCHMARKS.md, "unknownscores").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SINGLE_SCORES = ("max_softmax", "energy", "centroid", "knn", "mahalanobis", "relative_mahalanobis")
COMBINED_SCORES = {"max_softmax+knn": ("max_softmax", "knn"),
                   "energy+relative_mahalanobis": ("energy", "relative_mahalanobis")}
SCORES = SINGLE_SCORES + tuple(COMBINED_SCORES)
KNN_K = 10
SHRINKAGE = 0.5  # weight of the identity target in the shared covariance
MAX_BANK = 10000  # k-NN bank rows kept (a random subset beyond that: memory and time per prediction)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _shrunk_whitening(residuals: np.ndarray) -> np.ndarray:
    """W such that |r @ W|^2 is r's Mahalanobis distance under the residuals' covariance, shrunk towards a
    multiple of the identity (a few hundred rows cannot estimate a 1280-dimensional covariance)."""
    covariance = residuals.T @ residuals / max(len(residuals), 1)
    scale = np.trace(covariance) / covariance.shape[0] or 1.0
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * scale * np.eye(covariance.shape[0])
    values, vectors = np.linalg.eigh(shrunk)
    return vectors / np.sqrt(np.maximum(values, 1e-12))


def _nearest_squared_distance(projected: np.ndarray, centres: np.ndarray) -> np.ndarray:
    distances = ((projected ** 2).sum(axis=1)[:, None] - 2 * projected @ centres.T
                 + (centres ** 2).sum(axis=1)[None, :])
    return distances.min(axis=1)


def softmax_logits(embeddings: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return embeddings.astype(np.float64) @ kernel + bias


@dataclass
class UnknownScorer:
    """The arrays every candidate score needs, fitted on training embeddings and the run's head."""

    kernel: np.ndarray  # [dim, classes]: head_dense
    bias: np.ndarray  # [classes]
    centroids: np.ndarray  # [classes, dim], L2-normalised means of the normalised embeddings
    means: np.ndarray  # [classes, dim], plain class means (Mahalanobis)
    whitening: np.ndarray  # [dim, rank]: x @ whitening has the shrunk shared covariance's inverse as metric
    bank: np.ndarray  # [n, dim], L2-normalised training embeddings (k-NN)
    # The background Gaussian of `relative_mahalanobis`: None in a detector saved before it existed.
    background_mean: np.ndarray | None = None  # [dim], mean of all training embeddings
    background_whitening: np.ndarray | None = None  # [dim, rank], as `whitening` for the background covariance
    # Per single score: (mean, std) on known validation examples, for the combined scores.
    standardise: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels, kernel: np.ndarray, bias: np.ndarray, seed: int = 0) -> "UnknownScorer":
        x = np.asarray(embeddings, np.float64)
        labels = np.asarray(labels)
        classes = kernel.shape[1]
        normalised = _normalise(x)
        # A class without training embeddings (cannot happen after the data checks) gets a zero centroid.
        centroids = _normalise(np.stack([normalised[labels == c].mean(axis=0) if np.any(labels == c)
                                         else np.zeros(x.shape[1]) for c in range(classes)]))
        means = np.stack([x[labels == c].mean(axis=0) if np.any(labels == c) else np.zeros(x.shape[1])
                          for c in range(classes)])
        whitening = _shrunk_whitening(x - means[labels])
        background_mean = x.mean(axis=0)
        background_whitening = _shrunk_whitening(x - background_mean)
        bank = normalised
        if len(bank) > MAX_BANK:
            bank = bank[np.sort(np.random.default_rng(seed).choice(len(bank), MAX_BANK, replace=False))]
        return cls(np.asarray(kernel, np.float64), np.asarray(bias, np.float64), centroids, means, whitening, bank,
                   background_mean, background_whitening)

    def available(self, name: str) -> bool:
        """False for a score whose arrays a detector saved by an older metatune does not hold, and for a combined
        score whose parts were not standardised (a calibrated scorer standardises every single score)."""
        needs = ("relative_mahalanobis",) + tuple(n for n, parts in COMBINED_SCORES.items()
                                                  if "relative_mahalanobis" in parts)
        if name in needs and self.background_whitening is None:
            return False
        return name not in COMBINED_SCORES or all(part in self.standardise for part in COMBINED_SCORES[name])

    def calibrate(self, known_embeddings: np.ndarray) -> None:
        """Standardisation of the single scores on known examples the bank does not hold (validation); for a
        threshold carried over from a first model, on the training split (app/threshold_transfer.py says why)."""
        for name in SINGLE_SCORES:
            values = self.single(name, known_embeddings)
            self.standardise[name] = (float(np.mean(values)), float(np.std(values)) or 1.0)

    def single(self, name: str, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, np.float64)
        if name in ("max_softmax", "energy"):
            logits = softmax_logits(x, self.kernel, self.bias)
            top = logits.max(axis=1, keepdims=True)
            log_total = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            # max softmax = exp(max logit - logsumexp)
            return -np.exp(top[:, 0] - log_total) if name == "max_softmax" else -log_total
        if name == "centroid":
            return 1.0 - (_normalise(x) @ self.centroids.T).max(axis=1)
        if name == "knn":
            k = min(KNN_K, len(self.bank))
            similarities = _normalise(x) @ self.bank.T
            kth_largest = -np.partition(-similarities, k - 1, axis=1)[:, k - 1]
            return 1.0 - kth_largest
        if name == "mahalanobis":
            return _nearest_squared_distance(x @ self.whitening, self.means @ self.whitening)
        if name == "relative_mahalanobis":
            if self.background_whitening is None:
                raise ValueError("This detector was saved without the background Gaussian of relative_mahalanobis.")
            class_term = _nearest_squared_distance(x @ self.whitening, self.means @ self.whitening)
            background = (x - self.background_mean) @ self.background_whitening
            return class_term - (background ** 2).sum(axis=1)
        raise ValueError(f"Unknown score {name!r}; choose from {SCORES}")

    def score(self, name: str, embeddings: np.ndarray) -> np.ndarray:
        """The named score of each embedding (higher: more likely a class the run does not know)."""
        if name not in COMBINED_SCORES:
            return self.single(name, embeddings)
        total = np.zeros(len(embeddings))
        for part in COMBINED_SCORES[name]:
            mean, std = self.standardise[part]
            total += (self.single(part, embeddings) - mean) / std
        return total


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Area under the ROC curve with unknown as the positive class (nan without both kinds)."""
    from sklearn.metrics import roc_auc_score

    if not len(known_scores) or not len(unknown_scores):
        return float("nan")
    truth = np.r_[np.zeros(len(known_scores)), np.ones(len(unknown_scores))]
    return float(roc_auc_score(truth, np.r_[known_scores, unknown_scores]))


def threshold_for_recall(known_scores: np.ndarray, recall: float) -> float:
    """The score below or at which `recall` of the known examples fall (they are accepted): the empirical
    quantile, as the open-set literature's FPR at 95% TPR measures it on an evaluation folder."""
    return float(np.quantile(np.asarray(known_scores, np.float64), recall, method="higher"))


# (n + 1) * recall is computed in floating point: 10 * 0.9 may come out a hair above 9.
_RANK_TOLERANCE = 1e-9
# Relative distance of a threshold above the validation score that sets it (detector_threshold): above the noise
# between computations of one file's score (float32 embeddings in other batches, the export's graph; 1e-7 here).
_THRESHOLD_MARGIN = 1e-6


def percent(fraction: float) -> str:
    """`fraction` as a percentage for messages, to 3 significant digits, more where those round a fraction below 1 up
    to "100" (--reject-recall 0.99999 was said to keep "100%" of known files, a value the option refuses)."""
    for digits in range(3, 16):
        text = f"{100 * fraction:.{digits}g}"
        if text != "100" or fraction >= 1:
            return text
    return text


def fewest_files_for_recall(recall: float) -> int:
    """The fewest known files on which detector_threshold can keep `recall` of new known files: n with
    ceil((n + 1) * recall) <= n, i.e. n >= recall / (1 - recall) (19 for 0.95)."""
    return max(1, math.ceil(recall / (1.0 - recall) - _RANK_TOLERANCE))


def detector_threshold(known_scores: np.ndarray, recall: float) -> float:
    """The threshold a run stores: the ceil((n + 1) * recall)-th smallest of the n known scores (split conformal
    prediction's quantile), so that a new file of a known class, exchangeable with these n, is accepted with
    probability at least `recall`. The plain empirical quantile gives no such promise on few files: on 2 validation
    files it is their maximum, which a new known file exceeds one time in three, and the run rejected its own
    classes' files. Infinite (the detector rejects nothing) when n < fewest_files_for_recall(recall): no score
    the files hold keeps that many."""
    scores = np.sort(np.asarray(known_scores, np.float64))
    # At least the smallest: below a recall of about 1e-9 / (n + 1) the tolerance made the rank 0, and index -1
    # took the largest score, a threshold that rejected nothing (and an IndexError on no scores at all).
    rank = max(1, math.ceil((len(scores) + 1) * recall - _RANK_TOLERANCE))
    if rank > len(scores):
        return math.inf
    # Just above that score, not on it: the file that set it lay exactly at the threshold, so its verdict was float
    # noise (the SavedModel's graph, or another batch, computed 1e-16 more and rejected a validation file that
    # predict.py accepted). Below the next score, so the same validation files are kept.
    threshold = float(scores[rank - 1])
    gap = float(scores[rank]) - threshold if rank < len(scores) else math.inf
    return threshold + min(_THRESHOLD_MARGIN * max(1.0, abs(threshold)), gap / 2) if gap > 0 else threshold


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknown examples accepted when the threshold keeps `tpr` of the known ones
    (the open-set literature's FPR at 95% TPR, known examples being the positives)."""
    threshold = threshold_for_recall(known_scores, tpr)
    return float(np.mean(np.asarray(unknown_scores) <= threshold)) if len(unknown_scores) else float("nan")
