"""EfficientNet-Lite0: the Keras network, weight conversion/caching, and the registry."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.backbones import BACKBONES, get_backbone
from models.backbones.efficientnet_lite import IMAGENET_CLASSES, NUM_FEATURES, build_efficientnet_lite0
from models.errors import ModelError
from models.weights import efficientnet_lite0 as lite_weights
from models.weights.efficientnet_lite0 import (
    BOOKKEEPING_SUFFIX,
    assign_weights,
    convert_state_dict,
    load_converted_weights,
    packaged_checkpoint_path,
)
from models.weights.torch_legacy import load_legacy_state_dict

LOGGER_NAME = "models.weights.efficientnet_lite0"


@pytest.fixture(scope="module")
def state_dict():
    return load_legacy_state_dict(packaged_checkpoint_path())


@pytest.fixture(scope="module")
def converted(state_dict):
    return convert_state_dict(state_dict)


@pytest.fixture(scope="module")
def imagenet_model(converted):
    model = build_efficientnet_lite0(include_top=True)
    assign_weights(model, converted[0])
    return model


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(cache))
    return cache


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def _assert_same_layers(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for x, y in zip(a[name], b[name]):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), name


# --------------------------------------------------------------------------- conversion


def test_conversion_consumes_every_tensor(state_dict, converted):
    layers, consumed = converted
    assert consumed == set(state_dict)
    weights = [k for k in state_dict if not k.endswith(BOOKKEEPING_SUFFIX)]
    bookkeeping = set(state_dict) - set(weights)
    assert bookkeeping and all(k.endswith("num_batches_tracked") for k in bookkeeping)
    # every non-bookkeeping tensor became exactly one Keras weight array: same count,
    # same total number of values, same multiset of element counts
    arrays = [a for values in layers.values() for a in values]
    assert len(arrays) == len(weights)
    assert sorted(a.size for a in arrays) == sorted(state_dict[k].size for k in weights)
    assert sum(float(a.astype(np.float64).sum()) for a in arrays) == pytest.approx(
        sum(float(state_dict[k].astype(np.float64).sum()) for k in weights), rel=1e-9
    )


def test_conversion_layouts(state_dict, converted):
    layers, _ = converted
    stem = state_dict["_conv_stem.weight"]  # (out, in, kh, kw)
    np.testing.assert_array_equal(layers["stem_conv"][0], stem.transpose(2, 3, 1, 0))
    assert layers["stem_conv"][0][1, 2, 0, 5] == stem[5, 0, 1, 2]
    depthwise = state_dict["_blocks.3._depthwise_conv.weight"]  # (channels, 1, kh, kw)
    assert layers["block3_dwconv"][0].shape == (depthwise.shape[2], depthwise.shape[3], depthwise.shape[0], 1)
    assert layers["block3_dwconv"][0][0, 1, 7, 0] == depthwise[7, 0, 0, 1]
    np.testing.assert_array_equal(layers["classifier"][0], state_dict["_fc.weight"].T)
    np.testing.assert_array_equal(layers["classifier"][1], state_dict["_fc.bias"])
    gamma, beta, mean, var = layers["head_bn"]
    np.testing.assert_array_equal(gamma, state_dict["_bn1.weight"])
    np.testing.assert_array_equal(var, state_dict["_bn1.running_var"])


def test_conversion_rejects_unknown_and_missing_tensors(state_dict):
    extra = dict(state_dict)
    extra["_blocks.99._se_reduce.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError, match="_se_reduce"):
        convert_state_dict(extra)
    missing = dict(state_dict)
    del missing["_blocks.5._bn2.running_mean"]
    with pytest.raises(KeyError, match="_blocks.5._bn2.running_mean"):
        convert_state_dict(missing)


def test_every_weighted_layer_gets_matching_weights(converted, imagenet_model):
    layers, _ = converted
    weighted = _weighted_layers(imagenet_model)
    assert {layer.name for layer in weighted} == set(layers)  # nothing missing, nothing left over
    for layer in weighted:
        expected = [tuple(w.shape) for w in layer.weights]
        assert [a.shape for a in layers[layer.name]] == expected, layer.name
        for actual, wanted in zip(layer.get_weights(), layers[layer.name]):
            np.testing.assert_array_equal(actual, wanted)


def test_assign_weights_fails_on_gaps_and_shape_mismatches(converted):
    layers, _ = converted
    model = build_efficientnet_lite0(input_shape=(32, 32, 3), include_top=False)
    assert "classifier" not in {layer.name for layer in model.layers}
    gap = {k: v for k, v in layers.items() if k != "block7_dwconv"}
    with pytest.raises(ValueError, match="block7_dwconv"):
        assign_weights(model, gap)
    wrong = dict(layers)
    wrong["stem_conv"] = [np.zeros((3, 3, 3, 16), np.float32)]
    with pytest.raises(ValueError):
        assign_weights(model, wrong)


def _imagenet_input(photo: np.ndarray) -> np.ndarray:
    image = Image.fromarray(photo)
    width, height = image.size
    scale = 256 / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    width, height = image.size
    left, top = (width - 224) // 2, (height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    return (np.asarray(image, np.float32) - 127.0) / 128.0


def test_imagenet_predictions_on_real_photos(imagenet_model):
    skimage_data = pytest.importorskip("skimage.data")
    batch = np.stack([_imagenet_input(skimage_data.chelsea()), _imagenet_input(skimage_data.coffee())])
    assert batch.shape == (2, 224, 224, 3)

    logits = np.asarray(imagenet_model(batch, training=False))

    assert logits.shape == (2, IMAGENET_CLASSES)
    cat_class, coffee_class = logits.argmax(axis=1)
    assert 281 <= cat_class <= 285, f"chelsea predicted as class {cat_class}"
    assert coffee_class == 967, f"coffee predicted as class {coffee_class}"  # espresso


# --------------------------------------------------------------------------- cache


def _features(layers, image):
    model = build_efficientnet_lite0(input_shape=image.shape, include_top=False)
    assign_weights(model, layers)
    return np.asarray(model(image[None], training=False))


def test_cached_and_fresh_weights_are_identical(fresh_cache, monkeypatch):
    first = load_converted_weights(use_cache=True)
    cached_files = list((fresh_cache / "weights").glob("*.npz"))
    assert len(cached_files) == 1
    assert os.path.realpath(cached_files[0]).startswith(os.path.realpath(fresh_cache))

    # prove the second call reads the cache: conversion from the torch file would fail now
    def no_conversion(path):
        raise AssertionError("converted again instead of reading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(lite_weights, "load_legacy_state_dict", no_conversion)
        from_cache = load_converted_weights(use_cache=True)
    fresh = load_converted_weights(use_cache=False)

    _assert_same_layers(from_cache, fresh)
    _assert_same_layers(first, fresh)

    image = np.random.default_rng(0).uniform(-1.0, 1.0, (32, 32, 3)).astype(np.float32)
    features_cached = _features(from_cache, image)
    features_fresh = _features(fresh, image)
    assert features_cached.shape == (1, NUM_FEATURES)
    assert np.array_equal(features_cached, features_fresh)  # bitwise
    assert np.abs(features_cached).sum() > 0


def test_use_cache_false_neither_reads_nor_writes_the_cache(fresh_cache):
    load_converted_weights(use_cache=False)
    assert not (fresh_cache / "weights").exists()


def _corrupt_garbage(raw: bytes) -> bytes:
    return b"definitely not an npz archive" * 100


def _corrupt_truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _corrupt_single_npy(raw: bytes) -> bytes:
    """A lone .npy array under the cache's name: np.load gives an array, which `with` then failed on (TypeError,
    a traceback that stopped every image run)."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3, np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_corrupt_garbage, id="garbage"),
        pytest.param(_corrupt_truncated, id="truncated-zip"),
        pytest.param(_corrupt_single_npy, id="single-npy"),
    ],
)
def test_corrupt_cache_is_ignored_with_a_warning_and_reconverted(fresh_cache, caplog, corrupt):
    good = load_converted_weights(use_cache=True)
    (path,) = (fresh_cache / "weights").glob("*.npz")
    path.write_bytes(corrupt(path.read_bytes()))

    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        again = load_converted_weights(use_cache=True)

    _assert_same_layers(again, good)
    warnings = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]
    assert warnings and "unreadable weight cache" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()
    # the cache was rewritten with valid contents
    with np.load(path, allow_pickle=False) as archive:
        assert "stem_conv/0" in archive.files


