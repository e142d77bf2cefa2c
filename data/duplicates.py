"""Exact duplicates by content hash: within a class, across classes (conflicting labels), across splits."""

from __future__ import annotations

from collections import defaultdict

from data.records import Example


def _groups(examples: list[Example]) -> list[list[Example]]:
    by_hash: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        if example.sha256:
            by_hash[example.sha256].append(example)
    return [group for group in by_hash.values() if len(group) > 1]


def find_duplicates(examples: list[Example], class_names: list[str]) -> dict:
    """Duplicate groups; labels are class names, paths as given."""
    within, conflicting = [], []
    for group in _groups(examples):
        entry = {"sha256": group[0].sha256, "files": [{"path": e.path, "label": class_names[e.label]} for e in group]}
        (within if len({e.label for e in group}) == 1 else conflicting).append(entry)
    return {
        "within_class": within,
        "conflicting_labels": conflicting,
        "num_within_class_groups": len(within),
        "num_conflicting_label_groups": len(conflicting),
    }


def cross_split_duplicates(examples: list[Example]) -> dict:
    """Files in val/test whose exact content is also in train (evaluation leakage)."""
    train_hashes = {e.sha256 for e in examples if e.split == "train" and e.sha256}
    leaked = sorted(e.path for e in examples if e.split in ("val", "test") and e.sha256 in train_hashes)
    return {"num_files": len(leaked), "files": leaked}
