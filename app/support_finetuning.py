"""Fine-tuning on each support set at test time: the "F" of P>M>F (Hu et al., CVPR 2022).

Per episode, a copy of the run's trainable embedding (the meta-learner's `embedding` over
cached backbone features) and a linear head initialised from the support prototypes
(kernel 2·P^T, bias -||p_c||^2: the same ranking as nearest prototype, see
models/meta/protonet.py) are fine-tuned together on the SUPPORT ONLY with Adam for `steps`
steps at `learning_rate`; then the queries are classified by the fine-tuned head. The
queries enter only after the last step (`_episode`), so they cannot influence the weights.

Augmentation is in feature space (dropout on the cached features, a fixed seed per step so
an episode replays exactly): re-running pixel augmentation per episode would mean running the
frozen backbone on every step of every episode (hundreds of images per episode, 600 episodes),
minutes per evaluation on a CPU instead of seconds.

How much to fine-tune is chosen per shot count at training time on validation episodes of the
target's own train + validation files (never its test files, never evaluation classes), from
a small grid that includes learning rate 0 = no fine-tuning (P>M>F chooses the same way; here a
fine-tuning setting must beat no fine-tuning by more than the 95% interval of the paired
difference, see `_choose`), and saved in metadata.json["meta"]["support_finetuning"]; evaluate.py applies the choice of the
nearest shot count at or below the one asked for, like app/episode_learner.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from app.episode_learner import (CHOICE_QUERIES, CHOICE_SEED, CHOICE_SHOTS, CHOICE_WAYS, EPISODE_LEARNERS,
                                 learner_for)
from app.fewshot_baselines import CI_Z
from app.run_metadata import RunMetadata
from data.episodes import EpisodeSampler
from data.meta_pools import class_counts
from models.meta import scaled_prototype_head

logger = logging.getLogger(__name__)

LEARNING_RATES = (1e-4, 1e-3, 1e-2)  # P>M>F's grid; 0 (no fine-tuning) is always a candidate too
STEPS = (10, 50)  # 50 is P>M>F's default
CHOICE_EPISODES = 50  # per shot count; every grid point on the same episodes (paired differences)
FEATURE_KEEP = 0.9  # feature dropout: the augmentation of the support during fine-tuning
AUGMENT_SEED = 7_000_003
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-7
CHOICE_SEED_OFFSET = CHOICE_SEED + 11  # other episodes than the episode-learner choice


@dataclass(frozen=True)
class FinetuneSetting:
    """One grid point; learning_rate 0 (or steps 0) means no fine-tuning: the run's plain learner."""

    learning_rate: float
    steps: int

    @property
    def enabled(self) -> bool:
        return self.learning_rate > 0 and self.steps > 0

    @property
    def name(self) -> str:
        return f"lr={self.learning_rate:g},steps={self.steps}" if self.enabled else "off"


def grid() -> list[FinetuneSetting]:
    return [FinetuneSetting(0.0, 0)] + [FinetuneSetting(lr, s) for lr in LEARNING_RATES for s in STEPS]


def unsupported_reason(run_metadata: RunMetadata) -> str | None:
    """Why a run cannot be fine-tuned on the support (None when it can)."""
    strategy = run_metadata.strategy
    meta = run_metadata.meta or {}
    if not meta:
        return (f"a {strategy} run has no trainable embedding over cached inputs (its learner is nearest centroid on "
                "its penultimate embedding)")
    if meta.get("input", "features") != "features":
        return ("the run's embedding runs on raw inputs, so fine-tuning it per episode would re-run the backbone on "
                "every step (too slow on a CPU); support fine-tuning needs the features input (--meta-input features)")
    return None


