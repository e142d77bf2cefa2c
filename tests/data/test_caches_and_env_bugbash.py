"""On-disk caches and METATUNE_* variables, bug-bash: a file rewritten in place with its size and mtime kept (`touch
-r`, `cp -p`) kept its old SHA-256 in the data doctor's cache, so the run used the old file's cached features and its
manifest named the old content; METATUNE_FAULT=kill (no @N) or a METATUNE_FAULT_LOG in a missing folder was a
traceback at the run's first write; a METATUNE_CACHE_DIR inside the new --output made the run fail after the data
check with "Run directory already exists and is not empty", a folder the user never filled."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train
from colour_folders import write_colour_folder
from data import doctor
from data.atomic_write import FAULT_LOG_VARIABLE, FAULT_VARIABLE, fault_setting_problem
from data.cache import cache_dir
from data.doctor import check_files
from data.feature_cache import FeatureStore
from error_lines import one_error_line

FAST = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "1", "--refit", "no"]


def _rewrite_keeping_size_and_mtime(path: Path, colour) -> None:
    """Another image of the same size in bytes (uncompressed PNG: its size depends only on the dimensions), with the
    old modification time put back, as `cp -p` or `touch -r` leave it."""
    stat = path.stat()
    Image.new("RGB", (12, 12), colour).save(path, compress_level=0)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the doctor's cache key


def test_a_file_rewritten_in_place_with_size_and_mtime_kept_is_checked_again(tmp_path, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0)]):
        paths.append(tmp_path / "data" / "a" / f"{i}.png")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 12), colour).save(paths[-1], compress_level=0)
    names = [str(p) for p in paths]
    first = check_files(names, "image", tmp_path / "data")
    _rewrite_keeping_size_and_mtime(paths[0], (0, 0, 200))
    second = check_files(names, "image", tmp_path / "data")
    assert second[0].sha256 == _sha(paths[0]) != first[0].sha256  # was the old content's digest
    assert second[1] == first[1]


def test_a_doctor_cache_entry_of_the_older_layout_is_checked_again_not_trusted(tmp_path, monkeypatch):
    """Entries of the size + mtime layout ([size, mtime_ns, fields]) under the current version: checked again."""
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "data" / "a" / "0.png"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    check_files([str(path)], "image", tmp_path / "data")
    cache = doctor._DoctorCache(tmp_path / "data", "image")
    stat = path.stat()
    stale = {"usable": True, "sha256": "0" * 64, "notes": [], "reason": "", "encoding": ""}
    cache.path.write_text(json.dumps({"version": doctor.CACHE_VERSION,
                                      "files": {"a/0.png": [stat.st_size, stat.st_mtime_ns, stale]}}))
    (check,) = check_files([str(path)], "image", tmp_path / "data")
    assert check.sha256 == _sha(path)


def test_a_run_after_an_in_place_rewrite_uses_the_new_content_features_and_digest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    data = write_colour_folder(tmp_path / "data", per_class=4)
    edited = data / "red" / "0.png"
    Image.new("RGB", (12, 12), (220, 30, 30)).save(edited, compress_level=0)
    every = ["--test-fraction", "0"]  # the edited file's features are computed (train or validation)
    assert train.main([str(data), *FAST, *every, "--output", str(tmp_path / "r1")]) == 0
    old = _sha(edited)
    _rewrite_keeping_size_and_mtime(edited, (30, 40, 220))
    capsys.readouterr()
    assert train.main([str(data), *FAST, *every, "--output", str(tmp_path / "r2")]) == 0
    manifest = (tmp_path / "r2" / "manifest.json").read_text()
    assert _sha(edited) in manifest and old not in manifest
    err = capsys.readouterr().err
    computed = [int(line.split(", ")[1].split()[0]) for line in err.splitlines() if "Features for" in line]
    assert sum(computed) == 1, err  # the edited file alone, the others from the cache


# ----------------------------------------------------------------------------- where the cache is


@pytest.mark.parametrize("value, expected", [("", None), ("~/mt-cache", Path.home() / "mt-cache"),
                                             ("rel/cache", Path("rel/cache"))])
def test_the_cache_root_of_empty_tilde_and_relative_values(monkeypatch, tmp_path, value, expected):
    monkeypatch.setenv("METATUNE_CACHE_DIR", value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == (expected or tmp_path / "xdg" / "metatune")


def test_a_cache_that_is_a_file_costs_only_speed(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "file"))
    data = write_colour_folder(tmp_path / "data", per_class=3)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.keras").is_file()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if " WARNING " in line and " cache " in line]
    assert len(warnings) == 2 and all(str(tmp_path / "file") in w for w in warnings), warnings  # doctor, features
    assert (tmp_path / "file").read_text() == "not a folder"


@pytest.mark.parametrize("inside", ["run", "run/cache"])
def test_a_cache_inside_the_new_run_directory_is_refused_before_any_work(tmp_path, monkeypatch, capsys, inside):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / inside))
    data = write_colour_folder(tmp_path / "data", per_class=3)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "METATUNE_CACHE_DIR", str(tmp_path / inside), "--output")
    assert not (tmp_path / "run").exists()  # neither the run nor the cache written


# ----------------------------------------------------------------------------- two writers of one store


def test_two_writers_of_one_feature_store_both_get_their_features_and_leave_it_readable(tmp_path):
    """Two trainings sharing a cache: both load the store before either saves. Each returns its own correct rows,
    the last writer's store stays readable, and a row the other wrote and lost is computed again, never wrong."""
    rows = {key: np.full(4, i, np.float32) for i, key in enumerate("abcdef")}

    def compute(keys):
        return lambda indices: np.stack([rows[keys[i]] for i in indices])

    second_keys = list("cdef")
    inner = {}

    def first_compute(indices):  # the second process loads, computes and saves while the first computes
        inner["features"], inner["computed"] = FeatureStore("k", root=tmp_path).get_or_compute(
            second_keys, compute(second_keys))
        return compute(first_keys)(indices)

    first_keys = list("abcd")
    features, computed = FeatureStore("k", root=tmp_path).get_or_compute(first_keys, first_compute)
    assert computed == 4 and inner["computed"] == 4
    np.testing.assert_array_equal(features, np.stack([rows[k] for k in first_keys]))
    np.testing.assert_array_equal(inner["features"], np.stack([rows[k] for k in second_keys]))
    again, recomputed = FeatureStore("k", root=tmp_path).get_or_compute(list("abcdef"), compute(list("abcdef")))
    np.testing.assert_array_equal(again, np.stack([rows[k] for k in "abcdef"]))
    assert recomputed == 2  # e and f, lost to the first writer's rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz"]  # no temporary left


