"""Stratified, seeded train/validation/test splits, meta splits and class weights (data/splits.py)."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from data.errors import DataError
from data.scan import Example, ScanResult, scan_folder
from data.splits import assign_splits, class_disjoint_splits, class_weights, select

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


# --------------------------------------------------------------------------- three-way splits

THREE_WAY = {  # n files -> (train, val, test) with val_fraction = test_fraction = 0.2
    "ant": (1, 1, 0),  # 2 files: no test file (and a warning)
    "bee": (1, 1, 1),  # 3 files: at least one test file
    "cat": (3, 1, 1),
    "dog": (6, 2, 2),
    "eel": (11, 3, 3),
}


def _split_counts(scan, examples):
    return {
        name: tuple(sum(1 for e in examples if e.label == label and e.split == s) for s in ("train", "val", "test"))
        for label, name in enumerate(scan.class_names)
    }


def test_three_way_split_rounded_counts_per_class(caplog):
    scan = _scan()
    with caplog.at_level(logging.WARNING, logger="data.splits"):
        examples = assign_splits(scan, 0.2, seed=0, test_fraction=0.2)

    assert _split_counts(scan, examples) == THREE_WAY
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'ant'" in warnings[0] and "2 files" in warnings[0] and "testing" in warnings[0]


@pytest.mark.parametrize("val_fraction, test_fraction", [(0.1, 0.1), (0.2, 0.3), (0.3, 0.1), (0.25, 0.5)])
def test_three_way_split_disjoint_complete_and_formula(val_fraction, test_fraction):
    sizes = {f"c{n:02d}": n for n in range(2, 21)}
    scan = _scan(sizes)
    examples = assign_splits(scan, val_fraction, seed=3, test_fraction=test_fraction)

    paths = [e.path for e in examples]
    assert len(paths) == len(set(paths)) == len(scan.examples)  # every file once: disjoint and complete
    assert set(paths) == {e.path for e in scan.examples}
    original = {e.path: e.label for e in scan.examples}
    assert all(original[e.path] == e.label for e in examples)
    for name, (train, val, test) in _split_counts(scan, examples).items():
        n = sizes[name]
        expected_val = min(n - 1, max(1, round(val_fraction * n)))
        expected_test = max(0, min(n - 1 - expected_val, max(1 if n >= 3 else 0, round(test_fraction * n))))
        assert (val, test) == (expected_val, expected_test), name
        assert train == n - val - test >= 1
        if n >= 3:
            assert test >= 1, name


def test_three_way_split_of_a_scanned_flat_folder(tmp_path, make_image):
    for name, n in (("pair", 2), ("trio", 3), ("seven", 7)):
        for i in range(n):
            make_image(tmp_path / name / f"{i}.png")
    scan = scan_folder(tmp_path)

    examples = assign_splits(scan, 0.2, seed=0, test_fraction=0.2)

    assert _split_counts(scan, examples) == {"pair": (1, 1, 0), "seven": (5, 1, 1), "trio": (1, 1, 1)}
    assert sorted(e.path for e in examples) == sorted(e.path for e in scan.examples)
    assert assign_splits(scan, 0.2, seed=0, test_fraction=0.2) == examples


def test_folder_with_its_own_test_split_gets_no_automatic_test_split():
    tests = [Example(f"/data/test/{name}/t{i}.png", label, "test") for label, name in enumerate(sorted(CLASS_SIZES)) for i in range(2)]
    scan = _scan(split="train", extra=tests)

    examples = assign_splits(scan, 0.2, seed=0, test_fraction=0.4)

    assert {e.path for e in examples if e.split == "test"} == {e.path for e in tests}
    train_files = {e.path for e in scan.examples if e.split == "train"}
    assert {e.path for e in examples if e.split in ("train", "val")} == train_files
    # without a test/ folder the same training files do lose some to a test split
    carved = assign_splits(_scan(split="train"), 0.2, seed=0, test_fraction=0.4)
    assert any(e.split == "test" for e in carved)


def _with_duplicates():
    """Five classes; in each, files 0-2 are identical, 3-4 are identical, the rest unique."""
    examples = []
    for label, name in enumerate(sorted(CLASS_SIZES)):
        for i in range(CLASS_SIZES[name] + 3):
            digest = f"{name}-A" if i < 3 else f"{name}-B" if i < 5 else f"{name}-{i}"
            examples.append(Example(f"/data/{name}/{i:03d}.png", label, None, sha256=digest))
    return ScanResult("/data", "flat", "image", sorted(CLASS_SIZES), examples)


@pytest.mark.parametrize("test_fraction", [0.0, 0.2, 0.4])
def test_identical_files_always_land_in_the_same_split(test_fraction):
    scan = _with_duplicates()
    for seed in range(25):
        examples = assign_splits(scan, 0.3, seed=seed, test_fraction=test_fraction)
        splits_by_hash = {}
        for e in examples:
            splits_by_hash.setdefault(e.sha256, set()).add(e.split)
        assert all(len(splits) == 1 for splits in splits_by_hash.values()), (seed, splits_by_hash)
        assert sorted(e.path for e in examples) == sorted(e.path for e in scan.examples)


@pytest.mark.parametrize("test_fraction", [0.0, 0.3])
def test_a_file_filed_under_two_classes_trains_in_both(test_fraction):
    """One copy in test under one label, the other in train under another: the model saw the test image."""
    scan = _with_duplicates()
    shared = [Example("/data/ant/shared.png", 0, None, sha256="shared"),
              Example("/data/eel/shared.png", 4, None, sha256="shared")]
    scan = ScanResult(scan.root, scan.layout, scan.modality, scan.class_names, scan.examples + shared)
    for seed in range(25):
        examples = assign_splits(scan, 0.3, seed=seed, test_fraction=test_fraction)
        assert {e.split for e in examples if e.sha256 == "shared"} == {"train"}, seed
        assert sorted(e.path for e in examples) == sorted(e.path for e in scan.examples)


def test_duplicates_never_leave_a_class_without_training_files():
    a = [Example("/d/a/1.png", 0, None, "same"), Example("/d/a/2.png", 0, None, "same"), Example("/d/a/3.png", 0, None, "x")]
    b = [Example(f"/d/b/{i}.png", 1, None, f"b{i}") for i in range(4)]
    for members, test_fraction in ((a[:2], 0.0), (a, 0.2)):
        scan = ScanResult("/d", "flat", "image", ["a", "b"], members + b)
        for seed in range(5):
            examples = assign_splits(scan, 0.2, seed=seed, test_fraction=test_fraction)
            assert any(e.label == 0 and e.split == "train" for e in examples), (len(members), seed)


@pytest.mark.parametrize("val_fraction, test_fraction", [(0.5, 0.5), (0.8, 0.3), (0.1, 0.9)])
def test_val_plus_test_fraction_of_one_or_more_is_an_error(val_fraction, test_fraction):
    with pytest.raises(DataError, match=r"val_fraction \+ test_fraction must be below 1") as info:
        assign_splits(_scan(), val_fraction, seed=0, test_fraction=test_fraction)
    assert str(test_fraction) in str(info.value)


@pytest.mark.parametrize("test_fraction", [-0.1, 1.0])
def test_invalid_test_fraction_is_an_error(test_fraction):
    with pytest.raises(DataError, match="test_fraction") as info:
        assign_splits(_scan(), 0.2, seed=0, test_fraction=test_fraction)
    assert str(test_fraction) in str(info.value)


# --------------------------------------------------------------------------- class-disjoint meta splits


@pytest.mark.parametrize("num_classes", [3, 4, 5, 7, 10, 23])
def test_class_disjoint_splits_partition_the_classes(num_classes):
    names = [f"class_{i:02d}" for i in range(num_classes)]
    random.Random(num_classes).shuffle(names)

    assignment = class_disjoint_splits(names, seed=1)

    assert set(assignment) == set(names)  # complete (and a dict: each class in exactly one split)
    groups = {s: {c for c, split in assignment.items() if split == s} for s in ("meta_train", "meta_val", "meta_test")}
    assert set(assignment.values()) <= set(groups)
    assert all(groups.values()), groups  # every split non-empty
    assert sum(len(g) for g in groups.values()) == num_classes
    assert len(groups["meta_train"]) >= len(groups["meta_val"])


def test_class_disjoint_splits_follow_the_fractions():
    names = [f"c{i}" for i in range(10)]
    assignment = class_disjoint_splits(names, fractions=(0.6, 0.2, 0.2), seed=0)
    assert Counter(assignment.values()) == {"meta_train": 6, "meta_val": 2, "meta_test": 2}
    only_two = class_disjoint_splits(names, fractions=(0.7, 0.3, 0.0), seed=0)
    assert Counter(only_two.values()) == {"meta_train": 7, "meta_val": 3}


def test_class_disjoint_splits_are_seeded_and_order_independent():
    names = [f"c{i}" for i in range(12)]
    first = class_disjoint_splits(names, seed=5)
    assert class_disjoint_splits(list(reversed(names)), seed=5) == first
    others = [class_disjoint_splits(names, seed=s) for s in range(6, 12)]
    assert any(other != first for other in others)
    assert all(Counter(o.values()) == Counter(first.values()) for o in others)


@pytest.mark.parametrize("num_classes", [1, 2])
def test_class_disjoint_splits_with_too_few_classes_is_an_error(num_classes):
    with pytest.raises(DataError) as info:
        class_disjoint_splits([f"c{i}" for i in range(num_classes)])
    message = str(info.value)
    assert "at least 3 classes" in message
    assert f"Received: {num_classes} classes" in message


def test_class_disjoint_splits_bad_fractions_is_an_error():
    with pytest.raises(DataError, match="summing to 1"):
        class_disjoint_splits(["a", "b", "c"], fractions=(0.5, 0.2, 0.2))


# --------------------------------------------------------------------------- class weights


def test_class_weights_balanced_is_one():
    assert class_weights([0, 1, 2, 0, 1, 2], 3) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_class_weights_imbalanced_is_inverse_frequency():
    weights = class_weights([0, 0, 0, 1], 2)
    assert weights == pytest.approx({0: 2 / 3, 1: 2.0})
    # weighted counts are equal per class
    assert 3 * weights[0] == pytest.approx(1 * weights[1])


def test_class_weights_absent_class_gets_zero():
    weights = class_weights([0, 1, 1, 0], 3)
    assert weights[2] == 0.0
    assert weights[0] == weights[1] == pytest.approx(4 / 6)
    assert set(weights) == {0, 1, 2}
    assert all(isinstance(w, float) for w in weights.values())
