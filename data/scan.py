"""Scan a data folder: layout, classes, usable files, and what was skipped and why.

Layouts (DESIGN.md):  DATA_DIR/<class>/<files>   or   DATA_DIR/{train,val,test}/<class>/<files>
Hidden entries (".DS_Store", ".ipynb_checkpoints", "__MACOSX") are ignored. Files in
nested subfolders of a class folder are included (recursively, symlinks followed
once). Every other file that is not usable is reported, never silently dropped.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from data.errors import DataError
from data.images import IMAGE_EXTENSIONS, check_image

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
TEXT_EXTENSIONS = frozenset({".txt"})
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    split: str | None  # from the folder layout; None for the flat layout


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class ScanResult:
    root: str
    layout: str  # "flat" or "split"
    modality: str  # "image" or "text"
    class_names: list[str]
    examples: list[Example]
    skipped: list[SkippedFile] = field(default_factory=list)

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
            "num_examples": len(self.examples),
            "counts": self.counts(),
            "counts_by_folder_split": {s: self.counts(s) for s in self.splits_present()},
            "skipped": [asdict(s) for s in self.skipped],
        }


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _files_under(folder: Path, seen_dirs: set) -> list[Path]:
    """All visible files below `folder`, following symlinks but never a directory twice."""
    files = []
    for current, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if current != str(folder) and real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        files.extend(Path(current) / f for f in sorted(filenames) if not _is_hidden(f))
    return files


def detect_layout(root: Path) -> str:
    """'split' when the top level holds only train/val/test folders and has train/."""
    names = {p.name for p in _visible_subdirs(root)}
    if "train" in names and names <= set(SPLIT_NAMES):
        return "split"
    if "test" in names and names <= set(SPLIT_NAMES):
        return "split"  # an evaluation-only folder: DATA_DIR/test/<class>/...
    return "flat"


def _modality_of(paths: list[Path]) -> str:
    images = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in paths)
    texts = sum(p.suffix.lower() in TEXT_EXTENSIONS for p in paths)
    if images == 0 and texts == 0:
        return "unknown"
    return "image" if images >= texts else "text"


def _check_images(paths: list[str], workers: int) -> list[tuple[bool, str]]:
    """Decode every image once, in parallel (Pillow releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check_image, paths)
        return list(
            tqdm(results, total=len(paths), desc="Checking images", unit="file",
                 disable=len(paths) < 200, leave=False)
        )


def scan_folder(root: str | Path, check_files: bool = True, workers: int | None = None) -> ScanResult:
    """Scan `root`; raise DataError with an actionable message when it cannot be used."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"Data folder does not exist. Received: {str(root)!r}. Pass a folder laid out as DATA_DIR/<class>/<files>.")
    if not root.is_dir():
        raise DataError(f"Data path is not a folder. Received: {str(root)!r}. Pass the folder that contains one subfolder per class.")
    layout = detect_layout(root)
    split_dirs = [(None, root)] if layout == "flat" else [
        (split, root / split) for split in SPLIT_NAMES if (root / split).is_dir()
    ]

    # class name -> files, per split
    found: list[tuple[str | None, str, Path]] = []
    skipped: list[SkippedFile] = []
    class_dirs = [(split, d) for split, folder in split_dirs for d in _visible_subdirs(folder)]
    # A symlink inside a class folder must never lead into the root, a split or
    # another class folder (that would list files twice, under the wrong label).
    seen_dirs = {os.path.realpath(p) for p in [root, *(f for _, f in split_dirs)]}
    seen_dirs |= {os.path.realpath(d) for _, d in class_dirs}
    for split, folder in split_dirs:
        loose = [p for p in folder.iterdir() if p.is_file() and not _is_hidden(p.name)]
        skipped += [SkippedFile(str(p), "file outside any class folder") for p in sorted(loose)]
    for split, class_dir in class_dirs:
        for path in _files_under(class_dir, seen_dirs):
            found.append((split, class_dir.name, path))

    if not found:
        raise DataError(
            f"No files found in {str(root)!r}. Expected one subfolder per class "
            "(DATA_DIR/<class>/<files>) or DATA_DIR/{train,val,test}/<class>/<files>."
        )
    modality = _modality_of([p for _, _, p in found])
    if modality == "unknown":
        raise DataError(
            f"No image or text files in {str(root)!r}. Supported: images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or text (.txt, one example per file)."
        )
    wanted = IMAGE_EXTENSIONS if modality == "image" else TEXT_EXTENSIONS
    kept = []
    for split, class_name, path in found:
        if path.suffix.lower() in wanted:
            kept.append((split, class_name, path))
        else:
            article = "an" if modality == "image" else "a"
            skipped.append(SkippedFile(str(path), f"not {article} {modality} file (extension {path.suffix or 'none'!r})"))

    if check_files and modality == "image":
        results = _check_images([str(p) for _, _, p in kept], workers or min(8, (os.cpu_count() or 2) * 2))
        usable = []
        for item, (ok, reason) in zip(kept, results):
            if ok:
                usable.append(item)
            else:
                skipped.append(SkippedFile(str(item[2]), reason))
        kept = usable
    elif modality == "text":
        usable = []
        for item in kept:
            if item[2].stat().st_size == 0:
                skipped.append(SkippedFile(str(item[2]), "empty text file"))
            else:
                usable.append(item)
        kept = usable

    if layout == "split" and any(split == "train" for split, _, _ in kept):
        class_names = sorted({c for split, c, _ in kept if split == "train"})
        extra = sorted({c for split, c, _ in kept if split != "train"} - set(class_names))
        if extra:
            raise DataError(
                f"Classes in val/ or test/ that train/ does not have: {extra}. "
                "Every class needs training examples; add them to train/ or remove those folders."
            )
    else:
        class_names = sorted({c for _, c, _ in kept})
    index = {name: i for i, name in enumerate(class_names)}
    examples = [Example(str(p), index[c], split) for split, c, p in kept]
    for item in skipped:
        logger.warning("Skipped %s: %s", item.path, item.reason)
    if not examples:
        raise DataError(f"No usable {modality} files in {str(root)!r}: all {len(skipped)} files were skipped (see the warnings above).")
    return ScanResult(str(root), layout, modality, class_names, examples, skipped)


def require_trainable(scan: ScanResult, min_per_class: int) -> None:
    """Classification needs >= 2 classes and enough examples in each."""
    if len(scan.class_names) < 2:
        raise DataError(
            f"Classification needs at least 2 classes; {scan.root!r} has {len(scan.class_names)}: "
            f"{scan.class_names}. Add one subfolder per class."
        )
    pool = [e for e in scan.examples if e.split in (None, "train", "val")]
    counts = {name: 0 for name in scan.class_names}
    for example in pool:
        counts[scan.class_names[example.label]] += 1
    short = {name: n for name, n in counts.items() if n < min_per_class}
    if short:
        raise DataError(
            f"Too few training examples in classes {short} (need at least {min_per_class} per class "
            "for a training and a validation example). Add files or remove those classes."
        )
