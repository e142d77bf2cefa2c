import numpy as np
import pytest

from app.calibration import apply_temperature, fit_temperature, negative_log_likelihood
from app.metrics import bootstrap_ci95, expected_calibration_error, reliability_bins


def _synthetic(temperature_true: float, n: int = 3000, k: int = 5, seed: int = 0):
    """Labels drawn from softmax(logits / T); the model reports softmax(logits): miscalibrated by T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3
    calibrated = np.exp(logits / temperature_true)
    calibrated /= calibrated.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in calibrated])
    reported = np.exp(logits)
    return reported / reported.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_miscalibration(true_t):
    probabilities, labels = _synthetic(true_t)
    assert fit_temperature(probabilities, labels) == pytest.approx(true_t, rel=0.15)


def test_temperature_scaling_lowers_nll_and_ece_and_keeps_predictions():
    probabilities, labels = _synthetic(3.0)
    scaled = apply_temperature(probabilities, fit_temperature(probabilities, labels))
    assert negative_log_likelihood(scaled, labels) < negative_log_likelihood(probabilities, labels)
    assert expected_calibration_error(labels, scaled) < expected_calibration_error(labels, probabilities)
    np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-9)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 2000):
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
        ci = bootstrap_ci95(y, pred, 3, resamples=300)
        accuracy = np.mean(y == pred)
        assert ci["accuracy"][0] <= accuracy <= ci["accuracy"][1]
        assert ci["macro_f1"][0] <= ci["macro_f1"][1]
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert widths[1] < widths[0] / 3
    assert bootstrap_ci95(y, pred, 3, resamples=100, seed=7) == bootstrap_ci95(y, pred, 3, resamples=100, seed=7)


def test_reliability_bins_cover_every_example():
    probabilities, labels = _synthetic(1.0, n=500)
    bins = reliability_bins(labels, probabilities)
    assert sum(b["count"] for b in bins) == 500
    assert all(b["low"] < b["high"] for b in bins)
    for b in bins:
        if b["count"]:
            assert b["low"] <= b["confidence"] <= b["high"] + 1e-12
