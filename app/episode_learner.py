"""Which per-episode learner a protonet run uses on its embedding, chosen per shot count at training time.

`evaluate.py --episodes` adapts the run's meta-learner on each support set. For a protonet run
that means nearest prototype on the embedding; logistic regression on the same embedding is
the other candidate (on pretrained features it wins at 5 shots and loses at 1: the fonts glyph
set of issue 18 scored 99.43 against nearest centroid's 98.39 at 5 shots). Which one is better
depends on the shots, so the run decides per shot count on validation episodes of the target's
own train + validation files (never its test files) and saves the choice in metadata.json;
evaluate.py applies the choice of the nearest shot count at or below the one asked for.
"""

from __future__ import annotations

import logging

import numpy as np

from app.errors import UserError
from app.fewshot_baselines import logistic_regression_predict, nearest_centroid_predict
from data.episodes import EpisodeSampler
from data.meta_pools import class_counts

logger = logging.getLogger(__name__)
EPISODE_LEARNERS = {"prototypes": nearest_centroid_predict, "logistic_regression": logistic_regression_predict}
CHOICE_SHOTS = (1, 5)
CHOICE_WAYS, CHOICE_QUERIES, CHOICE_EPISODES = 5, 15, 100
CHOICE_SEED = 3_000_017


def choose_episode_learners(embeddings: np.ndarray, labels, seed: int) -> dict | None:
    """{"by_shots": {"1": name, ...}, "scores": {...}, ...} or None when no validation episode fits."""
    counts = class_counts(labels)
    ways = min(CHOICE_WAYS, len(counts))
    if ways < 2:
        return None
    by_shots, scores = {}, {}
    for shots in CHOICE_SHOTS:
        room = np.sort(counts)[::-1][ways - 1] - shots  # queries the ways-th largest class can still give
        if room < 1:
            continue
        sampler = EpisodeSampler(labels, ways, shots, int(min(CHOICE_QUERIES, room)), seed=seed + CHOICE_SEED)
        accuracy = {name: [] for name in EPISODE_LEARNERS}
        for number in range(CHOICE_EPISODES):
            episode = sampler.episode(number)
            for name, predict in EPISODE_LEARNERS.items():
                predicted = predict(embeddings[episode.support_index], episode.support_labels,
                                    embeddings[episode.query_index], ways)
                accuracy[name].append(np.mean(predicted == episode.query_labels, axis=0))
        scores[str(shots)] = {name: float(np.mean(values, axis=0)) for name, values in accuracy.items()}
        # Ties keep prototypes: cheaper, and what the meta-learner was trained for.
        by_shots[str(shots)] = max(EPISODE_LEARNERS, key=lambda name: (scores[str(shots)][name],
                                                                       name == "prototypes"))
        logger.info("Episode learner at %d shots: %s (target validation episodes, %d-way: %s)", shots,
                    by_shots[str(shots)], ways, ", ".join(f"{k} {v:.4f}" for k, v in scores[str(shots)].items()))
    if not by_shots:
        return None
    return {"by_shots": by_shots, "scores": scores, "ways": ways, "episodes": CHOICE_EPISODES,
            "from": "episodes of the target's train + validation files"}


def learner_for(choice: dict | None, shots: int) -> str:
    """The saved choice for the nearest shot count at or below `shots` (the smallest above when none is).
    A choice that is not one metatune writes (metadata.json edited or damaged) is a UserError naming it: it was a
    traceback (a shot count that is not a number, or an unknown learner's KeyError)."""
    if not choice:
        return "prototypes"
    by_shots = choice.get("by_shots") if isinstance(choice, dict) else None
    if not isinstance(by_shots, dict) or not by_shots:
        raise _damaged_choice(choice)
    try:
        saved = sorted(int(k) for k in by_shots)
        below = [k for k in saved if k <= shots]
        learner = by_shots[str(below[-1] if below else saved[0])]
    except (TypeError, ValueError, KeyError):  # a shot count that is not a whole number ("x", "01")
        raise _damaged_choice(choice) from None
    if not isinstance(learner, str) or learner not in EPISODE_LEARNERS:
        raise _damaged_choice(choice)
    return learner


def _damaged_choice(choice) -> UserError:
    shown = repr(choice)
    return UserError(f"metadata.json's meta.episode_learner is not a choice metatune writes (a mapping "
                     f"{{\"by_shots\": {{\"SHOTS\": LEARNER}}}}, LEARNER one of {', '.join(EPISODE_LEARNERS)}). "
                     f"Received: {shown[:200]}{'...' if len(shown) > 200 else ''}. Put back the run's own "
                     "metadata.json, or delete meta.episode_learner to evaluate with prototypes.")
