"""Episode sampler invariants (N distinct classes, exactly K shots and Q queries each, query
disjoint from support, labels remapped to 0..N-1, seeded), meta-batch structure, and errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

from data.episodes import (EpisodeSampler, array_meta_batches, check_disjoint_meta_classes, image_meta_batches,
                           meta_split_indices, text_meta_batches)
from data.errors import DataError
from data.splits import class_disjoint_splits

WAYS, SHOTS, QUERIES = 5, 2, 3


def _labels(counts: list[int], seed: int = 0) -> np.ndarray:
    """Class c has counts[c] examples, shuffled so pool order says nothing about the class."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


def _check_episode(episode, labels, ways, shots, queries, eligible):
    classes = episode.classes
    assert classes.shape == (ways,) and len(set(classes.tolist())) == ways, "classes are not distinct"
    assert set(classes.tolist()) <= set(eligible)
    assert episode.support_index.shape == (ways * shots,) and episode.query_index.shape == (ways * queries,)
    assert not set(episode.support_index.tolist()) & set(episode.query_index.tolist()), "query repeats support"
    assert len(set(episode.support_index.tolist())) == ways * shots
    assert len(set(episode.query_index.tolist())) == ways * queries
    for index, episode_labels, per_class in ((episode.support_index, episode.support_labels, shots),
                                             (episode.query_index, episode.query_labels, queries)):
        assert episode_labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(episode_labels, minlength=ways), [per_class] * ways)
        # Grouped by episode label (the documented order) and consistent with the original classes.
        np.testing.assert_array_equal(episode_labels, np.repeat(np.arange(ways), per_class))
        np.testing.assert_array_equal(labels[index], classes[episode_labels])


def test_every_episode_has_the_invariants():
    labels = _labels([8, 5, 9, 6, 12, 7, 5, 10])
    sampler = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=3)
    for episode in sampler.episodes(200):
        _check_episode(episode, labels, WAYS, SHOTS, QUERIES, eligible=range(8))


def test_classes_with_too_few_examples_are_never_sampled(caplog):
    counts = [6, 4, 6, 5, 6, 2, 6, 6]  # need shots + queries = 5: classes 1 and 5 are too small, 3 just enough
    labels = _labels(counts)
    with caplog.at_level(logging.WARNING, logger="data.episodes"):
        sampler = EpisodeSampler(labels, 4, SHOTS, QUERIES, seed=0, class_names=[f"c{i}" for i in range(8)])
    eligible = [c for c, n in enumerate(counts) if n >= SHOTS + QUERIES]
    assert sampler.eligible.tolist() == eligible
    seen = set()
    for episode in sampler.episodes(300):
        _check_episode(episode, labels, 4, SHOTS, QUERIES, eligible)
        seen |= set(episode.classes.tolist())
    assert seen == set(eligible)  # every eligible class is used, the small ones never
    assert "'c1' (4 examples)" in caplog.text and "'c5' (2 examples)" in caplog.text and "'c3'" not in caplog.text


def test_label_mapping_is_random_per_episode():
    sampler = EpisodeSampler(_labels([6] * 5), WAYS, SHOTS, QUERIES, seed=0)
    orders = {tuple(episode.classes.tolist()) for episode in sampler.episodes(50)}
    assert len(orders) > 10  # same 5 classes every time, in many label orders


def test_one_shot_one_query_uses_exactly_two_examples_per_class():
    labels = _labels([2] * 3)
    episode = EpisodeSampler(labels, 3, 1, 1, seed=1).sample()
    _check_episode(episode, labels, 3, 1, 1, eligible=range(3))
    assert sorted(episode.support_index.tolist() + episode.query_index.tolist()) == list(range(6))


def test_same_seed_same_episodes_other_seed_other_episodes():
    labels = _labels([10] * 10)

    def run(seed):
        return [np.concatenate([e.classes, e.support_index, e.query_index])
                for e in EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=seed).episodes(20)]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert sum(np.array_equal(a, b) for a, b in zip(first, other)) == 0


def test_episode_number_replays_an_episode():
    sampler = EpisodeSampler(_labels([10] * 10), WAYS, SHOTS, QUERIES, seed=4)
    sequence = sampler.episodes(6)
    replay = EpisodeSampler(_labels([10] * 10), WAYS, SHOTS, QUERIES, seed=4).episode(5)
    assert sequence[5].number == 5
    np.testing.assert_array_equal(replay.query_index, sequence[5].query_index)
    np.testing.assert_array_equal(replay.classes, sequence[5].classes)


