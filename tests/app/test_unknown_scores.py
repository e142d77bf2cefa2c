"""The unknown-class scores, their choice on leave-classes-out folds, the threshold, the stored form."""

import numpy as np
import pytest

from app.config import CHOICES
from app.unknown_scores import SCORES, UnknownScorer, auroc, fpr_at_tpr, threshold_for_recall
from app.unknown_selection import DEFAULT_SCORE, compare_scores, fit_unknown_detector, held_out_folds
from app.unknown_store import load_detector, save_detector


def clusters(rng, centres, per_class, spread=0.3):
    x = np.concatenate([c + spread * rng.normal(size=(per_class, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per_class)


def softmax_head(centres, temperature=4.0):
    """A head whose logits prefer the nearest centre (squared distance is linear in x)."""
    centres = np.asarray(centres)
    return 2 * centres.T / temperature, -(centres ** 2).sum(axis=1) / temperature


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(6, 16))
    known = centres[:4]
    train, train_labels = clusters(rng, known, 40)
    val, val_labels = clusters(rng, known, 10)
    # Unknown classes between two known ones: far from every training point, and the head hesitates.
    far, _ = clusters(rng, [(known[0] + known[1]) / 2, (known[2] + known[3]) / 2], 20)
    return known, train, train_labels, val, val_labels, far


def test_auroc_and_fpr_on_known_orderings():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    known = np.arange(100.0)
    assert threshold_for_recall(known, 0.95) == 95.0  # 96 of 100 at or below: at least 95% kept
    assert fpr_at_tpr(known, np.array([50.0, 200.0]), 0.95) == 0.5


@pytest.mark.parametrize("name", SCORES)
def test_every_score_ranks_far_clusters_above_known_ones(world, name):
    known, train, train_labels, val, val_labels, far = world
    scorer = UnknownScorer.fit(train, train_labels, *softmax_head(known))
    scorer.calibrate(val)
    assert auroc(scorer.score(name, val), scorer.score(name, far)) > 0.9


def test_folds_hide_every_class_and_selection_reports_every_candidate(world):
    folds = held_out_folds(10, seed=3)
    assert all(len(f) == 3 for f in folds) and len(folds) == 4
    assert set(np.concatenate(folds)) == set(range(10))
    _, train, train_labels, val, val_labels, _ = world
    result = compare_scores(train, train_labels, val, val_labels, 4)
    assert set(result["auroc"]) == set(SCORES) and result["folds"] >= 1
    assert all(0.0 <= v <= 1.0 for v in result["auroc"].values())


def test_selection_counts_only_the_folds_it_measured(world):
    """A fold whose visible classes have no validation file is skipped; unknown.json counted it anyway."""
    _, train, train_labels, val, val_labels, _ = world
    only_class_0 = np.asarray(val_labels) == 0
    assert len(held_out_folds(4, seed=0)) == 4  # one class hidden per fold: hiding class 0 leaves no query
    result = compare_scores(train, train_labels, val[only_class_0], np.asarray(val_labels)[only_class_0], 4)
    assert result["folds"] == 3


def test_detector_threshold_keeps_the_asked_fraction_of_validation(world):
    known, train, train_labels, val, val_labels, far = world
    scorer, detector = fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.9)
    # auto: the fixed default, with every candidate's fold AUROC recorded next to it for comparison
    assert detector.score == DEFAULT_SCORE and "default" in detector.selection["chosen_by"]
    assert set(detector.selection["auroc"]) == set(SCORES)
    kept = np.mean(scorer.score(detector.score, val) <= detector.threshold)
    assert kept >= 0.9
    assert np.mean(scorer.score(detector.score, far) > detector.threshold) > 0.9


def test_folds_choose_the_best_fold_auroc(world):
    known, train, train_labels, val, val_labels, _ = world
    _, detector = fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95,
                                       score="folds")
    measured = detector.selection["auroc"]
    assert detector.score in SCORES and measured[detector.score] == max(measured.values())
    assert "leave-classes-out" in detector.selection["chosen_by"]


def test_two_classes_fall_back_without_folds(world, caplog):
    known, train, train_labels, val, val_labels, _ = world
    rows, val_rows = train_labels < 2, val_labels < 2
    for score in ("auto", "folds"):
        _, detector = fit_unknown_detector(train[rows], train_labels[rows], val[val_rows], val_labels[val_rows],
                                           *softmax_head(known[:2]), 0.95, score=score)
        assert detector.score == DEFAULT_SCORE and "auroc" not in detector.selection
    assert "fewer than" in detector.selection["chosen_by"]
    # The asked-for folds choice was not made: a warning says so (it was an INFO line's "not measured").
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"--unknown-score folds needs at least 3 classes (one hidden, two visible); this run has 2, so it uses the "
        f"default {DEFAULT_SCORE}"]


def test_store_round_trip_gives_identical_scores(world, tmp_path):
    known, train, train_labels, val, val_labels, far = world
    scorer, detector = fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95)
    save_detector(tmp_path, scorer, detector)
    loaded, settings = load_detector(tmp_path)
    assert settings == detector
    for name in SCORES:
        assert np.allclose(loaded.score(name, far), scorer.score(name, far))
    (tmp_path / "without").mkdir()
    assert load_detector(tmp_path / "without") is None  # a run trained without one (an older metatune)


