"""Which classes are known and which unknown in bench_unknowns.py's open-set runs, and the folders
`train.py` and `evaluate.py --unknown` read for them.

- Fashion-MNIST and Reuters R8: `class_split` draws the known classes (the rest are unknown).
- The fonts glyph set (bench/fonts_dataset.py: every Noto writing system an alphabet, every letter a
  class of 20 rendered instances): `glyph_split` draws a few alphabets and some letters of each as
  the known classes; two unknown sets follow, letters of *other* alphabets (far) and the remaining
  letters of the *known* alphabets (near: same strokes and style, another letter).
- R8's unknowns are the R8 topics left out and, as a second set, texts of the Reuters R52 topics
  outside R8 (`sample_outside`).

The split functions are pure (seeded, no files); the folder builders copy files (small PNGs and texts),
since train.py checks and hashes what it reads.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import common

GLYPH_SEED_TAG = 21  # mixed into every glyph split's generator (issue 21), apart from the fonts set's own seeds


def class_split(names: list[str], known: int, seed: int) -> tuple[list[str], list[str]]:
    """(known, unknown): `known` classes drawn by the seed, both sorted. Fashion-MNIST's rule since its
    first measurement, so its published splits stay the same."""
    if not 0 < known < len(names):
        raise ValueError(f"known must be between 1 and {len(names) - 1} for {len(names)} classes. Received: {known}")
    chosen = sorted(np.random.default_rng(seed).choice(sorted(names), known, replace=False).tolist())
    return chosen, [n for n in sorted(names) if n not in chosen]


@dataclass(frozen=True)
class GlyphSplit:
    """One known / unknown split of the glyph set (class names as the rendered set names them)."""

    seed: int
    known_alphabets: list[str]
    known: list[str]  # letters of the known alphabets the run trains on
    near_unknown: list[str]  # other letters of the same alphabets
    unknown_alphabets: list[str]
    far_unknown: list[str]  # letters of other alphabets

    def to_dict(self) -> dict:
        return asdict(self)


def glyph_split(alphabets: dict[str, list[str]], seed: int, known_alphabets: int, letters: int,
                unknown_alphabets: int) -> GlyphSplit:
    """`known_alphabets` alphabets with more than `letters` letters, `letters` of each known; up to
    `letters` more of each are the near unknowns; `letters` letters of each of `unknown_alphabets`
    other alphabets are the far unknowns. Seeded; the same for the same inputs."""
    eligible = sorted(name for name, classes in alphabets.items() if len(classes) > letters)
    if len(eligible) < known_alphabets + unknown_alphabets:
        raise ValueError(f"{known_alphabets} known and {unknown_alphabets} unknown alphabets need that many with more "
                         f"than {letters} letters; {len(eligible)} have.")
    rng = np.random.default_rng([seed, GLYPH_SEED_TAG])
    order = rng.permutation(eligible).tolist()
    known_names, unknown_names = sorted(order[:known_alphabets]), sorted(order[known_alphabets:][:unknown_alphabets])
    known, near = [], []
    for name in known_names:
        shuffled = rng.permutation(sorted(alphabets[name])).tolist()
        known += sorted(shuffled[:letters])
        near += sorted(shuffled[letters:2 * letters])
    far = [c for name in unknown_names for c in sorted(rng.choice(sorted(alphabets[name]), letters, replace=False))]
    return GlyphSplit(seed, known_names, known, near, unknown_names, far)


def sample_outside(rows: list[tuple[str, str]], excluded: set[str], count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (label, text) rows drawn by the seed among those whose label is not excluded, in row order."""
    candidates = [row for row in rows if row[0] not in excluded]
    if len(candidates) < count:
        raise ValueError(f"{count} rows requested outside {sorted(excluded)}; {len(candidates)} exist.")
    chosen = np.random.default_rng(seed).choice(len(candidates), count, replace=False)
    return [candidates[i] for i in sorted(chosen)]


# ------------------------------------------------------------------------------------ folders

def copy_classes(source: Path, target: Path, classes: list[str]) -> None:
    for name in classes:
        shutil.copytree(source / name, target / name)


def glyph_dataset(fonts_root: str) -> tuple[Path, dict[str, list[str]], int]:
    """The rendered fonts set under `fonts_root` at 28 px (rendered there first if absent): its folder,
    alphabet -> letter class names, and instances per letter."""
    from fonts_dataset import build_dataset, read_manifest

    folder = build_dataset(root=fonts_root, sizes=(28,), verbose=False)
    manifest = read_manifest(folder)
    return folder, {a: info["classes"] for a, info in manifest["alphabets"].items()}, manifest["instances_per_class"]


def glyph_folders(dataset: Path, split: GlyphSplit, instances: int, train_instances: int, target: Path) -> dict:
    """target/known/{train,test}/<letter>/ (instances below `train_instances` to train, the rest to test)
    and target/unknown-{far,near}/<letter>/ (the test instances of the unknown letters); returns the
    three folders. A letter with missing instances means a damaged rendering: a UsageError naming it."""
    images = dataset / "images28"
    folders = {"known": target / "known", "far": target / "unknown-far", "near": target / "unknown-near"}

    def copy(letter: str, numbers: range, destination: Path) -> None:
        destination.mkdir(parents=True, exist_ok=True)
        for n in numbers:
            source = images / letter / f"{n:02d}.png"
            if not source.is_file():
                raise common.UsageError(f"the rendered glyph set {dataset} lacks {source.relative_to(dataset)} (a "
                                        "damaged copy); delete that folder to render it again, or pass --fonts-root "
                                        "with a complete one")
            shutil.copyfile(source, destination / source.name)

    for letter in split.known:
        copy(letter, range(train_instances), folders["known"] / "train" / letter)
        copy(letter, range(train_instances, instances), folders["known"] / "test" / letter)
    for kind, letters in (("far", split.far_unknown), ("near", split.near_unknown)):
        for letter in letters:
            copy(letter, range(train_instances, instances), folders[kind] / letter)
    return folders


def r8_folders(data: Path, known: list[str], unknown: list[str], outside: int, seed: int, target: Path) -> dict:
    """target/known/{train,test}/ (the known R8 topics of `data`, a bench_text folder), target/unknown-r8/ (the
    other topics' test texts) and target/unknown-r52/ (`outside` test texts of R52 topics outside R8)."""
    from bench_text import DATASETS
    from data.corpora import CORPUS_FILES, orange_datasets_dir, read_orange_tab

    folders = {"known": target / "known", "r8": target / "unknown-r8", "r52": target / "unknown-r52"}
    for split in ("train", "test"):
        copy_classes(data / split, folders["known"] / split, known)
    copy_classes(data / "test", folders["r8"], unknown)
    rows = read_orange_tab(orange_datasets_dir() / CORPUS_FILES["reuters-r52"][1])
    for i, (label, text) in enumerate(sample_outside(rows, set(DATASETS["reuters-r8"]["classes"]), outside, seed)):
        folder = folders["r52"] / label.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.txt").write_text(text, encoding="utf-8")
    return folders
