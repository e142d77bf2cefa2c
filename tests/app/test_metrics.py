import numpy as np
import pytest

from app.metrics import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    macro_f1_score,
    most_confused_pairs,
    top_k_accuracy,
)

NAMES = ["a", "b", "c"]


def one_hot_probabilities(predicted, num_classes=3, confidence=1.0):
    probabilities = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_hand_computed_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(y_true, one_hot_probabilities(y_pred), NAMES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (metrics["per_class"][n] for n in NAMES)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    f1 = [0.8, 0.5, 2 / 3]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["weighted_f1"] == pytest.approx(np.average(f1, weights=[3, 2, 1]))
    assert metrics["num_examples"] == 6 and metrics["class_names"] == NAMES
    required = {"accuracy", "top_k_accuracy", "k", "macro_f1", "weighted_f1", "per_class",
                "confusion_matrix", "class_names", "ece", "num_examples"}
    assert required <= set(metrics)


def test_k_is_capped_at_number_of_classes_and_top_k_counts_hits():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    metrics = classification_metrics([1, 0], probabilities, NAMES, k=5)
    assert metrics["k"] == 3 and metrics["top_k_accuracy"] == 1.0
    assert top_k_accuracy(np.array([1, 0]), probabilities, 2) == 0.5
    assert top_k_accuracy(np.array([1, 0]), probabilities, 1) == 0.0


def test_ece_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    y_true = np.array([0, 1, 2, 0])
    assert expected_calibration_error(y_true, one_hot_probabilities(y_true)) == pytest.approx(0.0)
    wrong = np.array([1, 2, 0, 1])
    assert expected_calibration_error(y_true, one_hot_probabilities(wrong, confidence=0.9)) == pytest.approx(0.9)


def test_confusion_rows_are_true_labels_and_pairs_sorted():
    matrix = confusion_matrix(np.array([0, 0, 0, 2]), np.array([1, 1, 2, 2]), 3)
    assert matrix.tolist() == [[0, 2, 1], [0, 0, 0], [0, 0, 1]]
    assert most_confused_pairs(matrix, NAMES) == [("a", "b", 2), ("a", "c", 1)]


def test_macro_f1_ignores_classes_neither_in_the_data_nor_predicted():
    metrics = classification_metrics([0, 1], one_hot_probabilities(np.array([0, 1])), NAMES)
    assert metrics["macro_f1"] == 1.0
    assert metrics["per_class"]["c"]["support"] == 0


def test_macro_f1_counts_a_predicted_class_without_files_as_zero_like_scikit_learn():
    from sklearn.metrics import f1_score

    y_true, y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 1]), np.array([0, 2, 2, 1, 1, 2, 0, 1])
    metrics = classification_metrics(y_true, one_hot_probabilities(y_pred), NAMES)
    assert metrics["per_class"]["c"]["support"] == 0 and metrics["per_class"]["c"]["f1"] == 0.0
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["macro_f1"] < metrics["accuracy"]  # the 3 files wrongly called c cost c's F1 too
    assert macro_f1_score(y_true, y_pred, 3) == pytest.approx(metrics["macro_f1"])  # the bootstrap's


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="Received"):
        classification_metrics([0, 1], np.ones((2, 2)) / 2, NAMES)
