"""tf.data pipelines from file lists: decode, convert to RGB, resize, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.images import load_image


def image_dataset(
    paths: list[str],
    labels: list[int] | None,
    image_size: tuple[int, int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of uint8 images (and int32 labels when given), in file order unless shuffled.

    Decoding runs in parallel through `tf.numpy_function` (see data/images.py for why
    Pillow decodes); `deterministic=True` keeps the order so predictions line up
    with `paths`.
    """
    height, width = image_size

    def decode(path):
        return load_image(path.decode("utf-8"), (height, width))

    def load(path):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((height, width, 3))
        return image

    paths_ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=object).astype(str))
    if labels is None:
        dataset = paths_ds
    else:
        dataset = tf.data.Dataset.zip(paths_ds, tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if labels is None:
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.map(lambda p, y: (load(p), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
