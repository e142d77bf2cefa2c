"""Phase 2 trains a model whose first layer is the augmentation and whose rest is the task
model: same weights, identity at inference, nothing of it in what is saved, and a tf.data
input pipeline that no longer augments."""

from __future__ import annotations

import pytest
import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from app.config import TrainConfig
from app.phases import (MixUpBatches, compile_phase2, finetune_inputs, phase2_augmentation, phase2_training_model,
                        unused_image_option_warning, unused_mixup_warning, uses_mixup)
from data.augment import AugmentConfig, ImageAugmentation
from data.images import load_image
from models.backbones import get_backbone
from models.heads import ClassificationHead
from models.task_model import build_task_model


def _task_model(size: int = 16):
    spec = get_backbone("tiny_image")
    keras.utils.set_random_seed(0)
    features = spec.build_features(size, "none")
    head = ClassificationHead(3, 0.0, seed=0)
    return spec, features, head, build_task_model(features, head)


def _gradient_image(size: int = 16) -> np.ndarray:
    """Left-right and top-bottom asymmetric, so any flip, rotation or zoom changes it."""
    x = np.linspace(0, 255, size)
    return np.stack([np.add.outer(x, x) / 2, np.tile(x, (size, 1)), np.tile(x[:, None], (1, size))],
                    axis=-1).astype(np.uint8)


def test_training_model_shares_the_task_models_weights_and_is_the_identity_at_inference():
    _, _, _, task_model = _task_model()
    training_model = phase2_training_model(task_model, AugmentConfig(), seed=0)
    assert training_model is not task_model
    assert {id(v) for v in task_model.trainable_variables} == {id(v) for v in training_model.trainable_variables}
    batch = np.stack([_gradient_image()] * 4)
    np.testing.assert_allclose(training_model.predict(batch, verbose=0), task_model.predict(batch, verbose=0),
                               rtol=1e-6, atol=1e-6)
    augmenter = next(layer for layer in training_model.layers if isinstance(layer, ImageAugmentation))
    augmented = np.asarray(augmenter(batch, training=True))
    assert augmented.dtype == np.uint8 and augmented.shape == batch.shape
    assert not np.array_equal(augmented, batch)
    # Like Keras' RandomRotation, the resampling opts out of XLA: no jit_compile for a model holding it.
    assert not all(layer.supports_jit for layer in training_model._flatten_layers())


def test_without_augmentation_phase2_trains_the_task_model_itself():
    _, _, _, task_model = _task_model()
    assert phase2_training_model(task_model, None, seed=0) is task_model
    identity = AugmentConfig(flip=False, rotation=0, zoom=0, contrast=0)
    assert phase2_training_model(task_model, identity, seed=0) is task_model
    config = TrainConfig(data_dir="d", strategy="finetune").validate()
    assert phase2_augmentation(config, "image") == AugmentConfig()
    assert phase2_augmentation(config, "text") is None
    off = TrainConfig(data_dir="d", strategy="finetune", augment=False).validate()
    assert phase2_augmentation(off, "image") is None


@pytest.mark.slow
def test_fit_trains_the_task_model_through_the_augmentation(tmp_path):
    spec, features, head, task_model = _task_model()
    config = TrainConfig(data_dir="d", strategy="finetune", unfreeze="all", finetune_learning_rate=1e-2,
                         mixup=0.0).validate()
    config.apply_modality_defaults("image")
    model = compile_phase2(config, spec, features, task_model, head.layers, 2, 3, AugmentConfig())
    augmenter = next(layer for layer in model.layers if isinstance(layer, ImageAugmentation))
    generator_state = [np.array(v) for v in augmenter.non_trainable_variables]
    before = [np.array(v) for v in task_model.trainable_variables]
    images = np.stack([_gradient_image()] * 8)
    model.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, np.array(v)) for a, v in zip(before, task_model.trainable_variables))
    # The augmentation drew random numbers during fit: it ran inside the training step.
    assert any(not np.array_equal(a, np.array(v)) for a, v in zip(generator_state, augmenter.non_trainable_variables))


class _Example:
    def __init__(self, path, label):
        self.path, self.label, self.encoding, self.sha256 = str(path), label, None, ""


