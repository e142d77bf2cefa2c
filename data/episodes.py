"""Few-shot episodes: an N-way K-shot sampler with Q queries per class, and meta batches.

An episode picks `ways` distinct classes (without replacement) among the classes
that have at least `shots + queries` examples, then `shots + queries` distinct
examples of each (without replacement), split into support and query, so a query
never repeats a support example. Episode labels are 0..ways-1; which original
class gets which label is random per episode, so a model cannot learn a fixed
class -> label mapping across episodes.

Order inside an episode: support and query are *grouped by episode label*
(class-major): position `i * shots + k` of the support is shot k of episode class
i, and position `i * queries + q` of the query is query q of class i. This lets a
prototype be a reshape to [ways, shots, ...] and a mean; models that care about
order (batch statistics are order-free) must not rely on anything else.

Reproducibility: episode number n of a sampler is a pure function of (seed, n)
(its own generator, seeded with [seed, n]), so `sample()` gives the same sequence
for the same seed, an evaluation can be replayed from (seed, episode numbers), and
the tf.data meta batches can be built in parallel and resumed at any step while
staying deterministic.

Meta batches have a leading task dimension T (tasks per meta step), the contract
with the meta-learning models (models/meta/):
    ((support_x [T, N*K, ...], support_y [T, N*K] int32, query_x [T, N*Q, ...]), query_y [T, N*Q] int32)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from data.errors import DataError
from data.decode_route import decode_routes
from data.pipeline import file_decoder, without_autotune_thread
from data.splits import META_SPLITS, class_disjoint_splits

logger = logging.getLogger(__name__)
# Long lists of too-small classes are cut in messages: the first few tell the user enough.
MAX_NAMED_CLASSES = 20


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot episode as indices into the sampler's pool of examples."""

    support_index: np.ndarray  # [ways * shots] int64, grouped by episode label
    support_labels: np.ndarray  # [ways * shots] int32 in 0..ways-1
    query_index: np.ndarray  # [ways * queries] int64, grouped by episode label
    query_labels: np.ndarray  # [ways * queries] int32 in 0..ways-1
    classes: np.ndarray  # [ways] original class ids; classes[i] has episode label i
    number: int  # the episode number: (seed, number) replays it


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _class_label(class_id: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= class_id < len(class_names):
        return repr(class_names[class_id])
    return f"class {class_id}"


def _describe_counts(counts: list[tuple[int, int]], class_names: Sequence[str] | None) -> str:
    named = [f"{_class_label(c, class_names)} ({n} examples)" for c, n in counts[:MAX_NAMED_CLASSES]]
    more = len(counts) - MAX_NAMED_CLASSES
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class over a pool of labelled examples.

    `labels[i]` is the class id of pool example i; episodes hold indices into this
    pool. `class_names[c]` (optional) names class id c in messages.
    """

    def __init__(self, labels: Sequence[int], ways: int, shots: int, queries: int, seed: int = 0,
                 class_names: Sequence[str] | None = None):
        self.ways = _check_count("ways", ways, 2)
        self.shots = _check_count("shots", shots, 1)
        self.queries = _check_count("queries", queries, 1)
        self.seed = int(seed)
        self.class_names = class_names
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise DataError(f"labels must be a 1-D sequence of integer class ids. Received: shape {labels.shape}, "
                            f"dtype {labels.dtype}")
        self.pool_size = len(labels)
        # Members sorted by pool index, so the draw depends only on (labels, seed, episode number).
        self._members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        need = self.shots + self.queries
        self.eligible = np.array(sorted(c for c, m in self._members.items() if len(m) >= need), dtype=np.int64)
        self._check_enough_classes()
        self._next = 0

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    def _too_small(self) -> list[tuple[int, int]]:
        return [(c, len(m)) for c, m in sorted(self._members.items()) if len(m) < self.per_class]

    def _advice(self, small: list[tuple[int, int]]) -> str:
        """What to change when no episode can be drawn: with more ways than classes no number of shots or queries
        helps, so the advice is then about classes only."""
        classes = len(self._members)
        if classes == 1:
            return "There is only 1 class: an episode tells at least 2 apart, so add classes. "
        advice = ""
        if classes < self.ways or not small:
            advice = f"There are only {classes} classes: use fewer ways (--ways {classes} or fewer) or add classes. "
        if small:
            advice += (f"Too small: {_describe_counts(small, self.class_names)}. Use fewer shots or queries (--shots, "
                       "--queries), fewer ways (--ways), or add examples. ")
        return advice

    def _check_enough_classes(self) -> None:
        small = self._too_small()
        need = f"{self.per_class} (shots={self.shots} + queries={self.queries})"
        if len(self.eligible) < self.ways:
            too_small = self._advice(small)
            raise DataError(
                f"A {self.ways}-way episode needs {self.ways} classes with at least {need} examples each; "
                f"only {len(self.eligible)} of {len(self._members)} classes have that many. {too_small}"
                f"Received: ways={self.ways}, shots={self.shots}, queries={self.queries}"
            )
        if small:
            # Not an error: those classes are simply never drawn, but the user should know.
            logger.warning("%d classes have fewer than %s examples and are never used in episodes: %s",
                           len(small), need, _describe_counts(small, self.class_names))

    def episode(self, number: int) -> Episode:
        """Episode `number` of this sampler: the same for the same (labels, seed, number)."""
        rng = np.random.default_rng([self.seed, int(number)])
        # rng.choice without replacement returns the classes in random order: that order
        # is the episode's label mapping (classes[i] -> label i).
        classes = rng.choice(self.eligible, size=self.ways, replace=False)
        support, query = [], []
        for class_id in classes:
            picked = rng.choice(self._members[int(class_id)], size=self.per_class, replace=False)
            support.append(picked[:self.shots])
            query.append(picked[self.shots:])
        labels = np.arange(self.ways, dtype=np.int32)
        return Episode(
            support_index=np.concatenate(support).astype(np.int64),
            support_labels=np.repeat(labels, self.shots),
            query_index=np.concatenate(query).astype(np.int64),
            query_labels=np.repeat(labels, self.queries),
            classes=classes.astype(np.int64),
            number=int(number),
        )

    def sample(self) -> Episode:
        """The next episode of this sampler's sequence (episode 0, 1, 2, ...)."""
        episode = self.episode(self._next)
        self._next += 1
        return episode

    def episodes(self, n: int) -> list[Episode]:
        return [self.sample() for _ in range(_check_count("n", n, 0))]


# --- meta batches ----------------------------------------------------------------------------

def _check_pool(sampler: EpisodeSampler, num_inputs: int, what: str) -> None:
    if num_inputs != sampler.pool_size:
        raise DataError(f"The sampler's pool has {sampler.pool_size} labels but {num_inputs} {what} were given; "
                        "they must be the same examples in the same order.")


def meta_batches(sampler: EpisodeSampler, fetch: Callable[[np.ndarray], np.ndarray], dtype: tf.DType,
                 element_shape: Sequence[int], tasks_per_batch: int, steps: int | None = None,
                 start_step: int = 0, decode: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.data.Dataset:
    """Meta batches ((support_x, support_y, query_x), query_y) with a leading task dim.

    `fetch(indices)` returns the inputs of those pool examples, shape
    [len(indices), *element_shape]; `decode`, when given, maps them in the graph to what the
    batches hold (e.g. file paths to decoded images). Meta step s holds episodes s*T .. s*T+T-1 of the
    sampler (T = tasks_per_batch); the dataset starts at step `start_step`, so a run
    resumed there sees the episodes it would have seen. `steps=None` never ends (take
    what you need, e.g. with steps_per_epoch).
    Episodes are built in parallel (their own seeds make that deterministic).
    """
    tasks = _check_count("tasks_per_batch", tasks_per_batch, 1)
    start = _check_count("start_step", start_step, 0)
    if steps is not None:
        _check_count("steps", steps, 1)
    n_support, n_query = sampler.ways * sampler.shots, sampler.ways * sampler.queries
    shape = tuple(int(d) for d in element_shape)

    def build(number):
        episode = sampler.episode(int(number))
        return (fetch(episode.support_index), episode.support_labels, fetch(episode.query_index),
                episode.query_labels)

    def load(number):
        support_x, support_y, query_x, query_y = tf.numpy_function(
            build, [number], (dtype, tf.int32, dtype, tf.int32), stateful=False)
        support_x.set_shape((n_support, *shape))
        support_y.set_shape((n_support,))
        query_x.set_shape((n_query, *shape))
        query_y.set_shape((n_query,))
        if decode is not None:
            support_x, query_x = decode(support_x), decode(query_x)
        return (support_x, support_y, query_x), query_y

    # counter() has infinite cardinality, so Keras knows an endless stream needs steps_per_epoch.
    numbers = (tf.data.Dataset.counter(start * tasks) if steps is None
               else tf.data.Dataset.range(start * tasks, (start + steps) * tasks))
    episodes = numbers.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # drop_remainder keeps T static in the element spec (a compiled meta step can rely on it).
    return without_autotune_thread(episodes.batch(tasks, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def array_meta_batches(sampler: EpisodeSampler, inputs: np.ndarray, tasks_per_batch: int, steps: int | None = None,
                       start_step: int = 0) -> tf.data.Dataset:
    """Meta batches from an in-memory array (cached features, small decoded images); dtype kept.

    The gather happens in numpy: the array is not embedded in the tf.data graph,
    which would copy it and fail beyond 2 GB.
    """
    inputs = np.asarray(inputs)
    _check_pool(sampler, len(inputs), "inputs")
    return meta_batches(sampler, lambda index: inputs[index], tf.as_dtype(inputs.dtype), inputs.shape[1:],
                        tasks_per_batch, steps, start_step)


def image_meta_batches(sampler: EpisodeSampler, paths: Sequence[str], image_size: tuple[int, int],
                       tasks_per_batch: int, steps: int | None = None, start_step: int = 0,
                       resize: str = "stretch") -> tf.data.Dataset:
    """Meta batches of uint8 RGB images decoded from files by the training pipeline's decoder.

    Files are decoded again for every episode; for a small set that fits in memory,
    decode once and use `array_meta_batches`.
    """
    paths = [str(path) for path in paths]
    _check_pool(sampler, len(paths), "paths")
    height, width = image_size
    routes = decode_routes(paths)
    path_table, route_table = tf.constant(paths, tf.string), tf.constant(routes, tf.int32)
    load = file_decoder((height, width), resize, routes)

    def decode(index: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(lambda i: load(tf.gather(path_table, i), tf.gather(route_table, i)), index,
                         fn_output_signature=tf.TensorSpec((height, width, 3), tf.uint8))

    return meta_batches(sampler, lambda index: np.asarray(index, np.int32), tf.int32, (), tasks_per_batch, steps,
                        start_step, decode=decode)


def text_meta_batches(sampler: EpisodeSampler, texts: Sequence[str], tasks_per_batch: int, steps: int | None = None,
                      start_step: int = 0) -> tf.data.Dataset:
    """Meta batches of tf.string texts (tokenisation belongs to the model)."""
    _check_pool(sampler, len(texts), "texts")
    # Object array of UTF-8 bytes: what numpy_function hands back as tf.string.
    encoded = np.empty(len(texts), dtype=object)
    encoded[:] = [str(text).encode("utf-8") for text in texts]
    return meta_batches(sampler, lambda index: encoded[index], tf.string, (), tasks_per_batch, steps, start_step)


# --- meta-training classes -------------------------------------------------------------------

def _normalized(name: str) -> str:
    return str(name).strip().casefold()


def check_disjoint_meta_classes(meta_class_names: Sequence[str], target_class_names: Sequence[str]) -> None:
    """`--meta-data DIR`: its classes must not be the target's (else the few-shot evaluation leaks).

    Names are compared stripped and case-insensitively ("Cat " and "cat" are the same class).
    """
    target = {_normalized(name): name for name in target_class_names}
    overlap = [(name, target[_normalized(name)]) for name in meta_class_names if _normalized(name) in target]
    if overlap:
        shown = ", ".join(repr(meta) if meta == tgt else f"{meta!r} (target: {tgt!r})" for meta, tgt in overlap)
        raise DataError(
            f"The meta-training folder (--meta-data) must not contain the target's classes; {len(overlap)} "
            f"class(es) are in both: {shown}. Remove them from the meta-training folder (its classes must be "
            "disjoint from the target's, or the few-shot results would be inflated)."
        )


def meta_split_indices(labels: Sequence[int], class_names: Sequence[str], fractions=(0.6, 0.2, 0.2),
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Example indices of the class-disjoint meta_train / meta_val / meta_test splits of one folder.

    The classes of each split come from `data.splits.class_disjoint_splits`; give
    `labels[indices]` of a split to an EpisodeSampler and gather inputs with the same indices.
    """
    assignment = class_disjoint_splits(list(class_names), fractions, seed)
    split_of_label = np.array([assignment[name] for name in class_names])
    labels = np.asarray(labels, dtype=np.int64)
    example_split = split_of_label[labels] if len(labels) else np.array([], dtype=str)
    return {split: np.flatnonzero(example_split == split) for split in META_SPLITS}
