"""Partial unfreezing (BatchNorm stays frozen) and per-variable learning rates."""

import keras
import numpy as np
import pytest

import tests.tiny_backbones  # noqa: F401  (registers tiny_image)
from models.backbones import get_backbone
from models.finetuning import learning_rate_multipliers, unfreeze_top_blocks
from models.heads import ClassificationHead
from models.optimizers import DiscriminativeAdam
from models.task_model import build_task_model


def _tiny_task_model():
    spec = get_backbone("tiny_image")
    features = spec.build_features(16, "none")
    head = ClassificationHead(3, 0.0, seed=0)
    return spec, features, head, build_task_model(features, head)


def test_unfreeze_one_block_trains_only_its_conv_and_keeps_batchnorm_frozen():
    spec, features, head, model = _tiny_task_model()
    groups = unfreeze_top_blocks(spec, features, "1")
    assert [layer.name for layer in groups[0]] == ["block1_conv", "block1_relu", "pool"]
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert trainable == {"block1_conv", "head_dense"}
    assert not features.get_layer("block1_bn").trainable


def test_unfreeze_all_includes_the_stem_group_last():
    spec, features, _, _ = _tiny_task_model()
    groups = unfreeze_top_blocks(spec, features, "all")
    assert [g[0].name for g in groups[:2]] == ["block1_conv", "block0_conv"]
    assert all(not isinstance(layer, keras.layers.BatchNormalization) for group in groups for layer in group)


def test_fine_tuning_step_leaves_batchnorm_statistics_unchanged():
    spec, features, head, model = _tiny_task_model()
    unfreeze_top_blocks(spec, features, "all")
    bn = features.get_layer("block1_bn")
    before = [w.copy() for w in bn.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 255, (8, 16, 16, 3)).astype("uint8"), rng.integers(0, 3, 8), epochs=2, verbose=0)
    for old, new in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(old, new)
    conv = features.get_layer("block1_conv").get_weights()[0]
    assert np.abs(conv).sum() > 0  # and the conv did train (see the multiplier test for amounts)


def test_multipliers_decay_by_depth():
    spec, features, head, _ = _tiny_task_model()
    groups = unfreeze_top_blocks(spec, features, "all")
    multipliers = learning_rate_multipliers(head.layers, groups, 0.5)
    assert multipliers["head_dense/kernel"] == 1.0
    assert multipliers["block1_conv/kernel"] == 1.0
    assert multipliers["block0_conv/kernel"] == 0.5
    assert not any(path.startswith("block1_bn") for path in multipliers)


def test_discriminative_adam_scales_each_variable_step():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(keras.layers.Dense(3, name="low")(inputs)))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer = DiscriminativeAdam({"low/kernel": 0.1, "low/bias": 0.1}, learning_rate=0.01)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.random.rand(8, 4), np.random.rand(8, 2), batch_size=8, epochs=1, verbose=0)
    # Adam's first step moves every weight by about lr (its update is normalised).
    step = {v.path: np.abs(v.numpy() - before[v.path]).max() for v in model.trainable_variables}
    assert step["top/kernel"] == pytest.approx(0.01, rel=1e-3)
    assert step["low/kernel"] == pytest.approx(0.001, rel=1e-3)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, DiscriminativeAdam) and restored.lr_multipliers == optimizer.lr_multipliers


def test_discriminative_adam_rejects_non_positive_multipliers():
    with pytest.raises(ValueError, match="Received: low/kernel=0"):
        DiscriminativeAdam({"low/kernel": 0})
