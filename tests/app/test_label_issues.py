"""Confident learning on out-of-fold probabilities: flipped labels come first, the rules hold."""

import numpy as np
import pytest

from app.errors import UserError
from app.label_issues import LabelIssue, confident_learning, excluded_paths, find_label_issues


def noisy_clusters(seed=0, classes=4, per_class=30, flips=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, 12))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), 12))
    flipped = rng.choice(len(labels), flips, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, flips)) % classes
    return features, labels, noisy, flipped


def test_flipped_labels_lead_the_list_with_their_true_class_suggested():
    features, truth, noisy, flipped = noisy_clusters()
    names = ["a", "b", "c", "d"]
    paths = [f"f{i}.png" for i in range(len(noisy))]
    issues = find_label_issues(paths, noisy, features, names).issues
    top = issues[:len(flipped)]
    assert sum(int(i.path[1:-4]) in set(flipped) for i in top) >= 0.8 * len(flipped)
    for issue in top:
        row = int(issue.path[1:-4])
        assert issue.given == names[noisy[row]]
        if row in flipped:
            assert issue.suggested == names[truth[row]]
    assert [i.score for i in issues] == sorted((i.score for i in issues), reverse=True)


def test_confident_joint_rules_on_a_hand_made_example():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.7, 0.3], [0.5, 0.5]])
    labels = np.array([0, 0, 1, 1, 0])
    # thresholds: class 0 mean(0.9, 0.8, 0.5) = 0.733, class 1 mean(0.7, 0.3) = 0.5
    order, suggested, scores = confident_learning(probabilities, labels)
    # row 3 (labelled 1) reaches neither threshold (0.7 < 0.733, 0.3 < 0.5) but its most probable class
    # is 0: an issue by disagreement; row 4 (labelled 0) only reaches class 1's bar: off-diagonal.
    assert suggested.tolist() == [0, 0, 1, 0, 1]
    assert order.tolist() == [3, 4]  # 1 - p(given): 0.7, then 0.5
    assert np.allclose(scores, [0.1, 0.2, 0.3, 0.7, 0.5])


def test_exclusion_settings():
    issues = [LabelIssue(f"p{i}", "a", "b", 1 - i / 10) for i in range(5)]
    assert excluded_paths(issues, "auto") == {f"p{i}" for i in range(5)}
    assert excluded_paths(issues, "2") == {"p0", "p1"}
    assert excluded_paths(issues, "0") == set()


def test_too_few_files_per_class_is_a_clear_error():
    features, _, noisy, _ = noisy_clusters(per_class=3, flips=0)
    with pytest.raises(UserError, match=r"at least 5 labelled files per class.*'a' has 3"):
        find_label_issues([str(i) for i in range(len(noisy))], noisy, features, ["a", "b", "c", "d"])


@pytest.mark.parametrize("scale", [1, 10])
def test_a_small_clean_class_is_not_listed_for_being_small(scale):
    """The fold heads' penalty is per example: on a folder of a few files it does not drown the data in
    the prior (a fixed strong C would: files of the smallest class then look mislabelled), and on
    ten times more files the same clean clusters are still clean."""
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(3, 12))
    labels = np.repeat(np.arange(3), np.array([8, 24, 24]) * scale)
    features = centres[labels] + rng.normal(size=(len(labels), 12))
    issues = find_label_issues([f"f{i}.png" for i in range(len(labels))], labels, features, ["few", "b", "c"]).issues
    assert [i for i in issues if i.given == "few"] == []


def test_the_ranking_says_when_its_list_mixes_hard_files_with_wrong_labels():
    """Every file the fold heads misclassify is listed: on classes the features barely separate, the list
    says so (and how often the heads were wrong) instead of calling them all mislabelled."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 20)
    for spread, clear in ((8.0, True), (0.4, False)):
        centres = rng.normal(scale=spread, size=(3, 12))
        features = centres[labels] + rng.normal(size=(len(labels), 12))
        ranking = find_label_issues([f"f{i}" for i in range(len(labels))], labels, features, ["a", "b", "c"])
        assert ranking.num_files == 60 and 0.0 <= ranking.fold_accuracy <= 1.0
        # Clean labels: the issues are exactly the files the fold heads got wrong (or confidently elsewhere).
        assert len(ranking.issues) >= round((1 - ranking.fold_accuracy) * 60)
        if clear:
            assert ranking.fold_accuracy >= 0.95 and ranking.caution == ""
        else:
            assert ranking.fold_accuracy < 0.8 and len(ranking.issues) > 10
            assert f"misclassify {1 - ranking.fold_accuracy:.0%} of held-out files" in ranking.caution
