"""The run's unknown-class score as TensorFlow ops, for exported models: serving can reject too.

app/unknown_scores.py computes every score with numpy, for evaluate.py and predict.py. A server
that runs a SavedModel has neither metatune nor numpy's arrays at hand, so the export bakes the
chosen score's fitted arrays into the graph as constants and adds two outputs: `unknown_score`
and `unknown` (the score above the run's threshold). The arithmetic is the numpy one, operation
for operation, in float64 (the numpy code's precision) so that a file near the threshold gets
the same verdict from the SavedModel as from predict.py; tests/app/test_unknown_graph.py checks
every score against the numpy implementation.

Only the arrays the chosen score needs become constants (the k-NN bank is up to 10,000 x dim
floats; it is left out of a graph whose score does not use it).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from app.unknown_scores import COMBINED_SCORES, KNN_K, UnknownScorer
from app.unknown_selection import UnknownDetector


def _normalise(x: tf.Tensor) -> tf.Tensor:
    return x / tf.maximum(tf.norm(x, axis=1, keepdims=True), 1e-12)


def _nearest_squared_distance(projected: tf.Tensor, centres: tf.Tensor) -> tf.Tensor:
    distances = (tf.reduce_sum(projected ** 2, axis=1)[:, None] - 2 * tf.matmul(projected, centres, transpose_b=True)
                 + tf.reduce_sum(centres ** 2, axis=1)[None, :])
    return tf.reduce_min(distances, axis=1)


def _constant(array) -> tf.Tensor:
    return tf.constant(array, tf.float64)


@dataclass(frozen=True)
class UnknownServing:
    """What an export needs to reject: the fitted arrays, the chosen score and its threshold."""

    scorer: UnknownScorer
    detector: UnknownDetector

    def parts(self) -> tuple[str, ...]:
        return COMBINED_SCORES.get(self.detector.score, (self.detector.score,))

    def score_function(self):
        """embeddings (float, [batch, dim]) -> (score float32 [batch], unknown bool [batch]) as graph ops.
        The constants are created here, once, and captured by the traced serving function."""
        name = self.detector.score
        singles = {part: self._single(part) for part in self.parts()}
        standardise = {part: self.scorer.standardise[part] for part in self.parts() if name in COMBINED_SCORES}
        threshold = tf.constant(self.detector.threshold, tf.float64)

        def score(embeddings: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.cast(embeddings, tf.float64)
            if name in COMBINED_SCORES:
                total = tf.zeros(tf.shape(x)[:1], tf.float64)
                for part, single in singles.items():
                    mean, std = standardise[part]
                    total += (single(x) - mean) / std
            else:
                total = singles[name](x)
            return tf.cast(total, tf.float32), total > threshold

        return score

    def _single(self, name: str):
        s = self.scorer
        if name in ("max_softmax", "energy"):
            kernel, bias = _constant(s.kernel), _constant(s.bias)

            def softmax_score(x):
                logits = tf.matmul(x, kernel) + bias
                log_total = tf.reduce_logsumexp(logits, axis=1)
                top = tf.reduce_max(logits, axis=1)
                return -tf.exp(top - log_total) if name == "max_softmax" else -log_total
            return softmax_score
        if name == "centroid":
            centroids = _constant(s.centroids)
            return lambda x: 1.0 - tf.reduce_max(tf.matmul(_normalise(x), centroids, transpose_b=True), axis=1)
        if name == "knn":
            bank = _constant(s.bank)
            k = min(KNN_K, len(s.bank))
            return lambda x: 1.0 - tf.math.top_k(tf.matmul(_normalise(x), bank, transpose_b=True), k).values[:, k - 1]
        if name in ("mahalanobis", "relative_mahalanobis"):
            whitening = _constant(s.whitening)
            centres = _constant(s.means @ s.whitening)
            if name == "mahalanobis":
                return lambda x: _nearest_squared_distance(tf.matmul(x, whitening), centres)
            background_mean, background_whitening = _constant(s.background_mean), _constant(s.background_whitening)
            return lambda x: (_nearest_squared_distance(tf.matmul(x, whitening), centres)
                              - tf.reduce_sum(tf.matmul(x - background_mean, background_whitening) ** 2, axis=1))
        raise ValueError(f"Unknown score {name!r}")
