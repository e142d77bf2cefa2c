"""Caches left damaged (garbled, of another layout, removed while in use, under a non-UTF-8 folder): each is
recomputed with one warning, never a traceback and never a wrong result."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data import doctor, feature_cache, image_store
from data.feature_cache import FeatureStore, _row_digest
from data.image_store import image_store_dir, stored_images
from error_lines import one_error_line

VALUES = np.arange(6, dtype=np.float32).reshape(3, 2)
KEYS = ["a", "b", "c"]



def _warnings(caplog) -> list:
    """The test's warnings: its INFO lines are captured too when another test set the root logger to INFO."""
    return [record for record in caplog.records if record.levelno >= logging.WARNING]

def _compute(indices):
    return VALUES[indices]


def _filled_store(root, name="k") -> FeatureStore:
    store = FeatureStore(name, root=root)
    store.get_or_compute(KEYS, _compute)
    return store


def _rewrite(store: FeatureStore, **changes) -> None:
    with np.load(store.path) as saved:
        arrays = {**dict(saved), **changes}
    with open(store.path, "wb") as handle:
        np.savez(handle, **arrays)


def _lone_array(store):
    with open(store.path, "wb") as handle:  # an .npy array under the store's name
        np.save(handle, VALUES)


def _fewer_feature_rows(store):
    with np.load(store.path) as saved:
        _rewrite(store, features=saved["features"][:2])


def _keys_of_rank_two(store):
    with np.load(store.path) as saved:
        _rewrite(store, keys=saved["keys"].reshape(1, 3))


def _scalars(store):
    _rewrite(store, keys=np.asarray("a"), features=np.float32(1), row_sha256=np.asarray("x"))


@pytest.mark.parametrize("damage", [_lone_array, _fewer_feature_rows, _keys_of_rank_two, _scalars])
def test_a_feature_store_of_another_layout_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    """Each was a traceback (TypeError: no context manager; IndexError: 2 feature rows for 3 keys; ...)."""
    store = _filled_store(tmp_path)
    damage(store)
    with caplog.at_level(logging.WARNING, logger="data.feature_cache"):
        features, computed = FeatureStore("k", root=tmp_path).get_or_compute(KEYS, _compute)
    assert computed == 3 and np.array_equal(features, VALUES)
    assert caplog.text.count("Ignoring unreadable feature cache") == 1
    _, computed = FeatureStore("k", root=tmp_path).get_or_compute(KEYS, _compute)  # rewritten whole
    assert computed == 0


def test_a_store_of_another_shape_in_a_read_only_cache_is_computed_without_it(tmp_path, monkeypatch, caplog):
    """Removing the store before rebuilding it raised PermissionError out of a read-only cache."""
    store = FeatureStore("k", root=tmp_path)
    other = np.ones((1, 5), np.float32)  # intact rows (their digests match), features of another width
    np.savez(store.path, keys=np.asarray(["z"]), features=other, row_sha256=np.asarray([_row_digest("z", other[0])]))

    def read_only(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(store.path), "unlink", read_only)
    with caplog.at_level(logging.WARNING, logger="data.feature_cache"):
        features, computed = store.get_or_compute(["c", "a", "c"], _compute)
    assert computed == 2 and np.array_equal(features, VALUES[[0, 1, 0]])
    assert "Could not remove the feature cache" in caplog.text


def test_an_unwritable_store_warns_once_for_all_its_lookups(tmp_path, caplog):
    """The train and validation lookups of a run share a store: the same warning was given twice."""
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="data.feature_cache"):
        for keys in (["a", "b"], ["c"]):
            features, _ = FeatureStore("k", root=root).get_or_compute(keys, lambda i: np.ones((len(i), 2)))
            assert features.shape == (len(keys), 2)
    assert caplog.text.count("Could not write the feature cache") == 1


