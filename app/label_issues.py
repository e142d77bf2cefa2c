"""Likely mislabelled training files: confident learning (Northcutt, Jiang & Chuang, JAIR 2021) on
out-of-fold probabilities, in numpy (cleanlab implements the same rules but is AGPL-3.0).

1. Out-of-fold probabilities: stratified k-fold over the labelled files (train + validation);
   a strongly regularised logistic-regression head per fold on the cached backbone features
   (seconds; PENALTY_PER_EXAMPLE says why and how strong), so no file is scored by a head that
   saw its label.
2. Per-class thresholds t_j: the mean probability of class j over the files labelled j (the
   average self-confidence of that class; a hard class gets a low bar).
3. The confident joint: a file "confidently belongs" to every class j with p_j >= t_j; among
   those, the most probable one is its suggested label. A file whose suggested label differs from
   its given label is an off-diagonal entry of the confident joint: a label issue. So is a file
   whose most probable class is not its label (the paper's C_confusion baseline): measured on
   Fashion-MNIST with 5% flips, the confident joint alone misses flipped files that no class
   reaches the threshold for, and the union ranks more flips first (BENCHMARKS.md).
4. Ranking, most likely first: by 1 - p(given label) (the paper's self-confidence ranking),
   reported as `score`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from app.errors import UserError
from app.small_fits import one_thread

logger = logging.getLogger(__name__)
FOLDS = 5
# The fold heads' L2 penalty per training example (sklearn's C = 1 / (penalty x examples), so the
# penalty means the same on a folder of 30 files and of 3,000). Strong: the heads train on the noisy
# labels themselves, and a head that fits a wrong label scores it as right. Measured (mean precision
# of the first k entries, k = files flipped, 6 random flips at 5% / 10% each; bench/notes.md): the
# earlier fixed C = 0.1 gave Fashion-MNIST 0.74 / 0.74, R8 texts 0.85 / 0.83, glyphs 0.67 / 0.77;
# a penalty of 0.05 gave 0.76 / 0.77, 0.83 / 0.82, 0.69 / 0.77; 0.125 gave 0.77 / 0.79, 0.87 / 0.84,
# 0.74 / 0.79; 0.3 gave 0.79 / 0.82, 0.87 / 0.87, 0.75 / 0.79. Much stronger falls off (C = 0.0003
# on the glyphs, a penalty of 10: 0.61 / 0.65).
PENALTY_PER_EXAMPLE = 0.3
# Below this out-of-fold accuracy the list says that it holds hard files as well as wrong labels: every
# file the fold heads misclassify is listed, so with features that separate the classes weakly (a few
# texts per class: 19 of 64 clean Reuters texts listed at 0.70) most entries are hard, not mislabelled.
CLEAR_FOLD_ACCURACY = 0.95


@dataclass
class LabelIssue:
    """One entry of data_report.json `label_issues`."""

    path: str
    given: str
    suggested: str
    score: float  # 1 - out-of-fold probability of the given label

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LabelIssueRanking:
    """`find_label_issues`' result: the issues, most likely first, and how well the fold heads
    classified the held-out files (what the list can be trusted for: `caution`)."""

    issues: list[LabelIssue]
    fold_accuracy: float  # out-of-fold accuracy on the labelled files, given labels as truth
    num_files: int  # labelled files ranked (data_report.json's label_issues_note names it)

    @property
    def caution(self) -> str:
        """"" or a sentence saying that the list mixes hard files with wrong labels."""
        if self.fold_accuracy >= CLEAR_FOLD_ACCURACY or not self.issues:
            return ""
        return (f"the fold heads misclassify {1 - self.fold_accuracy:.0%} of held-out files, so the list holds hard "
                "files as well as wrong labels; check the first ones")


def too_few_for_folds(labels, class_names: list[str], folds: int = FOLDS) -> list[tuple[str, int]]:
    """Classes with fewer labelled files than folds (each fold must hold out one file of every class)."""
    counts = np.bincount(np.asarray(labels, int), minlength=len(class_names))
    return [(class_names[c], int(n)) for c, n in enumerate(counts) if n < folds]


def require_enough_for_folds(labels, class_names: list[str], folds: int = FOLDS) -> None:
    short = too_few_for_folds(labels, class_names, folds)
    if short:
        shown = ", ".join(f"{name!r} has {n}" for name, n in short)
        raise UserError(f"Label issues need at least {folds} labelled files per class ({folds}-fold out-of-fold "
                        f"predictions; train + validation files count). Received: {shown}. Add files to those "
                        "classes, or leave out --label-issues / --exclude-label-issues.")


def out_of_fold_probabilities(features: np.ndarray, labels, num_classes: int, folds: int = FOLDS,
                              seed: int = 0) -> np.ndarray:
    """[n, classes] probabilities, each row from a head trained on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    probabilities = np.zeros((len(labels), num_classes))
    with one_thread():  # app/small_fits.py: small fits run faster on one thread
        for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
            # Standardised features: the regularisation then means the same for every backbone.
            scaler = StandardScaler().fit(features[fit_rows])
            head = LogisticRegression(C=1.0 / (PENALTY_PER_EXAMPLE * len(fit_rows)), max_iter=500, random_state=seed)
            head.fit(scaler.transform(features[fit_rows]), labels[fit_rows])
            probabilities[np.ix_(held_rows, head.classes_)] = head.predict_proba(scaler.transform(features[held_rows]))
    return probabilities


