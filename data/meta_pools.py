"""Where meta-training and meta-validation episodes come from, and the episode shapes the pools can fill.

A meta-learner is chosen (early stopping, later the source-stage choice) on meta-validation
episodes. Those are only honest when their classes were never meta-trained on, so whenever a
pool has enough classes its meta-validation classes are held out whole (class-disjoint); with
fewer classes the validation episodes use fewer ways; with too few classes for that, held-out
examples of the meta-training classes stand in, and the plan says so.

Episode shapes are fitted to what the classes hold: the classic meta-learning layout (many
classes of ~20 examples) cannot fill 5 shots + 10 queries per class once a validation and a
test file are carved out of each class, so the queries shrink to what most classes have
instead of refusing. Only what cannot be sampled at all is refused (by EpisodeSampler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from data.splits import class_disjoint_splits

META_VAL_FRACTION = 0.2  # share of a pool's classes held out for meta-validation
# Below this share of the classes a fitted query count would leave out, the queries shrink further.
QUERY_FIT_PERCENTILE = 10
# A training folder with at least this many times `ways` classes is the classic meta-learning layout:
# its meta-validation classes are held out whole instead of using the same classes' validation files.
CLASSIC_LAYOUT_WAYS_MULTIPLE = 4


@dataclass(frozen=True)
class EpisodeShape:
    ways: int
    shots: int
    queries: int


@dataclass(frozen=True)
class ClassHoldout:
    """Which classes of a pool meta-train and which meta-validate (names), and how they were split."""

    meta_train: list[str]
    meta_val: list[str]
    kind: str  # "class-disjoint" | "examples" (held-out examples of the meta-training classes) | "none"
    note: str  # one sentence for the log and metadata.json


def class_counts(labels: Sequence[int]) -> np.ndarray:
    """Examples per class id present (zeros for absent ids are dropped)."""
    counts = np.bincount(np.asarray(labels, np.int64)) if len(labels) else np.zeros(0, np.int64)
    return counts[counts > 0]


def fit_training_queries(labels: Sequence[int], ways: int, shots: int, queries: int) -> int:
    """Queries per class for meta-training episodes: the asked number, or fewer when most classes hold less.

    Most = all but the smallest QUERY_FIT_PERCENTILE % of the classes that can give at least
    one query. Never below 1; when fewer than `ways` classes can give even one query the asked
    number comes back and EpisodeSampler refuses with its message (nothing can be sampled).
    """
    counts = class_counts(labels)
    usable = counts[counts >= shots + 1]
    if len(usable) < ways:
        return queries
    typical = int(np.percentile(usable, QUERY_FIT_PERCENTILE, method="lower"))
    return int(min(queries, max(1, typical - shots)))


def validation_shape(labels: Sequence[int], ways: int, shots: int, queries: int) -> EpisodeShape | None:
    """The largest episodes a (small) meta-validation pool can fill, at most the training shape.

    Fewer ways when the pool has fewer classes, fewer shots/queries when its classes are
    small; None when not even a 2-way 1-shot 1-query episode fits.
    """
    counts = np.sort(class_counts(labels))[::-1]
    counts = counts[counts >= 2]
    val_ways = min(ways, len(counts))
    if val_ways < 2:
        return None
    room = int(counts[val_ways - 1])
    val_shots = min(shots, room - 1)
    return EpisodeShape(val_ways, val_shots, min(queries, room - val_shots))


def hold_out_classes(class_names: Sequence[str], ways: int, seed: int) -> ClassHoldout:
    """Class-disjoint meta-train / meta-val classes of a pool: `ways` or 20% of the classes for
    meta-validation (whichever is more) while meta-training keeps `ways`; fewer meta-validation
    classes (fewer ways, at least 2) when the pool is smaller; kind "examples" when even that
    would leave meta-training fewer than `ways` classes."""
    names = sorted(class_names)
    n = len(names)
    if n - ways >= ways:
        held = max(ways, int(round(META_VAL_FRACTION * n)))
        held = min(held, n - ways)
    elif n - ways >= 2:
        held = min(n - ways, max(2, int(round(META_VAL_FRACTION * n))))
    else:
        return ClassHoldout(names, [], "examples",
                            f"only {n} classes for {ways}-way episodes, too few to hold classes out: "
                            "meta-validation uses held-out examples of the meta-training classes (not class-disjoint)")
    assignment = class_disjoint_splits(names, ((n - held) / n, held / n, 0.0), seed)
    meta_val = [name for name in names if assignment[name] == "meta_val"]
    fewer = f", {len(meta_val)}-way" if len(meta_val) < ways else ""
    return ClassHoldout([name for name in names if assignment[name] == "meta_train"], meta_val, "class-disjoint",
                        f"{n - len(meta_val)} meta-training classes, {len(meta_val)} class-disjoint "
                        f"meta-validation classes{fewer}")


def holdout_examples(labels: Sequence[int], seed: int, fraction: float = META_VAL_FRACTION) -> np.ndarray:
    """Boolean mask of the examples held out for meta-validation when classes cannot be:
    `fraction` of each class with 3+ examples (at least 1), by a seeded shuffle; smaller classes keep all."""
    labels = np.asarray(labels, np.int64)
    held = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 3:
            count = max(1, int(round(fraction * len(members))))
            held[rng.permutation(members)[:count]] = True
    return held