def test_cli_choices_match_the_scores():
    assert CHOICES["unknown_score"] == ("auto", "folds", *SCORES)


def test_relative_mahalanobis_separates_an_unseen_cluster_between_known_ones():
    """2-D: two known classes far apart along x; an unseen cluster half-way between them is close
    to the training data as a whole (the background Gaussian) but far from each class: the
    relative distance puts it above every-day known points."""
    rng = np.random.default_rng(1)
    known = np.array([[-4.0, 0.0], [4.0, 0.0]])
    train, labels = clusters(rng, known, 100, spread=0.5)
    test, _ = clusters(rng, known, 50, spread=0.5)
    unseen, _ = clusters(rng, [[0.0, 0.0]], 50, spread=0.5)
    scorer = UnknownScorer.fit(train, labels, *softmax_head(known))
    scores = scorer.score("relative_mahalanobis", np.concatenate([test, unseen]))
    assert auroc(scores[:len(test)], scores[len(test):]) > 0.95
    # The background term is what makes it relative: the same point scores lower than with the class term alone.
    assert np.all(scores <= scorer.score("mahalanobis", np.concatenate([test, unseen])) + 1e-9)


def test_detector_saved_before_relative_mahalanobis_still_loads(world, tmp_path):
    """An unknown.npz without the background arrays (an older metatune): its own score still works,
    the new ones report themselves unavailable instead of failing evaluate.py's comparison."""
    known, train, train_labels, val, val_labels, far = world
    scorer, detector = fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95,
                                            score="knn")
    scorer.background_mean = scorer.background_whitening = None
    save_detector(tmp_path, scorer, detector)
    with np.load(tmp_path / "unknown.npz") as stored:
        assert "background_whitening" not in stored.files
    loaded, _ = load_detector(tmp_path)
    assert np.allclose(loaded.score("knn", far), scorer.score("knn", far))
    assert not loaded.available("relative_mahalanobis") and not loaded.available("energy+relative_mahalanobis")
    assert loaded.available("mahalanobis")


@pytest.mark.parametrize("threshold", ["x", float("nan"), float("-inf"), True])
def test_a_stored_threshold_that_is_not_a_number_is_a_damaged_detector(world, tmp_path, threshold):
    import json

    from app.errors import UserError

    known, train, train_labels, val, val_labels, far = world
    save_detector(tmp_path, *fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95))
    stored = json.loads((tmp_path / "unknown.json").read_text())
    (tmp_path / "unknown.json").write_text(json.dumps({**stored, "threshold": threshold}))
    with pytest.raises(UserError, match="unknown.json .*threshold must be a finite number or null"):
        load_detector(tmp_path)


def test_stored_arrays_that_do_not_fit_the_model_are_a_damaged_detector(world, tmp_path):
    """Another run's unknown.npz (another embedding size) was a numpy matmul traceback at the first score."""
    from app.errors import UserError

    known, train, train_labels, val, val_labels, far = world
    scorer, detector = fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95)
    save_detector(tmp_path, scorer, detector)
    assert load_detector(tmp_path, (16, 4)) is not None  # the world's embedding size and classes
    with pytest.raises(UserError, match=r"unknown.npz .*kernel has shape \(16, 4\), the model's head \(8, 4\)"):
        load_detector(tmp_path, (8, 4))
    scorer.bank = scorer.bank[:, :8]  # arrays that disagree among themselves
    save_detector(tmp_path, scorer, detector)
    with pytest.raises(UserError, match=r"bank has shape \(\d+, 8\), expected \(files, 16\)"):
        load_detector(tmp_path)


def _rewrite_arrays(folder, change):
    """unknown.npz rewritten with `change(arrays)` applied (a damaged or hand-edited file)."""
    with np.load(folder / "unknown.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    change(arrays)
    np.savez(folder / "unknown.npz", **arrays)


@pytest.mark.parametrize("change, named", [
    # Each was a traceback in predict.py, evaluate.py --unknown and export.py.
    (lambda arrays: arrays.pop("kernel"), "incomplete: .*kernel"),
    (lambda arrays: arrays.update(standardise_names=arrays["standardise_names"][:2],
                                  standardise=arrays["standardise"][:2]), "incomplete: energy\\+relative_mahalanobis"),
    # NaN scores accepted every file and printed NaN into predict.py's JSON; the export's parity check passed.
    (lambda arrays: arrays.update(whitening=np.full_like(arrays["whitening"], np.nan)), "whitening holds values"),
    (lambda arrays: arrays.update(standardise=np.zeros_like(arrays["standardise"])), "standardisation of"),
])
def test_stored_arrays_that_are_incomplete_or_not_finite_are_a_damaged_detector(world, tmp_path, change, named):
    from app.errors import UserError

    known, train, train_labels, val, val_labels, far = world
    save_detector(tmp_path, *fit_unknown_detector(train, train_labels, val, val_labels, *softmax_head(known), 0.95))
    _rewrite_arrays(tmp_path, change)
    with pytest.raises(UserError, match=f"damaged run directory: unknown.npz .*{named}") as error:
        load_detector(tmp_path)
    assert "--reject none" in str(error.value)
