"""Scan a data folder: layout, classes, usable files, and what was skipped or converted and why.

Layouts (README, "Your data"):  DATA_DIR/<class>/<files>   or   DATA_DIR/{train,val,test}/<class>/<files>
Hidden entries (".DS_Store", ".ipynb_checkpoints", "__MACOSX") are ignored.
Extensions match in any case. Files in nested subfolders of a class folder belong
to that class (symlinks are followed, never into a folder already walked). Every
candidate file is checked by content (data/doctor.py), except a FIFO, socket or
device, skipped without being opened (data/file_kinds.py); nothing is dropped
without an entry in `skipped`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data.doctor import check_files
from data.duplicates import find_duplicates
from data.errors import DataError
from data.images import IMAGE_EXTENSIONS
from data.records import ConvertedFile, Example, SkippedFile
from data.shown_text import shown_path, visible

logger = logging.getLogger(__name__)
# Skipped files named one warning each, up to this many; the rest are counted in one more line (a folder holding
# many files of the other kind gave one warning per file: 300 lines for 300 notes beside 200 images).
MAX_SKIP_WARNINGS = 10

SPLIT_NAMES = ("train", "val", "test")
TEXT_EXTENSIONS = frozenset({".txt"})
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})

__all__ = ["Example", "SkippedFile", "ScanResult", "scan_folder", "require_trainable", "SPLIT_NAMES"]


@dataclass
class ScanResult:
    root: str
    layout: str  # "flat" or "split"
    modality: str  # "image" or "text"
    class_names: list[str]
    examples: list[Example]
    skipped: list[SkippedFile] = field(default_factory=list)
    converted: list[ConvertedFile] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)
    num_files_found: int = 0

    def counts(self, split: str | None = None) -> dict[str, int]:
        counts = {name: 0 for name in self.class_names}
        for example in self.examples:
            if split is None or example.split == split:
                counts[self.class_names[example.label]] += 1
        return counts

    def splits_present(self) -> list[str]:
        return [s for s in SPLIT_NAMES if any(e.split == s for e in self.examples)]

    def summary(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "modality": self.modality,
            "class_names": self.class_names,
            "num_files_found": self.num_files_found,
            "num_examples": len(self.examples),
            "counts": self.counts(),
            "counts_by_folder_split": {s: self.counts(s) for s in self.splits_present()},
            "empty_classes": self.empty_classes,
            "skipped": [asdict(s) for s in self.skipped],
            "converted": [{"path": c.path, "notes": list(c.notes)} for c in self.converted],
            "duplicates": self.duplicates,
        }


# A file or folder name that is not UTF-8 (Latin-1 or Shift-JIS names from an old archive) reaches Python as
# lone surrogates (os.fsdecode): TensorFlow cannot take such a path as a string (tf.data stopped with "Unable
# to convert element to UTF-8"), and neither can JSON, report.md nor TensorBoard. Renaming is the user's fix.
RENAME_HINT = "rename it to UTF-8, e.g. convmv -f latin1 -t utf-8 -r --notest FOLDER"


def is_utf8_name(path) -> bool:
    """Whether `path` is valid UTF-8 (undecodable bytes appear in Python paths as lone surrogates)."""
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def warn_skipped(skipped: list[SkippedFile]) -> None:
    """One warning per skipped file, up to MAX_SKIP_WARNINGS, then one line counting the rest by reason."""
    for item in skipped[:MAX_SKIP_WARNINGS]:
        logger.warning("Skipped %s: %s", shown_path(item.path), visible(item.reason))
    if len(skipped) > MAX_SKIP_WARNINGS:
        reasons = Counter(item.reason for item in skipped[MAX_SKIP_WARNINGS:])
        more = len(skipped) - MAX_SKIP_WARNINGS
        logger.warning("Skipped %d more file%s: %s", more, "s" if more > 1 else "",
                       "; ".join(f"{count} x {visible(reason)}" for reason, count in reasons.most_common(3))
                       + ("; ..." if len(reasons) > 3 else ""))


# How much of a path a message shows when the path is too long to look up: it may be a whole pasted text.
SHOWN_PATH_CHARS = 80


def shortened(name: str) -> str:
    """`name`, or its first SHOWN_PATH_CHARS characters and its length."""
    return name if len(name) <= SHOWN_PATH_CHARS else f"{name[:SHOWN_PATH_CHARS]}... ({len(name)} characters)"


def with_article(noun: str) -> str:
    """"an image", "a text": for messages that name a modality."""
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def skipped_by_name(path: Path, modality: str) -> SkippedFile | None:
    """Why `path` cannot be one of the `modality` files by its name alone (not UTF-8, another extension), or None.
    The training scan and predict.py's inputs skip the same files for the same reasons."""
    if not is_utf8_name(path):  # TensorFlow cannot open such a name (is_utf8_name)
        return SkippedFile(shown_path(path), f"its name is not valid UTF-8 (shown with \\xNN); {RENAME_HINT}")
    if path.suffix.lower() not in (IMAGE_EXTENSIONS if modality == "image" else TEXT_EXTENSIONS):
        return SkippedFile(str(path), f"not {with_article(modality)} file (extension {path.suffix or 'none'!r})")
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def walk_visible(folder: Path, seen_dirs: set | None = None):
    """os.walk below `folder` following symlinked folders, hidden names left out, sorted: (folder, its subfolder
    names, its file names). A folder whose real path is in `seen_dirs` (a symlink loop, a folder linked twice) is
    not entered again, except `folder` itself. Like os.walk, a caller may prune the subfolder list in place."""
    seen_dirs = set() if seen_dirs is None else seen_dirs
    for current, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if current != str(folder) and real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        yield Path(current), dirnames, sorted(f for f in filenames if not _is_hidden(f))