class SupportFinetuner:
    """Fine-tunes a functional copy of `embedding` + a prototype head on each support; never touches `embedding`.

    The embedding's variables are only read (as the starting point of every episode); the
    fine-tuned weights are tensors local to one traced call, so episodes are independent.
    One tf.function does a whole episode; its input shapes are fixed by (ways, shots,
    queries), and learning rate / steps are tensors, so it traces once per shape.
    """

    def __init__(self, embedding: keras.Model, ways: int):
        # An embedding without trainable weights (the "no source stage" identity) leaves the head alone to fine-tune.
        self.embedding, self.ways = embedding, int(ways)
        self._episode = tf.function(self._episode_graph, reduce_retracing=True)
        self._adapt = tf.function(self._adapt_graph, reduce_retracing=True)

    # ---------------------------------------------------------------- the graph
    def _embed(self, params, x):
        state = [v.value for v in self.embedding.non_trainable_variables]
        # training=False: dropout off and BatchNorm (if any) on its moving statistics, never updated.
        outputs, _ = self.embedding.stateless_call(list(params), state, x, training=False)
        return tf.cast(outputs, tf.float32)

    def _adapt_graph(self, support, labels, learning_rate, steps):
        """Support only -> fine-tuned (embedding weights, head kernel, head bias)."""
        support = tf.cast(support, tf.float32)
        labels = tf.cast(labels, tf.int32)
        params = [tf.identity(v.value) for v in self.embedding.trainable_variables]
        kernel, bias = scaled_prototype_head(self._embed(params, support), labels, self.ways)
        weights = params + [kernel, bias]
        first = [tf.zeros_like(w) for w in weights]
        second = [tf.zeros_like(w) for w in weights]

        def step(i, weights, first, second):
            # A new dropout mask every step, the same masks every episode (replayable).
            mask = tf.random.stateless_uniform(tf.shape(support), seed=tf.stack([AUGMENT_SEED, i])) < FEATURE_KEEP
            augmented = tf.where(mask, support / FEATURE_KEEP, 0.0)
            with tf.GradientTape() as tape:
                tape.watch(weights)
                logits = tf.matmul(self._embed(weights[:-2], augmented), weights[-2]) + weights[-1]
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits), axis=0)
            grads = tape.gradient(loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # Adam written out: Keras' TF optimizer has no stateless apply, and the episode's fast
            # weights must stay tensors (never the run's variables) so episodes cannot leak into each other.
            t = tf.cast(i + 1, tf.float32)
            first = [ADAM_BETA1 * m + (1 - ADAM_BETA1) * g for m, g in zip(first, grads)]
            second = [ADAM_BETA2 * v + (1 - ADAM_BETA2) * tf.square(g) for v, g in zip(second, grads)]
            scale = learning_rate * tf.sqrt(1 - ADAM_BETA2**t) / (1 - ADAM_BETA1**t)
            weights = [w - scale * m / (tf.sqrt(v) + ADAM_EPSILON) for w, m, v in zip(weights, first, second)]
            return i + 1, weights, first, second

        _, weights, _, _ = tf.while_loop(lambda i, *_: i < steps, step, (tf.constant(0), weights, first, second))
        return weights

    def _episode_graph(self, support, labels, query, learning_rate, steps):
        weights = self._adapt_graph(support, labels, learning_rate, steps)
        # The queries enter here, after the last fine-tuning step, one row at a time through fixed weights.
        embedded = self._embed(weights[:-2], tf.cast(query, tf.float32))
        return tf.argmax(tf.matmul(embedded, weights[-2]) + weights[-1], axis=-1, output_type=tf.int32)

    # ------------------------------------------------------------------ API
    def adapt(self, support, support_labels, setting: FinetuneSetting) -> list[np.ndarray]:
        """The fine-tuned weights (embedding's trainable weights, head kernel, head bias) of one support."""
        weights = self._adapt(tf.convert_to_tensor(support), tf.convert_to_tensor(support_labels, tf.int32),
                              tf.constant(setting.learning_rate, tf.float32), tf.constant(setting.steps))
        return [w.numpy() for w in weights]

    def predictor(self, setting: FinetuneSetting):
        """`predict(support, support_labels, query, ways) -> query labels` with this fine-tuning setting."""
        learning_rate = tf.constant(setting.learning_rate, tf.float32)
        steps = tf.constant(setting.steps)

        def predict(support, support_labels, query, ways):
            if ways != self.ways:
                raise ValueError(f"The fine-tuner is {self.ways}-way. Received: ways={ways}")
            return self._episode(tf.convert_to_tensor(support), tf.convert_to_tensor(support_labels, tf.int32),
                                 tf.convert_to_tensor(query), learning_rate, steps).numpy()

        return predict


# ------------------------------------------------------------------- the choice at training time

def choose_support_finetuning(embedding: keras.Model, inputs: np.ndarray, labels, plain_for, seed: int,
                              ways: int = CHOICE_WAYS) -> dict | None:
    """Pick (learning rate, steps) per shot count on validation episodes of `inputs` (the target's train + val).

    plain_for(shots) -> (rows, predict): the run's learner without fine-tuning (its own inputs,
    one row per row of `inputs`), scored as the learning-rate-0 grid point.
    Returns {"by_shots": {"1": {"learning_rate", "steps"}, ...}, "scores": {...}, ...} or None
    when no validation episode fits.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels)
    ways = min(ways, len(counts))
    if ways < 2:
        return None
    finetuner = SupportFinetuner(embedding, ways)
    by_shots, scores, seconds = {}, {}, {}
    began = time.perf_counter()
    for shots in CHOICE_SHOTS:
        room = np.sort(counts)[::-1][ways - 1] - shots
        if room < 1:
            continue
        sampler = EpisodeSampler(labels, ways, shots, int(min(CHOICE_QUERIES, room)), seed=seed + CHOICE_SEED_OFFSET)
        plain_rows, plain_predict = plain_for(shots)
        predictors = {setting: finetuner.predictor(setting) for setting in grid() if setting.enabled}
        accuracy = {setting: [] for setting in grid()}
        spent = {setting: 0.0 for setting in grid()}
        for number in range(CHOICE_EPISODES):
            episode = sampler.episode(number)
            for setting in grid():
                rows, predict = (plain_rows, plain_predict) if not setting.enabled else (inputs, predictors[setting])
                start = time.perf_counter()
                predicted = predict(rows[episode.support_index], episode.support_labels,
                                    rows[episode.query_index], ways)
                spent[setting] += time.perf_counter() - start
                accuracy[setting].append(np.mean(np.asarray(predicted) == episode.query_labels, axis=0))
        mean = {setting: float(np.mean(values, axis=0)) for setting, values in accuracy.items()}
        best = _choose(accuracy)
        by_shots[str(shots)] = asdict(best)
        scores[str(shots)] = {s.name: mean[s] for s in grid()}
        seconds[str(shots)] = {s.name: spent[s] / CHOICE_EPISODES for s in grid()}
        logger.info("Support fine-tuning at %d shots: %s (target validation episodes, %d-way, %d episodes: %s)",
                    shots, best.name, ways, CHOICE_EPISODES,
                    ", ".join(f"{name} {value:.4f}" for name, value in scores[str(shots)].items()))
    if not by_shots:
        return None
    took = time.perf_counter() - began
    logger.info("Support fine-tuning chosen in %.1f s (%d settings x %d validation episodes per shot count).", took,
                len(grid()), CHOICE_EPISODES)
    return {"by_shots": by_shots, "scores": scores, "grid": {s.name: asdict(s) for s in grid()},
            "seconds_per_episode": seconds, "seconds": round(took, 2), "ways": ways,
            "episodes": CHOICE_EPISODES, "augmentation": f"feature dropout, keep {FEATURE_KEEP}",
            "optimizer": "adam", "from": "episodes of the target's train + validation files"}


def _choose(accuracy: dict[FinetuneSetting, list[float]]) -> FinetuneSetting:
    """No fine-tuning unless a setting beats it clearly on the validation episodes; then the best such setting.

    "Clearly": the mean paired difference over the episodes exceeds its 95% interval. A gain within the noise of
    a few dozen episodes need not carry over to novel classes (fonts meta-transfer at 1 shot: +0.2 points on
    validation, -0.07 on the 600 evaluation episodes), and fine-tuning costs time per episode. Ties between
    settings go to fewer steps, then smaller learning rates.
    """
    off = np.asarray(accuracy[FinetuneSetting(0.0, 0)], dtype=np.float64)
    clear = []
    for setting, values in accuracy.items():
        difference = np.asarray(values, dtype=np.float64) - off
        interval = CI_Z * np.std(difference, axis=0) / np.sqrt(difference.size)
        if setting.enabled and np.mean(difference, axis=0) > interval:
            clear.append(setting)
    if not clear:
        return FinetuneSetting(0.0, 0)
    return max(clear, key=lambda s: (float(np.mean(accuracy[s], axis=0)), -s.steps, -s.learning_rate))


def choose_for_run(learner, algorithm: str, inputs: np.ndarray, embeddings: np.ndarray, labels,
                   episode_learner: dict | None, seed: int) -> dict | None:
    """The choice for a meta run trained on cached features: its plain learner is the lr-0 grid point.

    protonet: the per-shot episode learner (app/episode_learner.py) on `embeddings` (the embedding of
    `inputs`); the gradient learners: their own adaptation (`episode_logits`) at their fixed ways.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if algorithm == "protonet":
        def plain_for(shots):
            return embeddings, EPISODE_LEARNERS[learner_for(episode_learner, shots)]
        ways = CHOICE_WAYS
    else:
        ways = learner.ways
        if len(class_counts(labels)) < ways:
            logger.info("Support fine-tuning not chosen: the %d-way %s head needs %d target classes; %d here.",
                        ways, algorithm, ways, len(class_counts(labels)))
            return None
        step = tf.function(lambda s, y, q: learner.episode_logits(s, y, q, ways=ways))

        def plain_for(shots):
            def predict(support, support_labels, query, episode_ways):
                logits = step(tf.convert_to_tensor(support), tf.convert_to_tensor(support_labels, tf.int32),
                              tf.convert_to_tensor(query))
                return np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
            return inputs, predict
    return choose_support_finetuning(learner.embedding, inputs, labels, plain_for, seed, ways)


def _applicable(by_shots: dict, shots: int) -> str:
    """The saved shot count nearest at or below `shots` (the smallest above when none is), as its key."""
    saved = sorted(int(k) for k in by_shots)
    below = [k for k in saved if k <= shots]
    return str(below[-1] if below else saved[0])


def setting_for(choice: dict | None, shots: int) -> FinetuneSetting | None:
    """The saved setting for the nearest shot count at or below `shots` (the smallest above when none is)."""
    if not choice or not choice.get("by_shots"):
        return None
    chosen = choice["by_shots"][_applicable(choice["by_shots"], shots)]
    return FinetuneSetting(float(chosen["learning_rate"]), int(chosen["steps"]))


def best_enabled_setting(choice: dict | None, shots: int) -> FinetuneSetting | None:
    """The best fine-tuning grid point (learning rate > 0) on the validation episodes of the applicable shot count.

    Shown beside the chosen learner when the choice was "off", so the report still says what F would give.
    """
    if not choice or not choice.get("scores") or not choice.get("grid"):
        return None
    scores = choice["scores"][_applicable(choice["scores"], shots)]
    settings = [FinetuneSetting(float(p["learning_rate"]), int(p["steps"])) for p in choice["grid"].values()]
    enabled = [s for s in settings if s.enabled and s.name in scores]
    if not enabled:
        return None
    return max(enabled, key=lambda s: (scores[s.name], -s.steps, -s.learning_rate))
