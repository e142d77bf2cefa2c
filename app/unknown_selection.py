"""Choose and fit a run's unknown-class score at training time, on training data only.

No unknown class exists at training time, so some training classes play the unknown ones. Each
leave-classes-out fold hides about 30% of the classes, fits a logistic-regression head and every
candidate score on the other classes' training embeddings, and measures how well each score
tells the hidden classes' files from the visible classes' validation files (AUROC). Every run
records these fold AUROCs (unknown.json, `selection`), so a user sees how each candidate does on
their own classes.

The default score is fixed, not the folds' winner: over 16 Fashion-MNIST class splits the folds
picked another score than energy+relative_mahalanobis on 5, and every one of those picks was
worse on the real unknown classes, never better (a fold hides only 2 of 7 classes, so its AUROC
is a noisy estimate). In 5 real runs on other Fashion-MNIST splits the folds picked another score
on 2, once 0.027 better, once 0.057 worse; on the glyph sets they picked the same, on R52 topics
energy+relative_mahalanobis was 0.068 better (median), on R8 topics 0.008 worse (BENCHMARKS.md,
"unknownscores" and "unknowns"). `--unknown-score folds` keeps the folds' choice for data unlike
these. The score is then fitted on all classes with the run's own head, and its threshold keeps
`--reject-recall` of the known validation files. Nothing here sees an evaluation folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from app.small_fits import one_thread
from app.threshold_transfer import transferred_threshold
from app.unknown_scores import SCORES, UnknownScorer, auroc, detector_threshold, fewest_files_for_recall, percent

logger = logging.getLogger(__name__)
MAX_FOLDS = 5
HELD_OUT_FRACTION = 0.3
MIN_CLASSES = 3  # two visible classes (a head needs two) and one hidden
# `auto`, and `folds` without folds (fewer than MIN_CLASSES classes): see the module docstring.
DEFAULT_SCORE = "energy+relative_mahalanobis"


@dataclass
class UnknownDetector:
    """What unknown.json holds next to the arrays of unknown.npz (see app/unknown_store.py)."""

    score: str
    threshold: float  # a file whose score is above this is reported as unknown
    reject_recall: float  # fraction of known validation files the threshold keeps
    fitted_on: str
    selection: dict = field(default_factory=dict)  # leave-classes-out AUROC per candidate

    def to_dict(self) -> dict:
        return asdict(self)


def _fold_head(embeddings: np.ndarray, labels: np.ndarray, num_classes: int, seed: int):
    """A softmax head (kernel [dim, classes], bias) for one fold: logistic regression."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=500, random_state=seed).fit(embeddings, labels)
    if num_classes == 2:  # sklearn keeps one logit for two classes; softmax([0, z]) is the same model
        return (np.stack([np.zeros(embeddings.shape[1]), model.coef_[0]], axis=1),
                np.array([0.0, model.intercept_[0]]))
    return model.coef_.T, model.intercept_


def held_out_folds(num_classes: int, seed: int) -> list[np.ndarray]:
    """Classes hidden in each fold: consecutive blocks of a seeded permutation, so every class is
    hidden about equally often."""
    hidden = max(1, round(HELD_OUT_FRACTION * num_classes))
    order = np.random.default_rng(seed).permutation(num_classes)
    folds = min(MAX_FOLDS, math.ceil(num_classes / hidden) if hidden else 1)
    return [np.sort(np.take(order, range(i * hidden, (i + 1) * hidden), mode="wrap")) for i in range(folds)]


def compare_scores(train_embeddings, train_labels, val_embeddings, val_labels, num_classes: int,
                   seed: int = 0) -> dict:
    """Leave-classes-out AUROC of every candidate score: {score: mean AUROC}, plus the folds."""
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    per_score: dict[str, list[float]] = {name: [] for name in SCORES}
    folds = held_out_folds(num_classes, seed)
    measured = 0
    for hidden in folds:
        visible = np.setdiff1d(np.arange(num_classes), hidden)
        remap = np.full(num_classes, -1)
        remap[visible] = np.arange(len(visible))
        fit_rows, query_rows = np.isin(train_labels, visible), np.isin(val_labels, visible)
        if not query_rows.any():
            continue
        kernel, bias = _fold_head(train_embeddings[fit_rows], remap[train_labels[fit_rows]], len(visible), seed)
        scorer = UnknownScorer.fit(train_embeddings[fit_rows], remap[train_labels[fit_rows]], kernel, bias, seed)
        scorer.calibrate(val_embeddings[query_rows])
        unknown = np.concatenate([train_embeddings[~fit_rows], val_embeddings[~query_rows]])
        for name in SCORES:
            per_score[name].append(auroc(scorer.score(name, val_embeddings[query_rows]), scorer.score(name, unknown)))
        measured += 1
    # "folds": the folds the means are over. A fold whose visible classes have no validation file measures
    # nothing and is skipped; it was counted, so unknown.json claimed more evidence than the choice had.
    return {"auroc": {name: round(float(np.mean(v)), 4) for name, v in per_score.items() if v},
            "folds": measured, "hidden_classes_per_fold": int(len(folds[0]))}