# --- errors ---------------------------------------------------------------------------------

def test_too_few_eligible_classes_names_the_small_classes_and_the_need():
    names = ["cat", "dog", "owl", "emu"]
    with pytest.raises(DataError) as info:
        EpisodeSampler(_labels([9, 3, 2, 8]), 3, 5, 3, seed=0, class_names=names)
    message = str(info.value)
    assert "'dog' (3 examples)" in message and "'owl' (2 examples)" in message
    assert "'cat'" not in message and "'emu'" not in message
    assert "at least 8 (shots=5 + queries=3)" in message
    assert "fewer shots or queries" in message and "fewer ways" in message
    assert "ways=3" in message


def test_too_few_classes_without_names_uses_class_ids():
    with pytest.raises(DataError, match=r"class 1 \(1 examples\)"):
        EpisodeSampler(_labels([5, 1]), 2, 1, 1)
    with pytest.raises(DataError, match="only 2 of 2 classes"):
        EpisodeSampler(_labels([5, 5]), 3, 1, 1)


@pytest.mark.parametrize("kwargs,received", [
    (dict(ways=1), "ways=1"), (dict(ways=0), "ways=0"), (dict(shots=0), "shots=0"), (dict(queries=0), "queries=0"),
    (dict(shots=-2), "shots=-2"), (dict(ways=2.5), "ways=2.5"),
])
def test_invalid_ways_shots_queries_show_the_value(kwargs, received):
    arguments = dict(ways=2, shots=1, queries=1) | kwargs
    with pytest.raises(DataError, match="Received: " + received.replace(".", r"\.")):
        EpisodeSampler(_labels([4, 4]), **arguments)


# --- meta batches ---------------------------------------------------------------------------

def _take(dataset, n):
    return [tf.nest.map_structure(np.asarray, batch) for batch in dataset.take(n)]


def _check_batch_structure(dataset, tasks, element_shape, dtype):
    support_spec, query_y_spec = dataset.element_spec
    support_x, support_y, query_x = support_spec
    assert support_x.shape == (tasks, WAYS * SHOTS, *element_shape) and support_x.dtype == dtype
    assert support_y.shape == (tasks, WAYS * SHOTS) and support_y.dtype == tf.int32
    assert query_x.shape == (tasks, WAYS * QUERIES, *element_shape) and query_x.dtype == dtype
    assert query_y_spec.shape == (tasks, WAYS * QUERIES) and query_y_spec.dtype == tf.int32


def test_array_meta_batches_gather_the_episode_examples():
    labels = _labels([7] * 8)
    # Each feature row encodes its pool index, so the batch can be checked against the episodes.
    features = np.stack([np.full((4,), i, np.float32) for i in range(len(labels))])
    sampler = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=2)
    dataset = array_meta_batches(sampler, features, tasks_per_batch=3, steps=2)
    _check_batch_structure(dataset, 3, (4,), tf.float32)
    assert dataset.options().autotune.enabled is False  # see data/pipeline.without_autotune_thread
    batches = _take(dataset, 10)
    assert len(batches) == 2
    expected = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=2).episodes(6)
    for step, ((support_x, support_y, query_x), query_y) in enumerate(batches):
        for task in range(3):
            episode = expected[step * 3 + task]
            np.testing.assert_array_equal(support_x[task, :, 0], episode.support_index)
            np.testing.assert_array_equal(query_x[task, :, 0], episode.query_index)
            np.testing.assert_array_equal(support_y[task], episode.support_labels)
            np.testing.assert_array_equal(query_y[task], episode.query_labels)


def test_meta_batches_are_deterministic_and_resume_at_a_step():
    labels = _labels([7] * 8)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 5, 5, 3), dtype=np.uint8)

    def batches(seed, **kwargs):
        sampler = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=seed)
        return _take(array_meta_batches(sampler, images, 2, **kwargs), 3)

    first, again, other = batches(1, steps=3), batches(1, steps=3), batches(2, steps=3)
    _check_batch_structure(array_meta_batches(EpisodeSampler(labels, WAYS, SHOTS, QUERIES), images, 2), 2,
                           (5, 5, 3), tf.uint8)
    for a, b in zip(first, again):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(first[0][0][0], other[0][0][0])
    resumed = batches(1, steps=1, start_step=2)[0]
    tf.nest.map_structure(np.testing.assert_array_equal, resumed, first[2])
    endless_dataset = array_meta_batches(EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=1), images, 2)
    assert endless_dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    assert array_meta_batches(EpisodeSampler(labels, WAYS, SHOTS, QUERIES), images, 2, steps=3).cardinality() == 3
    endless = batches(1)  # steps=None: as many as taken
    assert len(endless) == 3
    tf.nest.map_structure(np.testing.assert_array_equal, endless[1], first[1])