def _files_under(folder: Path, seen_dirs: set) -> list[Path]:
    """All visible files below `folder`, following symlinks but never into a directory in `seen_dirs`."""
    return [current / name for current, _, names in walk_visible(folder, seen_dirs) for name in names]


def visible_files(folder: Path) -> list[Path]:
    """Every visible file below `folder`, symlinked folders followed as the training scan does."""
    return _files_under(Path(folder), set())


# Split folders as other tools spell them. Only train/, val/ and test/ are split folders: read as classes, a
# download's Train/ and Test/ trained a "Train vs Test" classifier (each class's own folders lost inside them, the
# test files trained on) without a word, and train/ beside validation/ was told to rename its class folder `train`.
OTHER_SPLIT_SPELLINGS = {"training": "train", "validation": "val", "valid": "val", "dev": "val", "testing": "test"}


def _split_meant(name: str) -> str | None:
    """The split folder a folder name spells otherwise (`Train`, `validation`), None for any other name."""
    meant = name.lower() if name.lower() in SPLIT_NAMES else OTHER_SPLIT_SPELLINGS.get(name.lower())
    return meant if meant != name else None


def _refuse_split_folders_spelt_otherwise(root: Path, names: set[str]) -> None:
    """A DataError when every top-level folder is a split folder, some of them spelt otherwise (`Train`, `valid`)."""
    meant = {name: _split_meant(name) for name in names}
    if not any(meant.values()) or not all(name in SPLIT_NAMES or meant[name] for name in names):
        return
    renames = ", ".join(f"{name}/ to {split}/" for name, split in sorted(meant.items()) if split)
    raise DataError(f"{str(root)!r} holds split folders spelt otherwise than train/, val/ and test/ (lowercase): "
                    "only those names are read as splits, and a folder named otherwise is read as a class. Received "
                    f"the folders {', '.join(sorted(names))}. Rename {renames}, then run the command again.")


def detect_layout(root: Path) -> str:
    """'split' when the top level holds only train/val/test folders (train/ or test/ among them). Split folders
    beside other folders are a DataError: read as a flat layout, `train` and `test` became classes, the real
    classes were lost inside them and the test files were trained on, without a word."""
    names = {p.name for p in _visible_subdirs(root)}
    _refuse_split_folders_spelt_otherwise(root, names)
    splits, others = names & set(SPLIT_NAMES), names - set(SPLIT_NAMES)
    if splits and others:
        raise DataError(f"{str(root)!r} mixes split folders ({', '.join(sorted(splits))}) with other folders "
                        f"({', '.join(sorted(others)[:5])}{', ...' if len(others) > 5 else ''}), so neither layout "
                        "fits. Received: that folder. Put every class folder inside train/ (and val/, test/), as "
                        "DATA_DIR/train/<class>/<files>; or, for a folder of classes (DATA_DIR/<class>/<files>), "
                        f"rename the class folders called {' or '.join(sorted(splits))}.")
    if names and names <= set(SPLIT_NAMES) and names & {"train", "test"}:
        return "split"
    return "flat"


