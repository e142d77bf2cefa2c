"""The activation store: one store per cut and view, float16 rows that round-trip exactly and carry digests."""

import numpy as np

from data.activation_cache import activation_store, activation_store_key

IDENTITY = {"backbone": "b", "weights": "w", "weights_sha256": "x", "size": 96, "resize": "stretch",
            "cut": "block14_expand_conv", "augmentation": {"rotation": 0.05}}


def test_every_thing_the_activations_depend_on_gives_another_store():
    keys = {activation_store_key(IDENTITY, 0), activation_store_key(IDENTITY, 1),
            activation_store_key({**IDENTITY, "cut": "block12_expand_conv"}, 0),
            activation_store_key({**IDENTITY, "size": 64}, 0),
            activation_store_key({**IDENTITY, "augmentation": {"rotation": 0.1}}, 1)}
    assert len(keys) == 5 and activation_store_key(IDENTITY, 0) == activation_store_key(dict(IDENTITY), 0)


def test_rows_are_float16_looked_up_by_content_and_a_damaged_row_is_recomputed(tmp_path):
    rows = np.random.default_rng(0).normal(size=(3, 2, 2, 4)).astype(np.float32)
    calls = []

    def compute(indices):
        calls.append(list(indices))
        return rows[indices]

    first, computed = activation_store("k", root=tmp_path).get_or_compute(["a", "b", "c"], compute)
    assert computed == 3 and first.dtype == np.float16
    np.testing.assert_array_equal(first, rows.astype(np.float16))
    again, computed = activation_store("k", root=tmp_path).get_or_compute(["c", "a"], compute)
    assert computed == 0 and np.array_equal(again, first[[2, 0]])
    with np.load(tmp_path / "k.npz") as stored:  # one row altered on disk, its digest left as it was
        keys, features, digests = stored["keys"], stored["features"].copy(), stored["row_sha256"]
    features[1] += 1
    np.savez(tmp_path / "k.npz", keys=keys, features=features, row_sha256=digests)
    restored, computed = activation_store("k", root=tmp_path).get_or_compute(["a", "b"], compute)
    assert computed == 1 and calls[-1] == [1] and np.array_equal(restored, first[:2])