def test_an_unreadable_and_unwritable_store_is_one_warning(tmp_path, monkeypatch, caplog):
    """A read-only cache's unreadable store gave a warning on each read and on each write (three in a run)."""
    store = _filled_store(tmp_path)
    store.path.write_bytes(b"garbled")

    def read_only(path, write, label=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(feature_cache, "write_atomically", read_only)
    with caplog.at_level(logging.WARNING, logger="data.feature_cache"):
        for keys in (KEYS, KEYS[:1]):
            features, _ = FeatureStore("k", root=tmp_path).get_or_compute(keys, _compute)
            assert np.array_equal(features, VALUES[:len(keys)])
    assert len(_warnings(caplog)) == 1 and "Ignoring unreadable feature cache" in caplog.text


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """kill -9 while a store was written left its temporary for good (hundreds of MB for activations)."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)  # a process id that is no longer running
    dead = tmp_path / f".tmp-{child}-k.npz"
    other_store = tmp_path / f".tmp-{child}-other.npz"  # another store's: its own next write removes it
    live = tmp_path / f".tmp-{os.getppid()}-k.npz"  # a process that still runs (a concurrent writer)
    for leftover in (dead, other_store, live):
        leftover.write_bytes(b"half a store")
    _filled_store(tmp_path)
    assert not dead.exists() and other_store.exists() and live.exists()


# --------------------------------------------------------------------------- the data doctor's cache


@pytest.fixture
def checked(tmp_path, make_image, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    paths = [str(make_image(root / "a" / f"{i}.png", color=(i * 60, 0, 0))) for i in range(3)]
    first = doctor.check_files(paths, "image", root)
    return root, paths, first, doctor._DoctorCache(root, "image").path


def _one_entry(fields_change):
    def damage(payload):
        key = sorted(payload["files"])[0]
        payload["files"][key][-1] = fields_change(payload["files"][key][-1])  # the verdict, after the file's stat
        return payload
    return damage


@pytest.mark.parametrize("damage", [
    pytest.param(lambda payload: [], id="a-list"),
    pytest.param(lambda payload: None, id="null"),
    pytest.param(lambda payload: {**payload, "files": []}, id="files-a-list"),
    pytest.param(_one_entry(lambda fields: {k: v for k, v in fields.items() if k != "sha256"}), id="no-sha256"),
    pytest.param(_one_entry(lambda fields: []), id="fields-a-list"),
    pytest.param(_one_entry(lambda fields: {**fields, "notes": None}), id="notes-null"),
    pytest.param(_one_entry(lambda fields: {**fields, "usable": "no"}), id="usable-a-string"),
])
def test_a_doctor_cache_of_another_layout_is_checked_again(checked, damage, caplog):
    """Valid JSON of another layout was an AttributeError, KeyError or TypeError traceback at the data check;
    `"usable": "no"` was a usable file."""
    root, paths, first, cache_file = checked
    cache_file.write_text(json.dumps(damage(json.loads(cache_file.read_text()))))
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        assert doctor.check_files(paths, "image", root) == first
    assert doctor.check_files(paths, "image", root) == first


def test_a_garbled_doctor_cache_gives_one_warning(checked, caplog):
    """The README promises a warning for a damaged data-doctor cache; it was silent."""
    root, paths, first, cache_file = checked
    cache_file.write_bytes(b"\xff\xfe{ not json")
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        assert doctor.check_files(paths, "image", root) == first
    assert caplog.text.count("Ignoring the unreadable data-doctor cache") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        assert doctor.check_files(paths, "image", root) == first  # rewritten whole: no warning now
    assert caplog.text == ""


def test_an_unreadable_and_unwritable_doctor_cache_is_one_warning(checked, monkeypatch, caplog):
    root, paths, first, cache_file = checked
    cache_file.write_text("{ not json")

    def read_only(path, write, label=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(doctor, "write_atomically", read_only)
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        assert doctor.check_files(paths, "image", root) == first
    assert len(_warnings(caplog)) == 1 and "Ignoring the unreadable data-doctor cache" in caplog.text


def test_a_fifo_in_place_of_the_doctor_cache_is_not_opened(checked, caplog):
    """open() of a FIFO blocks until something writes to it: the data check hung for good."""
    root, paths, first, cache_file = checked
    cache_file.unlink()
    os.mkfifo(cache_file)
    results = []
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        check = threading.Thread(target=lambda: results.append(doctor.check_files(paths, "image", root)))
        check.start()
        check.join(timeout=20)
        if check.is_alive():  # stuck in open(): a writer that closes at once lets it go on, then fail
            os.close(os.open(cache_file, os.O_WRONLY | os.O_NONBLOCK))
            check.join()
            pytest.fail("the data check opened the FIFO")
    assert results == [first] and "not a regular file (a FIFO)" in caplog.text
    assert cache_file.is_file()  # replaced by the cache


def test_a_missing_doctor_cache_or_cache_folder_is_no_warning(tmp_path, make_image, monkeypatch, caplog):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = str(make_image(tmp_path / "data" / "a" / "one.png"))
    with caplog.at_level(logging.WARNING, logger="data.doctor"):
        doctor.check_files([path], "image", tmp_path / "data")
    assert caplog.text == ""


# --------------------------------------------------------------------------- the decoded-image store


PIXELS = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)


def _images(cache_root, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", os.fsdecode(cache_root))
    stored = stored_images([f"file{i}" for i in range(5)], [f"key{i}" for i in range(5)], (4, 4), "stretch",
                           False, lambda order: tf.data.Dataset.from_tensor_slices(PIXELS[order]))
    assert stored is not None
    return stored[0]


def _pixels(dataset) -> np.ndarray:
    return np.stack([image.numpy() for image in dataset])


def _store(cache_root):
    (store,) = [p for p in image_store_dir().glob("*.npy") if not p.name.startswith(".")]
    return store


@pytest.mark.parametrize("content", [b"", "npz"])
def test_an_empty_or_npz_image_store_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog, content):
    """An empty store was an EOFError traceback, an .npz under its name an AttributeError."""
    _images(tmp_path, monkeypatch)
    store = _store(tmp_path)
    if content == "npz":
        with open(store, "wb") as handle:
            np.savez(handle, pixels=PIXELS)
    else:
        store.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        assert np.array_equal(_pixels(_images(tmp_path, monkeypatch)), PIXELS)
    assert "Ignoring damaged image cache" in caplog.text


def test_an_unreadable_and_unwritable_image_store_is_one_warning(tmp_path, monkeypatch, caplog):
    _images(tmp_path, monkeypatch)
    _store(tmp_path).write_bytes(b"")

    def read_only(path, write, label=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(image_store, "write_atomically", read_only)
    with caplog.at_level(logging.WARNING, logger="data.image_store"):
        stored = stored_images([f"file{i}" for i in range(5)], [f"key{i}" for i in range(5)], (4, 4), "stretch",
                               False, lambda order: tf.data.Dataset.from_tensor_slices(PIXELS[order]))
    assert stored is None  # the caller decodes as without a cache
    assert len(_warnings(caplog)) == 1 and "Ignoring damaged image cache" in caplog.text


def test_an_image_store_removed_between_two_epochs_is_one_error_naming_the_cache(tmp_path, monkeypatch, capsys):
    """tf.data opens the store again at each epoch: `rm -r <cache>/images` during a run ended it at the next
    epoch with "An input file could not be read ... check the folder", which sent the user to a data folder that
    was fine. (Reading it through a descriptor held open was tried: a descriptor closed while TensorFlow still
    holds the dataset can be reused by another file, which would then be read as pixels.)"""
    from app.cli import setup_logging

    setup_logging()  # first: a handler an earlier test left on its own (closed) stderr would fail on this test's lines
    dataset = _images(tmp_path, monkeypatch)
    assert np.array_equal(_pixels(dataset), PIXELS)
    for entry in image_store_dir().iterdir():
        entry.unlink()
    image_store_dir().rmdir()

    _next_epoch_is_one_error(dataset, tmp_path / "run", capsys)


def _next_epoch_is_one_error(dataset, run: Path, capsys, *fragments) -> None:
    """Reading `dataset` again, inside a run, ends it with one ERROR line naming the cache and --resume."""
    from app import run_dir as rd
    from app.cli import run_safely

    def next_epoch() -> int:
        rd.set_active_run(run)
        _pixels(dataset)
        return 0

    assert run_safely(next_epoch) == 2
    one_error_line(capsys.readouterr().err, "The image cache (--image-cache disk) was removed or changed while it "
                   "was being read", f"python train.py --resume {run}", *fragments)


@pytest.mark.parametrize("cut", [7, 48], ids=["part-of-an-image", "whole-images"])
def test_an_image_store_truncated_between_two_epochs_is_one_error_naming_the_cache(tmp_path, monkeypatch, capsys,
                                                                                    cut):
    """A store truncated in place during a run (a full disk's repair, another tool) ended it with TensorFlow's
    traceback: "not an exact multiple of the record length", or, cut to whole images, "expected to contain 5
    elements but contained only 4", which names no file."""
    from app.cli import setup_logging

    setup_logging()
    dataset = _images(tmp_path, monkeypatch)
    assert np.array_equal(_pixels(dataset), PIXELS)
    store = _store(tmp_path)
    with open(store, "r+b") as handle:
        handle.truncate(store.stat().st_size - cut)

    _next_epoch_is_one_error(dataset, tmp_path / "run", capsys,
                             str(store) if cut == 7 else "its store was cut short (4 of its 5 images left)")


def test_an_image_store_under_a_non_utf8_cache_folder_is_read(tmp_path, monkeypatch):
    """A cache folder whose name is not UTF-8 was a ValueError out of TensorFlow's string conversion."""
    root = os.fsencode(tmp_path) + b"/cache-\xff\xfe"
    assert np.array_equal(_pixels(_images(root, monkeypatch)), PIXELS)  # written, then read back
    assert np.array_equal(_pixels(_images(root, monkeypatch)), PIXELS)  # from the store
