"""The on-disk feature store: reuse, partial misses, duplicates, atomic replacement, corruption."""

import numpy as np

from data.feature_cache import FeatureStore


def _compute_counter(table):
    calls = []

    def compute(indices):
        calls.append(list(indices))
        return np.stack([table[i] for i in indices])

    return compute, calls


def test_second_lookup_computes_nothing(tmp_path):
    keys = ["a", "b", "c"]
    table = {i: np.full(4, i, np.float32) for i in range(3)}
    compute, calls = _compute_counter(table)
    store = FeatureStore("k1", root=tmp_path)
    first, computed = store.get_or_compute(keys, compute)
    assert computed == 3 and calls == [[0, 1, 2]]
    again, computed = FeatureStore("k1", root=tmp_path).get_or_compute(keys, compute)
    assert computed == 0 and len(calls) == 1
    np.testing.assert_array_equal(first, again)


def test_only_new_content_is_computed_and_order_follows_the_request(tmp_path):
    store = FeatureStore("k", root=tmp_path)
    store.get_or_compute(["a", "b"], lambda idx: np.asarray([[1.0], [2.0]])[idx])
    compute, calls = _compute_counter({0: np.asarray([3.0]), 1: np.asarray([9.0])})
    features, computed = store.get_or_compute(["c", "b", "a"], compute)
    assert computed == 1 and calls == [[0]]
    assert features[:, 0].tolist() == [3.0, 2.0, 1.0]


def test_duplicate_content_is_computed_once(tmp_path):
    compute, calls = _compute_counter({0: np.asarray([5.0]), 2: np.asarray([6.0])})
    features, computed = FeatureStore("k", root=tmp_path).get_or_compute(["x", "x", "y"], compute)
    assert computed == 2 and calls == [[0, 2]]
    assert features[:, 0].tolist() == [5.0, 5.0, 6.0]


def test_another_key_is_another_store(tmp_path):
    FeatureStore("model-a", root=tmp_path).get_or_compute(["a"], lambda idx: np.ones((1, 2)))
    _, computed = FeatureStore("model-b", root=tmp_path).get_or_compute(["a"], lambda idx: np.zeros((1, 2)))
    assert computed == 1


def test_corrupt_store_is_recomputed_not_fatal(tmp_path):
    store = FeatureStore("k", root=tmp_path)
    store.get_or_compute(["a"], lambda idx: np.ones((1, 2)))
    store.path.write_bytes(b"not a zip file")
    features, computed = store.get_or_compute(["a"], lambda idx: np.full((1, 2), 7.0))
    assert computed == 1 and features.tolist() == [[7.0, 7.0]]


def test_no_temporary_files_are_left_behind(tmp_path):
    FeatureStore("k", root=tmp_path).get_or_compute(["a", "b"], lambda idx: np.ones((len(idx), 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz"]