def _modality_of(paths: list[Path], expected: str | None = None) -> str:
    images = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in paths)
    texts = sum(p.suffix.lower() in TEXT_EXTENSIONS for p in paths)
    if images == 0 and texts == 0:
        return "unknown"
    if expected is not None and (images if expected == "image" else texts):
        return expected
    return "image" if images >= texts else "text"


def _list_candidates(root: Path, layout: str):
    """[(split, class name, path)], the skipped loose files, and every class folder seen."""
    split_dirs = [(None, root)] if layout == "flat" else [
        (split, root / split) for split in SPLIT_NAMES if (root / split).is_dir()
    ]
    class_dirs = [(split, d) for split, folder in split_dirs for d in _visible_subdirs(folder)]
    _refuse_linked_class_folders(class_dirs)
    # A symlink inside a class folder must never lead into the root, a split or
    # another class folder (that would list files twice, under the wrong label).
    seen_dirs = {os.path.realpath(p) for p in [root, *(f for _, f in split_dirs)]}
    seen_dirs |= {os.path.realpath(d) for _, d in class_dirs}
    skipped = []
    for _, folder in split_dirs:
        # Not is_file(): a FIFO, socket or device there is reported too (never opened), not silently left out.
        loose = sorted(p for p in folder.iterdir() if not p.is_dir() and not _is_hidden(p.name))
        skipped += [SkippedFile(shown_path(p), "file outside any class folder") for p in loose]
    found = [(split, d.name, path) for split, d in class_dirs for path in _files_under(d, seen_dirs)]
    return found, skipped, class_dirs


def _refuse_linked_class_folders(class_dirs: list[tuple[str | None, Path]]) -> None:
    """A DataError when two class folders of one split are the same folder (one a symlink to the other): every
    file was trained under both labels, a class the model cannot tell from the other, with only a warning about
    duplicates across classes."""
    by_folder: dict[tuple, list[Path]] = {}
    for split, folder in class_dirs:
        by_folder.setdefault((split, os.path.realpath(folder)), []).append(folder)
    for (split, real), folders in sorted(by_folder.items()):
        if len(folders) > 1:
            links = [f.name for f in folders if f.is_symlink()] or [f.name for f in folders[1:]]
            named = ", ".join(repr(shown_path(f.name)) for f in folders)
            where = f" of {split}/" if split else ""
            linked = f"{', '.join(map(repr, links))} {'is a link' if len(links) == 1 else 'are links'}"
            raise DataError(f"The class folders {named}{where} are one folder ({linked} to "
                            f"'{shown_path(real)}'): each of its files would be one example of every one of those "
                            "classes. Received: that link. Keep one class folder for those files (remove the link; "
                            "copy the files that belong to the other class into a real folder of its own).")


