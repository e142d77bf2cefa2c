"""Splits: stratified train/val/test with a fixed seed, class-disjoint meta splits, class weights."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace

import numpy as np

from data.errors import DataError
from data.records import Example
from data.scan import ScanResult
from data.shown_text import first_few

logger = logging.getLogger(__name__)
META_SPLITS = ("meta_train", "meta_val", "meta_test")


def _check_fraction(name: str, value: float, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise DataError(f"{name} must be in {bounds}. Received: {name}={value}")


def _duplicate_groups(members: list[Example]) -> list[list[Example]]:
    """Identical files (same content hash) form one group, so they always land in the same split."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in members:
        groups[example.sha256 or example.path].append(example)
    return sorted(groups.values(), key=lambda group: group[0].path)


def assign_splits(scan: ScanResult, val_fraction: float, seed: int, test_fraction: float = 0.0) -> list[Example]:
    """Return every example with split set to train, val or test.

    Folder splits (val/, test/) are kept as they are. A split the folder does not
    have is carved out of the training files per class: round(fraction * n) of
    each class (val: at least 1; test: at least 1 once a class has 3 files, with
    test_fraction > 0), chosen by a seeded shuffle of the sorted file list.
    Exact duplicates move together, so the same picture is never in train and in
    val/test through the automatic split; one filed under several classes stays in
    train in each. Same folder + seed -> same split.
    """
    _check_fraction("val_fraction", val_fraction, allow_zero=False)
    _check_fraction("test_fraction", test_fraction, allow_zero=True)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be below 1. Received: {val_fraction} + {test_fraction}")
    present = {e.split for e in scan.examples}
    need_val = "val" not in present
    need_test = "test" not in present and test_fraction > 0
    fixed = [e for e in scan.examples if e.split in ("val", "test")]
    pool = [e for e in scan.examples if e.split in (None, "train")]

    rng = np.random.default_rng(seed)
    result = list(fixed)
    # A file also filed under another class (a labelling conflict the data report lists) trains in every copy:
    # held out in one class, it would be its own training image under another label.
    labels_of: dict[str, set[int]] = defaultdict(set)
    for example in pool:
        if example.sha256:
            labels_of[example.sha256].add(example.label)
    across_classes = {digest for digest, labels in labels_of.items() if len(labels) > 1}
    no_test: list[str] = []  # classes too small to give a test file / a validation file
    no_val: list[str] = []
    for label, name in enumerate(scan.class_names):
        members = [e for e in pool if e.label == label]
        n = len(members)
        n_val = min(n - 1, max(1, int(round(val_fraction * n)))) if need_val else 0
        if need_val and n < 2:
            raise DataError(
                f"Class {name!r} has {n} training file(s); a validation split needs at "
                "least 2 per class. Add files or provide a val/ folder."
            )
        n_test = 0
        if need_test:
            n_test = min(n - 1 - n_val, max(1 if n >= 3 else 0, int(round(test_fraction * n))))
            if n_test <= 0:
                no_test.append(f"{name!r} ({n} files)")
                n_test = 0
        groups = _duplicate_groups(members)
        order = rng.permutation(len(groups))
        taken = {"test": 0, "val": 0}
        for position in order:
            group = groups[position]
            # A group goes to test/val only while at least one training file is left over.
            room = n - 1 - taken["test"] - taken["val"] >= len(group)
            if group[0].sha256 in across_classes:
                split = "train"
            elif room and taken["test"] < n_test:
                split = "test"
            elif room and taken["val"] < n_val:
                split = "val"
            else:
                split = "train"
            if split != "train":
                taken[split] += len(group)
            result += [replace(e, split=split) for e in group]
        if need_val and taken["val"] == 0:
            no_val.append(f"{name!r} ({n} files)")
    # One line each, however many classes: 200 small classes used to print 200 identical warnings.
    if no_test:
        logger.warning("%d class(es) have too few files to hold one out for testing: %s", len(no_test), first_few(no_test))
    if no_val:
        logger.warning("%d class(es): no validation file could be held out (too few or identical files): %s",
                       len(no_val), first_few(no_val))
    return sorted(result, key=lambda e: (e.split, e.label, e.path))




def select(examples: list[Example], split: str) -> tuple[list[str], list[int]]:
    chosen = [e for e in examples if e.split == split]
    return [e.path for e in chosen], [e.label for e in chosen]


def class_disjoint_splits(class_names: list[str], fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, str]:
    """Assign whole classes to meta_train / meta_val / meta_test (for meta-learning).

    Each split with a non-zero fraction gets at least one class; the rest follow
    the fractions by a seeded shuffle of the sorted class list.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"Meta split fractions must be three non-negative numbers summing to 1. Received: {fractions}")
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    names = sorted(class_names)
    if len(names) < len(wanted):
        raise DataError(
            f"Class-disjoint meta splits need at least {len(wanted)} classes. Received: {len(names)} classes {names}"
        )
    counts = [int(round(f * len(names))) if f > 0 else 0 for f in fractions]
    for i in wanted:
        counts[i] = max(1, counts[i])
    while sum(counts) > len(names):  # rounding overshoot: take from the largest split
        counts[int(np.argmax(counts))] -= 1
    counts[wanted[0]] += len(names) - sum(counts)
    order = np.random.default_rng(seed).permutation(len(names))
    assignment, start = {}, 0
    for split, count in zip(META_SPLITS, counts):
        for position in order[start:start + count]:
            assignment[names[position]] = split
        start += count
    return assignment


def class_weights(labels: list[int], num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights n / (num_classes * n_c): a balanced dataset gets 1.0 everywhere."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    total = counts.sum()
    return {c: float(total / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}
