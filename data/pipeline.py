"""tf.data pipelines: images from files (parallel decode, with TensorFlow's decoders for plain files
and Pillow for the rest, one resize for both, optional augmentation, an in-memory or on-disk cache,
prefetch), text as strings, and a class-balanced sampler. Every pipeline runs without tf.data's
autotuning thread (see `without_autotune_thread`)."""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from data.augment import AugmentConfig, build_augmenter
from data.decode_route import PILLOW, PLAIN_KINDS, decode_routes
from data.image_store import stored_images
from data.images import decode_rgb
from data.resize import fit_to_size
from data.text import MAX_TEXT_BYTES, read_text_prefix
from data.tf_decode import decode_plain_rgb

logger = logging.getLogger(__name__)
CACHE_CHOICES = ("auto", "memory", "disk", "none")
# Cached images (already in a seeded random order) are reshuffled every epoch through a
# bounded buffer: memory stays at the cache plus this many images (150 MB at 224 px), and
# the first epoch's first batch waits for this many decodes (about 1 s on 2 cores), once.
CACHED_SHUFFLE_BUFFER = 1024


def default_cache_budget_bytes() -> int:
    """"auto" caches decoded images when they take at most a quarter of physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # not POSIX: keep a conservative 2 GiB
        return 2 << 30


def should_cache(num_images: int, image_size: tuple[int, int], cache: str,
                 budget_bytes: int | None = None) -> bool:
    """Whether decoded images are kept in memory ("disk" keeps them in a file: data/image_store.py)."""
    if cache not in CACHE_CHOICES:
        raise ValueError(f"cache must be one of {CACHE_CHOICES}. Received: cache={cache!r}")
    if cache == "auto":
        budget = default_cache_budget_bytes() if budget_bytes is None else budget_bytes
        return num_images * image_size[0] * image_size[1] * 3 <= budget
    return cache == "memory"


def without_autotune_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with tf.data's autotuning thread switched off (`Options.autotune.enabled`).

    Why: with TensorFlow 2.21, destroying an iterator sometimes waits for that thread's next
    wake-up instead of cancelling it. Its period doubles from 10 ms, so the wait ends on the
    iterator's 5.11 s, 10.23 s, ... mark (up to a minute on long epochs). Keras makes a new
    iterator every epoch (and one per validation pass), so `fit()` stalled for seconds at
    random epochs; `bench/bench_compute.py` measured it and `bench/notes.md` has the native
    stack. Without the thread, `AUTOTUNE` map parallelism stays at its start value,
    min(16, CPU cores), and prefetch buffers still grow on demand (legacy autotuning): on a
    2-core machine the same throughput, with no stall (measured, same notes).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def file_decoder(image_size: tuple[int, int], resize: str, routes=None):
    """(path, route) -> uint8 [height, width, 3]: TensorFlow's decoders for plain files, Pillow's for the
    rest (data/decode_route.py), then the one resize every path uses (data/resize.py).

    `routes`: the routes of the files the decoder will see (None: any). The graph then holds only
    the decoders those need (data.tf_decode.decode_plain_rgb says why)."""
    present = sorted({int(r) for r in routes}) if routes is not None else list(range(len(PLAIN_KINDS)))
    plain = tuple(r for r in present if r != PILLOW)

    def pillow(path):
        rgb = tf.numpy_function(lambda p: decode_rgb(p.decode("utf-8"), image_size), [path], tf.uint8, stateful=False)
        rgb.set_shape((None, None, 3))
        return rgb

    def load(path, route):
        if not plain:
            rgb = pillow(path)
        elif PILLOW not in present:
            rgb = decode_plain_rgb(tf.io.read_file(path), route, image_size, plain)
        else:
            rgb = tf.cond(route > PILLOW, lambda: decode_plain_rgb(tf.io.read_file(path), route, image_size, plain),
                          lambda: pillow(path))
        return fit_to_size(rgb, image_size, resize)

    return load


def _decoded_images(items: tf.data.Dataset, routes: np.ndarray, image_size: tuple[int, int], resize: str,
                    labelled: bool) -> tf.data.Dataset:
    """Images uint8 [height, width, 3] (and labels) from (path, route[, label]) items, decoded in parallel."""
    load = file_decoder(image_size, resize, routes)
    if labelled:
        return items.map(lambda path, route, label: (load(path, route), label), num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=True)
    return items.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
    content_keys: list[str] | None = None,
) -> tf.data.Dataset:
    """Batches of uint8 images (and int32 labels when given).

    Order is the file order unless `shuffle`. Shuffling happens on the file paths,
    before decoding, so the first batch arrives after decoding one batch rather than
    the whole shuffle buffer. With `cache`, the paths are put in one seeded random
    order, decoded once into memory, and every later epoch reshuffles the cached
    images through a bounded buffer (their base order is already random, so this
    mixes classes well) before augmentation, so every epoch still sees fresh
    shuffles and fresh random augmentations. `cache="disk"` does the same with the
    decoded images in a file of metatune's cache (data/image_store.py; `content_keys`:
    the files' SHA-256, which name the store); its base order is by content digest.
    `augment` is for training batches only. Plain files decode with TensorFlow's ops,
    the others with Pillow, to the same pixels (data/decode_route.py).
    """
    path_array = np.asarray(paths, dtype=str)
    label_array = None if labels is None else np.asarray(labels, np.int32)
    routes = decode_routes(list(paths))
    stored = None
    if cache == "disk":
        def decode(order: np.ndarray) -> tf.data.Dataset:
            items = tf.data.Dataset.from_tensor_slices((path_array[order], routes[order]))
            return without_autotune_thread(_decoded_images(items, routes, image_size, resize, labelled=False))

        stored = stored_images(list(paths), content_keys, image_size, resize, shuffle, decode)
    cached = stored is None and should_cache(len(paths), image_size, cache)
    if cache == "auto" and not cached:
        logger.info("The %d decoded images (%.1f GiB) would take more than the in-memory cache's budget (%.1f GiB, a "
                    "quarter of RAM): they are decoded every epoch (--image-cache disk keeps them in a file instead)",
                    len(paths), len(paths) * image_size[0] * image_size[1] * 3 / 2**30,
                    default_cache_budget_bytes() / 2**30)
    if stored is not None:
        images, order = stored
        decoded = images if label_array is None else tf.data.Dataset.zip(
            (images, tf.data.Dataset.from_tensor_slices(label_array[order])))
    else:
        if shuffle and cached:
            order = np.random.default_rng(seed).permutation(len(paths))
            path_array, routes = path_array[order], routes[order]
            label_array = None if label_array is None else label_array[order]
        columns = (path_array, routes) if label_array is None else (path_array, routes, label_array)
        items = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle and not cached:
            items = items.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
        decoded = _decoded_images(items, routes, image_size, resize, label_array is not None)
        if cached:
            decoded = decoded.cache()
    if shuffle and (cached or stored is not None):
        decoded = decoded.shuffle(min(max(1, len(paths)), CACHED_SHUFFLE_BUFFER), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = decoded.batch(batch_size)
    logger.debug("image_dataset: %d of %d files decode in the graph", int(np.sum(routes > PILLOW)), len(paths))
    if augment is not None and not augment.is_identity:
        augmenter = build_augmenter(augment, seed=seed)

        def apply(images):
            return augmenter(images, training=True)  # uint8 in, uint8 out

        if labels is None:
            dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(lambda x, y: (apply(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune_thread(dataset.prefetch(tf.data.AUTOTUNE))


_reported_long_texts: set[str] = set()  # each over-long file is reported once per process


def read_texts(paths: list[str], encodings: list[str] | None = None) -> list[str]:
    """The texts of `paths`; files over MAX_TEXT_BYTES are read up to it, with one warning for all."""
    encodings = encodings or [""] * len(paths)
    texts, cut = [], []
    for path, encoding in zip(paths, encodings):
        text, was_cut = read_text_prefix(path, encoding)
        texts.append(text)
        if was_cut and path not in _reported_long_texts:
            cut.append(path)
    if cut:
        _reported_long_texts.update(cut)
        logger.warning("%d text file(s) are over %d KiB; only their first %d KiB are read (texts are cut to the "
                       "sequence length anyway): %s", len(cut), MAX_TEXT_BYTES // 1024, MAX_TEXT_BYTES // 1024,
                       ", ".join(cut[:5]) + (f" and {len(cut) - 5} more" if len(cut) > 5 else ""))
    return texts


def text_dataset(texts: list[str], labels: list[int] | None, batch_size: int, shuffle: bool = False,
                 seed: int = 0) -> tf.data.Dataset:
    """Batches of tf.string (and int32 labels when given); tokenisation belongs to the model."""
    # Each text as its own UTF-8 bytes: a numpy str array (astype(str)) is fixed-width, 4 bytes per character of
    # the longest text for every row, so one 256 KiB file among 3,000 short texts took 6 GB and 36 s.
    encoded = np.empty(len(texts), dtype=object)
    encoded[:] = [str(text).encode("utf-8") for text in texts]
    inputs = tf.data.Dataset.from_tensor_slices(encoded if texts else tf.constant([], tf.string))
    return in_memory_batches(inputs, labels, len(texts), batch_size, shuffle, seed)


def in_memory_batches(inputs: tf.data.Dataset, labels: list[int] | None, count: int, batch_size: int,
                      shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """`count` in-memory inputs -> batches of them (and of int32 labels when given), reshuffled every
    epoch when asked: inputs of the same count, labels and seed come out in the same order."""
    dataset = inputs
    if labels is not None:
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(max(1, count), seed=seed, reshuffle_each_iteration=True)
    return without_autotune_thread(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE))


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
