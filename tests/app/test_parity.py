"""The parity rules of exports (app/parity.py): float formats by agreement, quantized ones by accuracy."""

import numpy as np

from app.parity import MAX_QUANTIZED_ACCURACY_DROP, MIN_FLOAT_AGREEMENT, ParityReport, compare


def _one_hot(predicted, classes=3):
    return np.eye(classes)[predicted] * 0.9 + 0.1 / classes


def test_float_rule_counts_top1_agreement_not_accuracy():
    labels = [0] * 1000
    reference = _one_hot([0] * 1000)
    flipped = _one_hot([1] * 4 + [0] * 996)  # 99.6% agreement: passes
    assert compare("x", reference, flipped, labels, ["f"] * 1000, quantized=False).passed
    flipped = _one_hot([1] * 6 + [0] * 994)  # 99.4%: fails, and names the files that differ
    check = compare("x", reference, flipped, labels, [f"f{i}" for i in range(1000)], quantized=False)
    assert not check.passed and check.top1_agreement == 0.994 < MIN_FLOAT_AGREEMENT
    assert check.disagreements == [f"f{i}" for i in range(6)]


def test_quantized_rule_allows_two_accuracy_points_and_any_gain():
    labels = [0] * 100
    reference = _one_hot([0] * 90 + [1] * 10)  # accuracy 0.90
    assert compare("q", reference, _one_hot([0] * 88 + [1] * 12), labels, ["f"] * 100, quantized=True).passed
    lost = compare("q", reference, _one_hot([0] * 87 + [1] * 13), labels, ["f"] * 100, quantized=True)
    assert not lost.passed and round(lost.accuracy_keras - lost.accuracy_artifact, 6) > MAX_QUANTIZED_ACCURACY_DROP
    assert compare("q", reference, _one_hot([0] * 100), labels, ["f"] * 100, quantized=True).passed


def test_report_passes_only_when_every_check_passes():
    good = compare("a", _one_hot([0, 1]), _one_hot([0, 1]), [0, 1], ["a", "b"], quantized=False)
    bad = compare("b", _one_hot([0, 1]), _one_hot([1, 1]), [0, 1], ["a", "b"], quantized=False)
    report = ParityReport("savedmodel", "none", "x", "run", ["a", "b"], {}, "2 files", [good])
    assert report.passed and report.to_json()["passed"] is True
    report.checks.append(bad)
    assert not report.passed and report.to_json()["checks"][1]["disagreements"] == ["a"]