def scan_folder(root: str | Path, check_files_content: bool = True, use_cache: bool = True,
                workers: int | None = None, quiet: bool = False, modality: str | None = None) -> ScanResult:
    """Scan `root`; raise DataError with an actionable message when it cannot be used.

    `quiet`: no warnings about skipped files or empty class folders (a first look whose full scan follows and
    reports them). `modality`: the kind of files the caller needs (an evaluated run's): a folder holding any of
    them is read as that kind, its other files skipped. None: the kind most of its files are (a new run's)."""
    root = Path(root).expanduser()
    if not root.exists() and root.is_symlink():  # "does not exist" sent the user looking for a folder that does
        raise DataError(f"The data folder is a symbolic link that leads to no folder (its target is missing, or "
                        f"links lead back to it in a loop). Received: {str(root)!r}, a link to "
                        f"{os.readlink(root)!r}. Fix the link, or pass the folder it should lead to.")
    if not root.exists():
        raise DataError(f"Data folder does not exist. Received: {str(root)!r}. Pass a folder laid out as DATA_DIR/<class>/<files>.")
    if not root.is_dir():
        raise DataError(f"Data path is not a folder. Received: {str(root)!r}. Pass the folder that contains one subfolder per class.")
    if not is_utf8_name(root.resolve()):
        raise DataError(f"The data folder's path is not valid UTF-8. Received: '{shown_path(root.resolve())}' (bytes "
                        f"that are not UTF-8 written as \\xNN); {RENAME_HINT}.")
    layout = detect_layout(root)
    found, loose_skipped, class_dirs = _list_candidates(root, layout)
    skipped = list(loose_skipped)
    if not found:
        raise DataError(
            f"No files found in {str(root)!r}. Expected one subfolder per class "
            "(DATA_DIR/<class>/<files>) or DATA_DIR/{train,val,test}/<class>/<files>."
        )
    modality = _modality_of([p for _, _, p in found], modality)
    if modality == "unknown":
        raise DataError(
            f"No image or text files in {str(root)!r}. Supported: images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or text (.txt, one example per file)."
        )
    candidates = []
    for split, class_name, path in found:
        if (skip := skipped_by_name(path, modality)) is not None:
            skipped.append(skip)
        else:
            candidates.append((split, class_name, path))

    if check_files_content:
        checks = check_files([str(p) for _, _, p in candidates], modality, root, workers, use_cache)
    else:
        checks = [None] * len(candidates)
    kept, converted = [], []
    for (split, class_name, path), check in zip(candidates, checks):
        if check is not None and not check.usable:
            skipped.append(SkippedFile(str(path), check.reason))
            continue
        kept.append((split, class_name, path, check))
        if check is not None and check.notes:
            converted.append(ConvertedFile(str(path), check.notes))

    if layout == "split" and any(split == "train" for split, *_ in kept):
        class_names = sorted({c for split, c, *_ in kept if split == "train"})
        extra = sorted({c for split, c, *_ in kept if split != "train"} - set(class_names))
        if extra:
            raise DataError(
                f"Classes in val/ or test/ that train/ does not have: {extra}. "
                "Every class needs training examples; add them to train/ or remove those folders."
            )
    else:
        class_names = sorted({c for _, c, *_ in kept})
    empty_classes = sorted({shown_path(d.name) for _, d in class_dirs} - {c for _, c, *_ in kept})
    index = {name: i for i, name in enumerate(class_names)}
    examples = [
        Example(str(p), index[c], split, check.sha256 if check else "", check.encoding if check else "")
        for split, c, p, check in kept
        if c in index
    ]
    if not quiet:
        warn_skipped(skipped)  # all of them in a run's data_report.json; --check lists the first 20 (app/data_report.py)
    if empty_classes and not quiet:
        logger.warning("Class folders with no usable files (ignored): %s", empty_classes)
    if not examples:
        why = (f"e.g. {skipped[0].path}: {skipped[0].reason}" if quiet and skipped else "see the warnings above")
        raise DataError(f"No usable {modality} files in {str(root)!r}: all {len(skipped)} files were skipped ({why}).")
    result = ScanResult(str(root), layout, modality, class_names, examples, skipped, converted, empty_classes,
                        num_files_found=len(found) + len(loose_skipped))
    result.duplicates = find_duplicates(examples, class_names)
    if result.duplicates["num_conflicting_label_groups"]:
        logger.warning("%d files have an exact duplicate under another class (conflicting labels); see data_report.json",
                       sum(len(g["files"]) for g in result.duplicates["conflicting_labels"]))
    if result.duplicates["num_within_class_groups"]:
        logger.info("%d group(s) of identical files within a class", result.duplicates["num_within_class_groups"])
    return result


def require_trainable(scan: ScanResult, min_per_class: int) -> None:
    """Classification needs >= 2 classes and enough examples in each."""
    if len(scan.class_names) < 2:
        raise DataError(
            f"Classification needs at least 2 classes; {scan.root!r} has {len(scan.class_names)}: "
            f"{scan.class_names}. Add one subfolder per class."
        )
    counts = {name: 0 for name in scan.class_names}
    for example in scan.examples:
        if example.split in (None, "train", "val"):
            counts[scan.class_names[example.label]] += 1
    short = {name: n for name, n in counts.items() if n < min_per_class}
    if short:
        raise DataError(
            f"Too few training examples in classes {short} (need at least {min_per_class} per class "
            "for a training and a validation example). Add files or remove those classes."
        )
