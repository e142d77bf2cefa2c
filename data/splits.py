"""Stratified train/validation splits with a fixed seed, recorded in a manifest."""

from __future__ import annotations

import numpy as np

from data.errors import DataError
from data.scan import Example, ScanResult


def assign_splits(scan: ScanResult, val_fraction: float, seed: int) -> list[Example]:
    """Return every example with split set to train, val or test.

    Folder splits (train/val/test) are kept as they are. Training examples
    without a val/ folder are split per class: round(val_fraction * n) of each
    class (at least 1) go to validation, chosen by a seeded shuffle of the
    sorted file list, so the same folder and seed always give the same split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive). Received: val_fraction={val_fraction}")
    has_val_folder = any(e.split == "val" for e in scan.examples)
    fixed = [e for e in scan.examples if e.split in ("val", "test")]
    pool = [e for e in scan.examples if e.split in (None, "train")]
    if has_val_folder:
        return [Example(e.path, e.label, "train") for e in pool] + fixed

    rng = np.random.default_rng(seed)
    result = list(fixed)
    for label, name in enumerate(scan.class_names):
        members = sorted((e for e in pool if e.label == label), key=lambda e: e.path)
        if len(members) < 2:
            raise DataError(
                f"Class {name!r} has {len(members)} training file(s); a validation split needs at "
                "least 2 per class. Add files or provide a val/ folder."
            )
        n_val = min(len(members) - 1, max(1, int(round(val_fraction * len(members)))))
        order = rng.permutation(len(members))
        val_positions = set(order[:n_val].tolist())
        for position, example in enumerate(members):
            split = "val" if position in val_positions else "train"
            result.append(Example(example.path, example.label, split))
    return sorted(result, key=lambda e: (e.split, e.label, e.path))


def select(examples: list[Example], split: str) -> tuple[list[str], list[int]]:
    chosen = [e for e in examples if e.split == split]
    return [e.path for e in chosen], [e.label for e in chosen]