def folds_choice(fold_aurocs: dict, among=None) -> str | None:
    """`--unknown-score folds`: the candidate (of `among`, default all measured) with the highest mean
    leave-classes-out AUROC; None when none was measured."""
    measured = [name for name in (fold_aurocs if among is None else among) if name in fold_aurocs]
    return max(measured, key=fold_aurocs.get) if measured else None


def _warn_rejects_nothing(num_files: int, reject_recall: float) -> None:
    """A threshold no validation score can give (app/unknown_scores.detector_threshold): say so at training time,
    not first when predict.py never rejects."""
    logger.warning("The unknown-class detector rejects nothing: %d known validation file(s) are too few to set a "
                   "threshold that keeps %s%% of known files (that needs at least %d; %d files can keep at most "
                   "%s%%). Add validation files (a larger --val-fraction, or more files in the folder's val/), or train with "
                   "--reject-recall %.3g or lower.", num_files, percent(reject_recall),
                   fewest_files_for_recall(reject_recall), num_files, percent(num_files / (num_files + 1)),
                   math.floor(1000 * num_files / (num_files + 1)) / 1000)


def fit_unknown_detector(train_embeddings, train_labels, val_embeddings, val_labels, kernel, bias,
                         reject_recall: float, score: str = "auto", seed: int = 0,
                         threshold_offsets: dict[str, float] | None = None) -> tuple[UnknownScorer, UnknownDetector]:
    """The run's scorer (fitted on the training split with the run's head) and its detector settings.
    threshold_offsets: for a model that trained on the validation files, the first model's threshold per score
    (app/threshold_transfer.py); the threshold is then carried over from it instead of set on those files."""
    with one_thread():  # the fold heads and covariances: small fits, faster on one thread (app/small_fits.py)
        return _fit_unknown_detector(train_embeddings, train_labels, val_embeddings, val_labels, kernel, bias,
                                     reject_recall, score, seed, threshold_offsets)


def _fit_unknown_detector(train_embeddings, train_labels, val_embeddings, val_labels, kernel, bias,
                          reject_recall: float, score: str, seed: int,
                          threshold_offsets: dict[str, float] | None) -> tuple[UnknownScorer, UnknownDetector]:
    num_classes = kernel.shape[1]
    train_embeddings, val_embeddings = np.asarray(train_embeddings), np.asarray(val_embeddings)
    selection: dict = {}
    if num_classes >= MIN_CLASSES:
        selection = compare_scores(train_embeddings, train_labels, val_embeddings, val_labels, num_classes, seed)
    best_on_folds = folds_choice(selection.get("auroc", {}))
    if score == "auto":
        score = DEFAULT_SCORE
        selection["chosen_by"] = "the default (--unknown-score auto); the fold AUROCs are for comparison"
    elif score == "folds":
        score = best_on_folds or DEFAULT_SCORE
        selection["chosen_by"] = ("highest mean leave-classes-out AUROC (--unknown-score folds)" if best_on_folds else
                                  f"fewer than {MIN_CLASSES} classes, no classes to hold out: the default {score}")
        if not best_on_folds:  # the choice the user typed is not the one made: say so, not only in unknown.json
            logger.warning("--unknown-score folds needs at least %d classes (one hidden, two visible); this run has %d, "
                           "so it uses the default %s", MIN_CLASSES, num_classes, score)
    else:
        selection["chosen_by"] = "--unknown-score"
    scorer = UnknownScorer.fit(train_embeddings, train_labels, kernel, bias, seed)
    offset = (threshold_offsets or {}).get(score)
    # A carried-over threshold standardises on the training split, as the first model's offset was measured
    # (app/threshold_transfer.py); otherwise on the validation files, new to the model.
    scorer.calibrate(val_embeddings if offset is None else train_embeddings)
    if offset is None:
        threshold = detector_threshold(scorer.score(score, val_embeddings), reject_recall)
        kept = f"keeps {percent(reject_recall)}% of known validation files"
        if math.isinf(threshold):
            _warn_rejects_nothing(len(val_embeddings), reject_recall)
            kept = f"(none: {len(val_embeddings)} validation files are too few to keep {percent(reject_recall)}%)"
    else:
        threshold = transferred_threshold(scorer.score(score, train_embeddings), offset)
        selection["threshold_offset"] = round(offset, 6)
        kept = (f"carried over from the first model's, which kept {percent(reject_recall)}% of known validation "
                f"files it had not trained on ({offset:+.3f} interquartile ranges from the median training score)")
    logger.info("Unknown-class score: %s (leave-classes-out AUROC %s), threshold %.4g %s", score,
                selection.get("auroc", {}).get(score, "not measured"), threshold, kept)
    return scorer, UnknownDetector(score, threshold, reject_recall, "training split (arrays), validation split "
                                   "(threshold and standardisation)", selection)