def test_image_meta_batches_decode_files(tmp_path, make_image):
    labels = _labels([6] * 6)
    colours = [(i * 40, 255 - i * 40, 7 * i) for i in range(6)]
    paths = [make_image(tmp_path / f"c{c}" / f"{i}.png", color=colours[c], size=(10, 7)) for i, c in enumerate(labels)]
    sampler = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=0)
    dataset = image_meta_batches(sampler, [str(p) for p in paths], (12, 9), tasks_per_batch=2, steps=1)
    _check_batch_structure(dataset, 2, (12, 9, 3), tf.uint8)
    (support_x, support_y, query_x), query_y = _take(dataset, 1)[0]
    episodes = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=0).episodes(2)
    for task, episode in enumerate(episodes):
        # Solid-colour files: every decoded pixel has its class colour.
        for images, index in ((support_x[task], episode.support_index), (query_x[task], episode.query_index)):
            expected = np.array([colours[labels[i]] for i in index], np.uint8)
            np.testing.assert_array_equal(images[:, 4, 4, :], expected)
        np.testing.assert_array_equal(query_y[task], episode.query_labels)


def test_text_meta_batches_give_strings():
    labels = _labels([5] * 6)
    texts = [f"example {i} of class {c} — ünïcode" for i, c in enumerate(labels)]
    sampler = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=5)
    dataset = text_meta_batches(sampler, texts, tasks_per_batch=4, steps=2)
    _check_batch_structure(dataset, 4, (), tf.string)
    batches = _take(dataset, 2)
    episode = EpisodeSampler(labels, WAYS, SHOTS, QUERIES, seed=5).episode(4)  # step 1, task 0
    (support_x, _, query_x), _ = batches[1]
    assert [s.decode("utf-8") for s in support_x[0]] == [texts[i] for i in episode.support_index]
    assert [s.decode("utf-8") for s in query_x[0]] == [texts[i] for i in episode.query_index]


def test_meta_batches_reject_a_pool_mismatch_and_bad_counts():
    sampler = EpisodeSampler(_labels([4, 4]), 2, 1, 1)
    with pytest.raises(DataError, match="8 labels but 7 inputs"):
        array_meta_batches(sampler, np.zeros((7, 3)), 2)
    with pytest.raises(DataError, match="Received: tasks_per_batch=0"):
        array_meta_batches(sampler, np.zeros((8, 3)), 0)
    with pytest.raises(DataError, match="Received: steps=0"):
        text_meta_batches(sampler, ["x"] * 8, 1, steps=0)


# --- meta-training classes ------------------------------------------------------------------

def test_meta_data_classes_overlapping_the_target_are_named():
    with pytest.raises(DataError) as info:
        check_disjoint_meta_classes(["Latin_a", " Cat ", "owl", "DOG"], ["cat", "dog", "horse"])
    message = str(info.value)
    assert "' Cat ' (target: 'cat')" in message and "'DOG' (target: 'dog')" in message
    assert "owl" not in message and "Latin_a" not in message and "horse" not in message
    assert "must not contain the target's classes" in message
    check_disjoint_meta_classes(["owl", "emu"], ["cat", "dog"])  # disjoint: no error


def test_meta_split_indices_follow_the_class_disjoint_splits():
    names = [f"class{i:02d}" for i in range(10)]
    labels = _labels([3] * 10)
    pools = meta_split_indices(labels, names, seed=1)
    assignment = class_disjoint_splits(names, seed=1)
    assert sorted(np.concatenate(list(pools.values())).tolist()) == list(range(len(labels)))
    for split, index in pools.items():
        assert {assignment[names[c]] for c in labels[index]} == {split}
    sampler = EpisodeSampler(labels[pools["meta_train"]], 3, 1, 2, seed=0)
    episode = sampler.sample()
    train_classes = {names.index(n) for n, s in assignment.items() if s == "meta_train"}
    assert set(labels[pools["meta_train"]][episode.query_index].tolist()) <= train_classes
