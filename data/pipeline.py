"""tf.data pipelines: images from files (parallel decode, resize, optional augmentation and
in-memory cache, prefetch), text as strings, and a class-balanced sampler."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from data.augment import AugmentConfig, build_augmenter
from data.images import load_image
from data.text import read_text

logger = logging.getLogger(__name__)
DEFAULT_CACHE_BUDGET_BYTES = 2 << 30  # decoded images kept in memory up to 2 GiB ("auto")
CACHE_CHOICES = ("auto", "memory", "none")


def should_cache(num_images: int, image_size: tuple[int, int], cache: str,
                 budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES) -> bool:
    if cache not in CACHE_CHOICES:
        raise ValueError(f"cache must be one of {CACHE_CHOICES}. Received: cache={cache!r}")
    if cache == "auto":
        return num_images * image_size[0] * image_size[1] * 3 <= budget_bytes
    return cache == "memory"


def decoded_images(paths: list[str], image_size: tuple[int, int], resize: str = "stretch") -> tf.data.Dataset:
    """Unbatched uint8 images in file order; Pillow decodes in parallel (see data/images.py for why)."""
    height, width = image_size

    def decode(path):
        return load_image(path.decode("utf-8"), (height, width), resize)

    def load(path):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((height, width, 3))
        return image

    paths_ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str))
    return paths_ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def image_dataset(
    paths: list[str],
    labels: list[int] | None,
    image_size: tuple[int, int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    resize: str = "stretch",
    augment: AugmentConfig | None = None,
    cache: str = "none",
) -> tf.data.Dataset:
    """Batches of uint8 images (and int32 labels when given).

    Order is the file order unless `shuffle`. With `cache`, decoded images are kept
    in memory after the first pass (before shuffling and augmentation, so every
    epoch still sees fresh shuffles and fresh random augmentations). `augment` is
    for training batches only.
    """
    dataset = decoded_images(paths, image_size, resize)
    if labels is not None:
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int32)))
    if should_cache(len(paths), image_size, cache):
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None and not augment.is_identity:
        augmenter = build_augmenter(augment, seed=seed)

        def apply(images):
            augmented = augmenter(tf.cast(images, tf.float32), training=True)
            return tf.cast(tf.clip_by_value(tf.round(augmented), 0, 255), tf.uint8)

        if labels is None:
            dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(lambda x, y: (apply(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def read_texts(paths: list[str], encodings: list[str] | None = None) -> list[str]:
    encodings = encodings or [""] * len(paths)
    return [read_text(path, encoding) for path, encoding in zip(paths, encodings)]


def text_dataset(texts: list[str], labels: list[int] | None, batch_size: int, shuffle: bool = False,
                 seed: int = 0) -> tf.data.Dataset:
    """Batches of tf.string (and int32 labels when given); tokenisation belongs to the model."""
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object).astype(str) if texts else tf.constant([], tf.string))
    if labels is not None:
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(max(1, len(texts)), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def balanced_dataset(inputs, labels, num_classes: int, seed: int = 0) -> tf.data.Dataset:
    """An endless stream of (input, label) drawing every class with equal probability.

    `inputs` is anything `from_tensor_slices` takes (feature arrays, file paths).
    Take `steps` batches from it per epoch; classes with no examples are left out.
    """
    labels = np.asarray(labels, np.int32)
    per_class, present = [], []
    for c in range(num_classes):
        index = np.flatnonzero(labels == c)
        if len(index):
            members = tf.data.Dataset.from_tensor_slices((np.asarray(inputs)[index], labels[index]))
            per_class.append(members.shuffle(len(index), seed=seed + c, reshuffle_each_iteration=True).repeat())
            present.append(c)
    weights = [1.0 / len(per_class)] * len(per_class)
    return tf.data.Dataset.sample_from_datasets(per_class, weights=weights, seed=seed)