def test_a_cache_that_does_not_fit_and_cannot_be_removed_is_bypassed(fresh_cache, caplog, monkeypatch):
    """A cache that does not fit the model (a layer missing) is removed and rebuilt; where it could not be removed
    (a read-only cache folder) the run stopped on a bare PermissionError. Now it converts without the cache."""
    good = load_converted_weights(use_cache=True)
    (path,) = (fresh_cache / "weights").glob("*.npz")
    np.savez(path, **{f"{name}/{i}": v for name, values in good.items() if name != "stem_conv"
                      for i, v in enumerate(values)})
    damaged = path.read_bytes()
    real_unlink = Path.unlink

    def read_only_unlink(self, missing_ok=False):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    monkeypatch.setattr(lite_weights, "_save_npz_atomically", lambda *_: (_ for _ in ()).throw(
        AssertionError("wrote the cache it was told it cannot remove")))
    model = build_efficientnet_lite0(include_top=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        lite_weights.assign_pretrained_weights(model)
    for layer in _weighted_layers(model):
        _assert_same_layers({layer.name: [np.asarray(w) for w in layer.get_weights()]}, {layer.name: good[layer.name]})
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert any("does not fit the model" in m for m in messages)
    assert any("Could not remove the weight cache" in m and "converting without the cache" in m for m in messages)
    assert path.read_bytes() == damaged  # left as it was: nothing was half-written over it


# --------------------------------------------------------------------------- registry


def test_unknown_backbone_lists_available_names():
    with pytest.raises(ModelError) as info:
        get_backbone("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name, spec in BACKBONES.items():
        assert (name in message) != spec.tests_only  # tests-only backbones are not advertised
    assert isinstance(info.value, ValueError)


def test_registry_feature_extractor_random_weights():
    spec = get_backbone("efficientnet_lite0")
    assert spec.feature_dim == NUM_FEATURES and spec.modality == "image"

    model = spec.build_features(64, "none")

    assert model.inputs[0].dtype == "uint8"
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    features = np.asarray(model(pixels, training=False))
    assert features.shape == (2, spec.feature_dim) == (2, 1280)
    assert np.isfinite(features).all()
    assert not np.array_equal(features[0], features[1])  # depends on the input


def test_registry_rejects_unknown_weights():
    with pytest.raises(ModelError, match="'bogus'"):
        get_backbone("efficientnet_lite0").build_features(32, "bogus")


def test_registry_imagenet_extractor_normalises_inside_the_model(converted):
    model = get_backbone("efficientnet_lite0").build_features(32, "imagenet")
    core = build_efficientnet_lite0(input_shape=(32, 32, 3), include_top=False)
    assign_weights(core, converted[0])
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)

    from_uint8 = np.asarray(model(pixels, training=False))
    expected = np.asarray(core((pixels.astype(np.float32) - 127.0) / 128.0, training=False))

    np.testing.assert_allclose(from_uint8, expected, rtol=1e-4, atol=1e-4)
