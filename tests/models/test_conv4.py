"""conv4 / conv4_gray: the classic few-shot backbone, trained from scratch, in the registry."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.backbones import get_backbone, list_backbones
from models.errors import ModelError
from models.layers import RGBToGrayscale  # importing models.layers registers it for safe_mode loading


def _pixels(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def conv4_28():
    keras.utils.set_random_seed(0)
    return get_backbone("conv4").build_features(28, "none")


def test_conv4_is_listed_and_trained_from_scratch():
    specs = {spec.name: spec for spec in list_backbones()}
    for name in ("conv4", "conv4_gray"):
        spec = specs[name]
        assert spec.modality == "image" and spec.default_weights == "none" and spec.feature_dim == 64
        assert "trained from scratch" in spec.weights_source
    assert specs["conv4"].default_size == 84 and specs["conv4_gray"].default_size == 28


@pytest.mark.parametrize("size", [16, 28, 84])
def test_feature_dim_is_64_at_any_size(size):
    model = get_backbone("conv4").build_features(size, "none")
    assert model.input_shape == (None, size, size, 3) and model.inputs[0].dtype == "uint8"
    assert model.output_shape == (None, 64)
    assert np.asarray(model(_pixels(size), training=False)).shape == (2, 64)


def test_pixels_are_scaled_to_unit_range_inside_the_model(conv4_28):
    scale = conv4_28.get_layer("scale")
    assert isinstance(scale, keras.layers.Rescaling) and scale.scale == pytest.approx(1 / 255)
    assert not any(type(layer).__name__ == "Lambda" for layer in conv4_28.layers)


def test_conv4_has_the_classic_layers(conv4_28):
    convs = [layer for layer in conv4_28.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [(64, (3, 3), "same")] * 4
    assert convs[0].kernel.shape == (3, 3, 3, 64)
    pools = [layer for layer in conv4_28.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [p.pool_size for p in pools] == [(2, 2)] * 4
    # Four poolings take 28 px to 1x1 (28 -> 14 -> 7 -> 3 -> 1): GAP equals the classic flatten here.
    assert conv4_28.get_layer("block4_pool").output.shape == (None, 1, 1, 64)


def test_batch_norm_momentum_is_0_9(conv4_28):
    norms = [layer for layer in conv4_28.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 4 and all(norm.momentum == pytest.approx(0.9) for norm in norms)


def test_four_blocks_and_top_block(conv4_28):
    spec = get_backbone("conv4")
    groups = spec.blocks(conv4_28)
    assert len(groups) == 4
    for index, group in enumerate(groups, start=1):
        assert [layer.name for layer in group[:4]] == [f"block{index}_{part}" for part in ("conv", "bn", "relu", "pool")]
    top = spec.top_blocks(conv4_28, 1)
    # The trailing global pooling has no weights; it joins the last block (blocks.py's rule).
    assert [layer.name for layer in top] == ["block4_conv", "block4_bn", "block4_relu", "block4_pool", "global_pool"]
    assert len(spec.top_blocks(conv4_28, 4)) == 17


def test_grayscale_variant_takes_rgb_pixels():
    keras.utils.set_random_seed(0)
    model = get_backbone("conv4_gray").build_features(28, "none")
    assert model.input_shape == (None, 28, 28, 3)
    assert model.get_layer("block1_conv").kernel.shape == (3, 3, 1, 64)
    assert np.asarray(model(_pixels(28), training=False)).shape == (2, 64)
    # Grey pixels (R = G = B) keep their value: the luma weights sum to 1.
    grey = np.full((1, 4, 4, 3), 200, np.uint8)
    np.testing.assert_allclose(np.asarray(RGBToGrayscale()(grey)), np.full((1, 4, 4, 1), 200.0), rtol=1e-6)
    red = np.zeros((1, 1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert float(np.asarray(RGBToGrayscale()(red)).squeeze()) == pytest.approx(0.299 * 255, rel=1e-5)
    with pytest.raises(ValueError, match="3 input channels"):
        RGBToGrayscale()(np.zeros((1, 2, 2, 4), np.float32))


@pytest.mark.parametrize("name", ["conv4", "conv4_gray"])
def test_save_load_safe_mode_gives_identical_outputs(name, tmp_path):
    keras.utils.set_random_seed(1)
    model = get_backbone(name).build_features(28, "none")
    batch = _pixels(28, n=3, seed=2)
    # Move BatchNorm statistics away from their initial values so the round trip really checks them.
    model(batch, training=True)
    before = np.asarray(model(batch, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(batch, training=False)), before)


def test_weights_file_round_trip_and_missing_file(tmp_path, conv4_28):
    path = tmp_path / "conv4.weights.h5"
    conv4_28.save_weights(str(path))
    keras.utils.set_random_seed(9)
    loaded = get_backbone("conv4").build_features(28, str(path))
    batch = _pixels(28)
    np.testing.assert_array_equal(np.asarray(loaded(batch)), np.asarray(conv4_28(batch)))
    with pytest.raises(ModelError, match="no such file"):
        get_backbone("conv4").build_features(28, str(tmp_path / "missing.weights.h5"))


@pytest.mark.parametrize("weights", ["imagenet", "pretrained"])
def test_pretrained_weights_are_refused_clearly(weights):
    with pytest.raises(ModelError) as info:
        get_backbone("conv4").build_features(28, weights)
    message = str(info.value)
    assert "no pretrained weights" in message and "trained from scratch" in message
    assert f"Received: weights={weights!r}" in message and "--weights none" in message


def test_too_small_images_are_refused():
    with pytest.raises(ModelError, match="at least 16 px.*Received: image_size=12"):
        get_backbone("conv4_gray").build_features(12, "none")