def test_phase2_input_pipeline_delivers_the_decoded_images_unaugmented(tmp_path):
    examples = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.roll(_gradient_image(20), i, axis=1)).save(path)
        examples.append(_Example(path, i % 3))
    config = TrainConfig(data_dir="d", strategy="finetune", batch_size=6, mixup=0.0).validate()
    inputs = finetune_inputs(config, "image", 16, examples, [], 3)
    assert inputs.val is None and inputs.confusion is None and inputs.val_labels == []
    images, labels = next(iter(inputs.train))
    decoded = [load_image(e.path, (16, 16), config.resize) for e in examples]
    # Shuffled, but each image is exactly one decoded file: nothing was flipped, rotated or recoloured.
    matches = sorted(next(i for i, d in enumerate(decoded) if np.array_equal(image, d)) for image in images.numpy())
    assert matches == list(range(6))
    assert sorted(labels.numpy().tolist()) == sorted(e.label for e in examples)


def _mixed_batches(alpha: float, seed: int, epochs: int = 2):
    """Flat images of 25 different grey levels, each its own class: after MixUp an image's grey
    level must be the label-weighted mean of the levels it was blended from."""
    levels = np.arange(0, 250, 10)
    images = np.stack([np.full((4, 4, 3), level, np.uint8) for level in levels])
    dataset = (tf.data.Dataset.from_tensor_slices((images, tf.one_hot(np.arange(len(levels)), len(levels))))
               .batch(len(levels)).map(MixUpBatches(alpha, seed)))
    return levels, [next(iter(dataset)) for _ in range(epochs)]


def test_mixup_blends_images_and_their_labels_with_the_same_weights():
    levels, batches = _mixed_batches(0.4, seed=1)
    for images, labels in batches:
        images, labels = images.numpy(), labels.numpy()
        assert images.dtype == np.uint8 and images.shape == (25, 4, 4, 3)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert ((labels > 1e-6).sum(axis=1) <= 2).all()  # each image is a blend of at most two
        np.testing.assert_allclose(images[:, 0, 0, 0], labels @ levels, atol=0.51)  # rounded to uint8
        assert (labels.max(axis=1) < 0.999).any()  # some images really were blended
    # Fresh blends every epoch (the dataset's iterators draw on), the same ones for the same seed.
    assert not np.array_equal(batches[0][1].numpy(), batches[1][1].numpy())
    again = _mixed_batches(0.4, seed=1)[1]
    for (_, labels), (_, repeated) in zip(batches, again):
        np.testing.assert_array_equal(labels.numpy(), repeated.numpy())


def test_images_only_options_on_text_warn():
    """--image-cache and --no-augment act on decoded images; a text run ignored them without a word."""
    assert unused_image_option_warning(TrainConfig(data_dir="d").validate(), "text") is None
    given = TrainConfig(data_dir="d", strategy="finetune", image_cache="disk", augment=False).validate()
    assert unused_image_option_warning(given, "image") is None
    warning = unused_image_option_warning(given, "text")
    assert "--image-cache disk and --no-augment have no effect" in warning and "text" in warning


def test_mixup_is_for_finetune_phase2_images_and_makes_labels_one_hot(tmp_path):
    config = TrainConfig(data_dir="d", strategy="finetune", batch_size=6, mixup=0.2).validate()
    assert uses_mixup(config, "image") and not uses_mixup(config, "text")
    assert not uses_mixup(TrainConfig(data_dir="d", strategy="finetune", mixup=0.0).validate(), "image")
    assert unused_mixup_warning(config, "image") is None
    for modality, mixes in (("image", True), ("text", False)):  # the recipe's default: on for images only
        default = TrainConfig(data_dir="d", strategy="finetune").validate()
        default.apply_modality_defaults(modality)
        assert uses_mixup(default, modality) is mixes and unused_mixup_warning(default, modality) is None
    for strategy, modality in (("finetune", "text"), ("linear", "image"), ("protonet", "image")):
        warning = unused_mixup_warning(TrainConfig(data_dir="d", strategy=strategy, mixup=0.2).validate(), modality)
        assert "--mixup 0.2 has no effect" in warning and strategy in warning and modality in warning
    examples = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.roll(_gradient_image(20), i, axis=1)).save(path)
        examples.append(_Example(path, i % 3))
    inputs = finetune_inputs(config, "image", 16, examples, examples[:3], 3)
    images, labels = next(iter(inputs.train))
    assert images.dtype == tf.uint8 and labels.shape == (6, 3)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    _, val_labels = next(iter(inputs.val))  # validation is never mixed, but one-hot like the training targets
    np.testing.assert_array_equal(val_labels.numpy(), np.eye(3)[[0, 1, 2]])