def confident_learning(probabilities: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(issue row indices most likely first, suggested label per row, score per row)."""
    labels = np.asarray(labels)
    num_classes = probabilities.shape[1]
    thresholds = np.array([probabilities[labels == c, c].mean() if np.any(labels == c) else 1.0
                           for c in range(num_classes)])
    above = probabilities >= thresholds[None, :]
    # The most probable class among those the file confidently belongs to, else the most probable one.
    confident = above.any(axis=1)
    suggested = np.where(confident, np.where(above, probabilities, -np.inf).argmax(axis=1),
                         probabilities.argmax(axis=1))
    scores = 1.0 - probabilities[np.arange(len(labels)), labels]
    off_diagonal = confident & (suggested != labels)
    disagrees = probabilities.argmax(axis=1) != labels
    suggested = np.where(off_diagonal | ~disagrees, suggested, probabilities.argmax(axis=1))
    issues = np.flatnonzero(off_diagonal | disagrees)
    return issues[np.argsort(-scores[issues], kind="stable")], suggested, scores


def find_label_issues(paths: list[str], labels, features: np.ndarray, class_names: list[str],
                      seed: int = 0) -> LabelIssueRanking:
    """The label issues of labelled files, most likely first, with the fold heads' accuracy."""
    require_enough_for_folds(labels, class_names)
    probabilities = out_of_fold_probabilities(np.asarray(features), labels, len(class_names), seed=seed)
    order, suggested, scores = confident_learning(probabilities, labels)
    labels = np.asarray(labels)
    ranking = LabelIssueRanking(
        [LabelIssue(paths[i], class_names[labels[i]], class_names[suggested[i]], round(float(scores[i]), 6))
         for i in order], float(np.mean(probabilities.argmax(axis=1) == labels)), len(labels))
    logger.info("Label issues: %d of %d labelled files listed (confident learning, %d-fold; out-of-fold "
                "accuracy %.3f)%s", len(order), len(labels), FOLDS, ranking.fold_accuracy,
                f": {ranking.caution}" if ranking.caution else "")
    return ranking


def excluded_paths(issues: list[LabelIssue], setting: str) -> set[str]:
    """The files --exclude-label-issues leaves out: auto = every issue, N = the first N, 0 = none."""
    if setting == "auto":
        return {issue.path for issue in issues}
    return {issue.path for issue in issues[:int(setting)]}
