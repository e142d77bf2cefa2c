"""The head computes in float32 under a mixed policy, and survives a save/load round trip."""

import keras
import numpy as np
import pytest

from models.heads import ClassificationHead


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("hidden_units", [0, 5])
def test_head_stays_float32_under_mixed_precision_and_round_trips(mixed_float16, tmp_path, hidden_units):
    inputs = keras.Input(shape=(4,))
    body = keras.layers.Dense(8, name="body")
    head = ClassificationHead(3, seed=1, hidden_units=hidden_units)
    model = keras.Model(inputs, head(body(inputs)))

    assert body.compute_dtype == "float16"  # the policy is active: the body computes in float16...
    assert model.output.dtype == "float32"  # ...but the probabilities come out float32
    for layer in head.layers:
        assert layer.compute_dtype == "float32"
        assert all(v.dtype == "float32" for v in layer.weights)

    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    assert expected.dtype == np.float32
    np.testing.assert_allclose(expected.sum(axis=-1), 1.0, rtol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("head_dense").compute_dtype == "float32"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_features_model_output_is_float32_under_mixed_precision(mixed_float16):
    head_model = ClassificationHead(4, seed=0).features_model(16)
    assert head_model.output.dtype == "float32"
