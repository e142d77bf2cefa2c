"""The on-disk store of decoded images (data/image_store.py, `image_dataset(cache="disk")`)."""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from data import image_store
from data.atomic_write import FAULT_VARIABLE
from data.image_store import image_store_dir
from data.pipeline import image_dataset

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (40, 80, 120)]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def files(tmp_path, make_image):
    """Seven distinct solid colours, odd sizes (resizing is exercised), and their content digests."""
    paths = [str(make_image(tmp_path / f"{i}.png", size=(8 + i, 10), color=colour)) for i, colour in enumerate(COLOURS)]
    return paths, [hashlib.sha256(open(path, "rb").read()).hexdigest() for path in paths]


def _arrays(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _stores(cache_dir):
    return sorted(p.name for p in (cache_dir / "images").glob("*.npy") if not p.name.startswith("."))


def test_disk_store_gives_the_decoded_pixels_in_order_and_serves_later_datasets_without_the_files(files, cache_dir):
    paths, keys = files
    labels = [3, 1, 4, 1, 5, 9, 2]
    expected = _arrays(image_dataset(paths, labels, (6, 12), 3, cache="none"))

    first = _arrays(image_dataset(paths, labels, (6, 12), 3, cache="disk", content_keys=keys))
    for path in paths:
        os.remove(path)
    second = _arrays(image_dataset(paths, labels, (6, 12), 3, cache="disk", content_keys=keys))

    for got in (first, second):
        np.testing.assert_array_equal(got[0], expected[0])
        assert got[1].tolist() == labels
    assert len(_stores(cache_dir)) == 1
    assert int(image_dataset(paths, labels, (6, 12), 3, cache="disk", content_keys=keys).cardinality()) == 3


def test_shuffled_store_keeps_image_label_pairs_and_reshuffles_every_epoch(files, cache_dir):
    paths, keys = files
    labels = list(range(7))
    dataset = image_dataset(paths, labels, (8, 8), 7, shuffle=True, seed=5, cache="disk", content_keys=keys)
    orders = []
    for _ in range(4):
        images, ys = _arrays(dataset)
        assert sorted(ys.tolist()) == labels
        assert all((image == COLOURS[label]).all() for image, label in zip(images, ys))
        orders.append(tuple(ys.tolist()))
    assert len(set(orders)) > 1
    # The shuffled store's rows are not in the folder's order (a random-looking base order).
    (store,) = _stores(cache_dir)
    rows = np.load(cache_dir / "images" / store, mmap_mode="r")
    assert [COLOURS.index(tuple(row[0, 0])) for row in rows] != labels


def test_the_store_name_covers_size_resize_and_content(files, cache_dir, tmp_path, make_image):
    paths, keys = files
    image_dataset(paths, None, (8, 8), 4, cache="disk", content_keys=keys)
    image_dataset(paths, None, (8, 8), 4, cache="disk", content_keys=keys)  # the same: reused
    assert len(_stores(cache_dir)) == 1
    image_dataset(paths, None, (9, 8), 4, cache="disk", content_keys=keys)
    image_dataset(paths, None, (8, 8), 4, resize="pad", cache="disk", content_keys=keys)
    assert len(_stores(cache_dir)) == 3
    # An edited file: without a content digest, its size and modification time name it.
    image_dataset(paths, None, (8, 8), 4, cache="disk")
    make_image(paths[0], size=(20, 20), color=(1, 2, 3))
    os.utime(paths[0], ns=(1, 1))
    images = np.concatenate(list(image_dataset(paths, None, (8, 8), 4, cache="disk").as_numpy_iterator()))
    assert (images[0] == (1, 2, 3)).all()
    assert len(_stores(cache_dir)) == 5


def test_a_damaged_store_is_rebuilt_with_a_warning(files, cache_dir, caplog):
    paths, keys = files
    expected = _arrays(image_dataset(paths, list(range(7)), (8, 8), 7, cache="none"))
    image_dataset(paths, list(range(7)), (8, 8), 7, cache="disk", content_keys=keys)
    (store,) = _stores(cache_dir)
    with open(cache_dir / "images" / store, "r+b") as handle:
        handle.truncate(os.path.getsize(cache_dir / "images" / store) - 10)
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        got = _arrays(image_dataset(paths, list(range(7)), (8, 8), 7, cache="disk", content_keys=keys))
    assert "damaged image cache" in caplog.text
    np.testing.assert_array_equal(got[0], expected[0])


def test_temporaries_of_dead_builds_are_removed_and_live_ones_kept(files, cache_dir):
    paths, keys = files
    folder = image_store_dir()
    folder.mkdir(parents=True)
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)  # a process id that is no longer running
    dead = folder / f".tmp-{child}-{'a' * 32}.npy"
    live = folder / f".tmp-{os.getpid()}-{'b' * 32}.npy"
    dead.write_bytes(b"half a store")
    live.write_bytes(b"being written")
    image_dataset(paths, None, (8, 8), 4, cache="disk", content_keys=keys)
    assert not dead.exists() and live.exists()


def test_without_space_or_with_a_failing_write_the_images_are_decoded(files, cache_dir, monkeypatch, caplog):
    paths, keys = files
    expected = _arrays(image_dataset(paths, list(range(7)), (8, 8), 7, cache="none"))
    real_usage = image_store.shutil.disk_usage
    monkeypatch.setattr(image_store.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=1000))
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        got = _arrays(image_dataset(paths, list(range(7)), (8, 8), 7, cache="disk", content_keys=keys))
    assert "Image cache not used" in caplog.text and "METATUNE_CACHE_DIR" in caplog.text
    np.testing.assert_array_equal(got[0], expected[0])
    monkeypatch.setattr(image_store.shutil, "disk_usage", real_usage)

    monkeypatch.setenv(FAULT_VARIABLE, "enospc@1")  # the disk fills up while the store is written
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        got = _arrays(image_dataset(paths, list(range(7)), (8, 8), 7, cache="disk", content_keys=keys))
    assert "Could not write the image cache" in caplog.text
    np.testing.assert_array_equal(got[0], expected[0])
    assert os.listdir(image_store_dir()) == []  # no temporary left behind


def test_an_empty_file_list_gives_an_empty_dataset(cache_dir):
    assert list(image_dataset([], [], (8, 8), 4, cache="disk")) == []


def test_a_missing_file_without_digest_falls_back_to_decoding_which_names_it(files, cache_dir, caplog):
    paths, _ = files
    os.remove(paths[2])
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        dataset = image_dataset(paths, None, (8, 8), 4, cache="disk")
    assert "Image cache not used" in caplog.text
    with pytest.raises(tf.errors.OpError):
        list(dataset)


def test_a_file_that_no_longer_decodes_is_one_data_error(files, cache_dir):
    from data.errors import DataError

    paths, keys = files
    with open(paths[3], "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # still routed as PNG by its name, no longer decodable
    with pytest.raises(DataError, match="could not be decoded while writing the image cache"):
        image_dataset(paths, None, (8, 8), 4, cache="disk", content_keys=keys)
    assert [p for p in os.listdir(image_store_dir()) if p.endswith(".npy")] == []  # no store, no temporary
