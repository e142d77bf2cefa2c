"""Stratified, seeded train/validation splits (data/splits.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from data.errors import DataError
from data.scan import Example, ScanResult, scan_folder
from data.splits import assign_splits, select

CLASS_SIZES = {"ant": 2, "bee": 3, "cat": 5, "dog": 10, "eel": 17}


def _scan(sizes=CLASS_SIZES, split=None, extra=()):
    names = sorted(sizes)
    examples = [
        Example(f"/data/{name}/{i:03d}.png", label, split)
        for label, name in enumerate(names)
        for i in range(sizes[name])
    ]
    examples += list(extra)
    layout = "flat" if split is None else "split"
    return ScanResult("/data", layout, "image", names, examples)


def _val_paths(examples):
    return {e.path for e in examples if e.split == "val"}


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5, 0.9])
def test_every_class_in_train_and_val_with_rounded_val_counts(fraction):
    scan = _scan()
    examples = assign_splits(scan, fraction, seed=0)

    train = Counter(scan.class_names[e.label] for e in examples if e.split == "train")
    val = Counter(scan.class_names[e.label] for e in examples if e.split == "val")
    for name, n in CLASS_SIZES.items():
        expected_val = min(n - 1, max(1, round(fraction * n)))
        assert val[name] == expected_val, (name, n)
        assert train[name] == n - expected_val >= 1
    assert {e.split for e in examples} == {"train", "val"}


def test_train_and_val_are_disjoint_and_cover_the_pool():
    scan = _scan()
    examples = assign_splits(scan, 0.3, seed=7)

    train_paths, train_labels = select(examples, "train")
    val_paths, val_labels = select(examples, "val")
    assert not set(train_paths) & set(val_paths)
    assert len(train_paths) + len(val_paths) == len(scan.examples)
    assert set(train_paths) | set(val_paths) == {e.path for e in scan.examples}
    # labels travel with their files
    original = {e.path: e.label for e in scan.examples}
    assert [original[p] for p in train_paths] == train_labels
    assert [original[p] for p in val_paths] == val_labels


def test_same_seed_same_split_different_seed_different_split():
    scan = _scan()
    first = assign_splits(scan, 0.3, seed=42)
    again = assign_splits(scan, 0.3, seed=42)
    other = assign_splits(scan, 0.3, seed=43)

    assert first == again
    assert _val_paths(first) != _val_paths(other)
    # another seed changes which files, not how many per class
    assert Counter(e.label for e in first if e.split == "val") == Counter(
        e.label for e in other if e.split == "val"
    )


def test_split_does_not_depend_on_listing_order():
    scan = _scan()
    shuffled = list(scan.examples)
    random.Random(3).shuffle(shuffled)
    reordered = ScanResult(scan.root, scan.layout, scan.modality, scan.class_names, shuffled)

    assert _val_paths(assign_splits(scan, 0.25, seed=5)) == _val_paths(assign_splits(reordered, 0.25, seed=5))


def test_test_folder_examples_keep_split_test():
    tests = [Example(f"/data/test/{name}/t{i}.png", label, "test") for label, name in enumerate(sorted(CLASS_SIZES)) for i in range(2)]
    scan = _scan(split="train", extra=tests)

    examples = assign_splits(scan, 0.2, seed=0)

    test_paths = {e.path for e in examples if e.split == "test"}
    assert test_paths == {e.path for e in tests}
    assert not test_paths & _val_paths(examples)
    assert len(examples) == len(scan.examples)
    # the test examples play no part in the validation split
    assert _val_paths(examples) == _val_paths(assign_splits(_scan(split="train"), 0.2, seed=0))


def test_existing_val_folder_is_kept_as_is():
    vals = [Example(f"/data/val/{name}/v{i}.png", label, "val") for label, name in enumerate(sorted(CLASS_SIZES)) for i in range(3)]
    tests = [Example("/data/test/ant/t.png", 0, "test")]
    scan = _scan(split="train", extra=vals + tests)

    examples = assign_splits(scan, 0.5, seed=0)

    assert _val_paths(examples) == {e.path for e in vals}
    assert {e.path for e in examples if e.split == "train"} == {e.path for e in scan.examples if e.split == "train"}
    assert {e.path for e in examples if e.split == "test"} == {"/data/test/ant/t.png"}
    assert len(examples) == len(scan.examples)


def test_val_folder_with_a_single_training_file_is_fine():
    # with a val/ folder nothing is split off train/, so one training file is enough
    scan = _scan({"a": 1, "b": 1}, split="train", extra=[Example("/data/val/a/v.png", 0, "val"), Example("/data/val/b/v.png", 1, "val")])
    examples = assign_splits(scan, 0.2, seed=0)
    assert Counter(e.split for e in examples) == {"train": 2, "val": 2}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_invalid_fraction_is_an_error(fraction):
    with pytest.raises(DataError, match="val_fraction") as info:
        assign_splits(_scan(), fraction, seed=0)
    assert str(fraction) in str(info.value)


def test_class_with_one_file_is_an_error_naming_it():
    with pytest.raises(DataError) as info:
        assign_splits(_scan({"many": 5, "solo": 1}), 0.2, seed=0)
    message = str(info.value)
    assert "'solo'" in message
    assert "1 training file" in message
    assert "many" not in message


def test_split_of_a_scanned_folder(tmp_path, make_image):
    for name, n in (("cat", 4), ("dog", 6)):
        for i in range(n):
            make_image(tmp_path / name / f"{i}.png")
    scan = scan_folder(tmp_path)

    examples = assign_splits(scan, 0.5, seed=1)

    val = Counter(scan.class_names[e.label] for e in examples if e.split == "val")
    assert val == {"cat": 2, "dog": 3}
    assert sorted(e.path for e in examples) == sorted(e.path for e in scan.examples)
