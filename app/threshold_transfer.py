"""The unknown-class threshold of a model that trained on its own validation files, carried over from the first
model, which did not.

Why: the detector's threshold is the score that keeps --reject-recall of the known validation files. After a
refit on train + validation that retrains the embedding (`finetune`, `--hidden-units`, a text target stage's
fine-tuning), every validation file is one the final model trained on, and it scores as more familiar than a
new file of a known class will: set there, the threshold rejected 11% of new known files on the bundled
Fashion-MNIST sample (`--hidden-units 64 --refit yes`, 3 seeds) instead of the 1.5-3.5% the first model's
held-out threshold rejected (README, "Unknown classes and label issues"). No file is held out from the final
model, and a second, out-of-fold refit would double the training.

What carries over: where the first model's honest threshold lies relative to the scores of its own *training*
files, which it trained on and fitted the score's arrays on, exactly as the final model did with its training
split. That position is an offset in robust units, (threshold - median) / interquartile range of those scores;
the final threshold is the same offset over the final model's training-split scores. The first model's training
scores crowd near the bottom (nearly every one is below its threshold), so a quantile would rest on the 1-3
highest of a few hundred scores; the median and the quartiles rest on all of them. Measured on the sample
(the same runs, the 200 test files, energy+relative_mahalanobis): 1.5-4.0% rejected; `finetune --refit yes`,
2 seeds: 4.0 / 3.0% against 3.0 / 2.5% for the first models and 8.5 / 5.5% for the validation quantile. The
quantile of the training scores at the first model's level instead gave 3.5-8% and 35-44%.

A combined score (energy+relative_mahalanobis) sums its parts standardised on known files. Standardised on the
validation files, its parts would be weighted by the spread of held-out files in the first model and of trained-on
files in the final one, and the sum would change shape between the two (a constructed case,
tests/app/test_threshold_transfer.py: 15% of new known files rejected instead of 4-5%; every single score 4-6%).
So both models standardise on their training split, files of the same standing in each.
"""

from __future__ import annotations

import math

import numpy as np

from app.unknown_scores import SCORES, UnknownScorer, detector_threshold


def _centre_and_spread(scores: np.ndarray) -> tuple[float, float]:
    low, centre, high = np.quantile(np.asarray(scores, np.float64), [0.25, 0.5, 0.75])
    return float(centre), float(high - low)


def held_out_offsets(train_embeddings: np.ndarray, train_labels, val_embeddings: np.ndarray, kernel: np.ndarray,
                     bias: np.ndarray, reject_recall: float, seed: int = 0) -> dict[str, float]:
    """The first model's threshold per score (the one fit_unknown_detector would set: the scorer fitted on the
    training split, standardised and thresholded on the validation split) as an offset from its training-split
    scores, in interquartile ranges. A score whose training scores have no spread gets no offset (its threshold is
    then set on the validation files, as without a refit)."""
    scorer = UnknownScorer.fit(train_embeddings, train_labels, kernel, bias, seed)
    scorer.calibrate(train_embeddings)  # what a combined score's parts are standardised on: see the module docstring
    offsets = {}
    for name in SCORES:
        if not scorer.available(name):
            continue
        threshold = detector_threshold(scorer.score(name, val_embeddings), reject_recall)
        centre, spread = _centre_and_spread(scorer.score(name, train_embeddings))
        # No spread (rounding aside): every training file scores the same, e.g. a saturated softmax, and an
        # offset would be a ratio of rounding errors.
        if spread > 1e-9 * max(abs(centre), abs(threshold)) and math.isfinite((threshold - centre) / spread):
            offsets[name] = float((threshold - centre) / spread)
    return offsets


def transferred_threshold(train_scores: np.ndarray, offset: float) -> float:
    """The final model's threshold: `offset` interquartile ranges from the median of its training-split scores."""
    centre, spread = _centre_and_spread(train_scores)
    return centre + offset * spread