# ----------------------------------------------------------------------------- METATUNE_FAULT / METATUNE_FAULT_LOG


@pytest.mark.parametrize("value", ["kill", "kill@", "kill@x", "kill@0", "kill@-1", "kil@3", "enospc@label=",
                                   "kill@\u0663"])
def test_a_malformed_fault_switch_is_one_error_line_before_any_work(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv(FAULT_VARIABLE, value)
    data = write_colour_folder(tmp_path / "data", per_class=3)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, FAULT_VARIABLE, repr(value))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["missing/folder/log.txt", "."])
def test_a_fault_log_that_cannot_be_written_is_one_error_line(tmp_path, monkeypatch, capsys, where):
    monkeypatch.setenv(FAULT_LOG_VARIABLE, str(tmp_path / where))
    assert train.main([str(tmp_path / "nowhere"), "--check"]) == 2
    one_error_line(capsys.readouterr().err, FAULT_LOG_VARIABLE, str(tmp_path / where))


@pytest.mark.parametrize("value", ["kill@3", "enospc@1", "term@label=-head-epoch-0001", "kill@label=parity.json"])
def test_the_fault_switches_the_suite_uses_are_accepted(monkeypatch, tmp_path, value):
    monkeypatch.setenv(FAULT_VARIABLE, value)
    monkeypatch.setenv(FAULT_LOG_VARIABLE, str(tmp_path / "log.txt"))
    assert fault_setting_problem() is None
