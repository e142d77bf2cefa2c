"""The data doctor's per-file check: read once, hash, decode, classify; cached by what stat() says.

Every candidate file is read once: its SHA-256 (for duplicate detection and the
manifest) and a full decode (images) or encoding check (text) come from the same
bytes. Results are cached per folder keyed by (size, mtime, ctime, inode), so a second
scan of an unchanged 100k-file folder only stats the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from data.atomic_write import write_atomically
from data.cache import cache_dir
from data.file_kinds import open_regular, read_regular_bytes
from data.images import inspect_image_bytes
from data.text import inspect_text_bytes

logger = logging.getLogger(__name__)
# 2: float TIFFs scaled or refused, UTF-16 without a BOM read, text holding NUL refused (2026-12-06): verdicts
# cached by version 1 for such files are wrong, so they are checked again. 3: texts over MAX_TEXT_BYTES noted.
# 4: a text over MAX_TEXT_BYTES judged by the part that is read (a stray byte past it made UTF-8 read as cp1252),
# and entries keyed by ctime and inode too (_stamp).
CACHE_VERSION = 4
PROGRESS_MIN_FILES = 200


@dataclass(frozen=True)
class FileCheck:
    usable: bool
    sha256: str
    notes: tuple[str, ...] = ()  # conversions applied when loading (images) or decoding notes (text)
    reason: str = ""  # why unusable
    encoding: str = ""  # text: the codec to read it with


def inspect_file(path: str, modality: str) -> FileCheck:
    raw, reason = read_regular_bytes(path)  # a FIFO's open() would block forever (data/file_kinds.py)
    if raw is None:
        return FileCheck(False, "", (), reason)
    digest = hashlib.sha256(raw).hexdigest()
    if modality == "image":
        ok, notes, reason = inspect_image_bytes(raw, path)
        return FileCheck(ok, digest, tuple(notes), reason)
    text = inspect_text_bytes(raw)
    return FileCheck(text.usable, digest, text.notes, text.reason, text.encoding)


def _cached_check(fields: dict) -> FileCheck:
    """A FileCheck from its cached fields; ValueError (or TypeError, KeyError) for fields of the wrong type,
    which were a KeyError or TypeError traceback, or a verdict such as `"usable": "no"` taken as true."""
    check = FileCheck(fields["usable"], fields["sha256"], tuple(fields["notes"]), fields["reason"], fields["encoding"])
    if not isinstance(check.usable, bool) or not all(
            isinstance(text, str) for text in (check.sha256, check.reason, check.encoding, *check.notes)):
        raise ValueError("a cached verdict of the wrong type")
    return check


def _stamp(stat: os.stat_result) -> list[int]:
    """What must be unchanged for a cached verdict to stand. Size and mtime alone missed a file rewritten in place
    with both kept (`touch -r`, `cp -p`, a tar extracted again with the same mtimes): its old SHA-256 went on naming
    the new content, so the feature cache gave the old file's features and the manifest its digest. No tool sets
    the ctime back, and a replaced file has a new inode; a rename or chmod also changes the ctime (one re-check)."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class _DoctorCache:
    """{path relative to root: [size, mtime_ns, ctime_ns, inode, FileCheck fields]} in one JSON file per folder."""

    def __init__(self, root: Path, modality: str):
        key = hashlib.sha256(f"{os.path.realpath(root)}|{modality}".encode()).hexdigest()[:20]
        self.path = cache_dir() / "doctor" / f"{key}.json"
        self.root = root
        self.entries: dict[str, list] = {}
        self.warned = False  # one warning per cache: one that cannot be read usually cannot be written either
        try:
            with open_regular(self.path) as handle:  # a FIFO in its place blocked the data check for good
                payload = json.loads(handle.read().decode("utf-8"))
            # Valid JSON of another shape (a list, "files" not an object) was an AttributeError traceback.
            if not isinstance(payload, dict) or not isinstance(payload.get("files", {}), dict):
                raise ValueError('its JSON is not {"version": ..., "files": {...}}')
            if payload.get("version") == CACHE_VERSION:  # an older doctor's verdicts are checked again, silently
                self.entries = payload["files"]
        except (OSError, ValueError, KeyError) as error:
            if isinstance(error, OSError) and not os.path.lexists(self.path):
                return  # none yet, or no cache folder there (saving warns about that)
            logger.warning("Ignoring the unreadable data-doctor cache %s (%s); the files will be checked again.",
                           self.path, error)
            self.entries, self.warned = {}, True

    def _key(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def get(self, path: str, stat: os.stat_result) -> FileCheck | None:
        entry = self.entries.get(self._key(path))
        try:
            *stamp, fields = entry
            if stamp != _stamp(stat):
                return None
            return _cached_check(fields)
        except (TypeError, ValueError, KeyError):  # none, or a damaged entry: the file is checked again
            return None

    def put(self, path: str, stat: os.stat_result, check: FileCheck) -> None:
        self.entries[self._key(path)] = [*_stamp(stat), asdict(check)]

    def save(self, keep: set[str]) -> None:
        entries = {k: v for k, v in self.entries.items() if k in keep}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"version": CACHE_VERSION, "files": entries})
            write_atomically(self.path, lambda temporary: temporary.write_text(text, encoding="utf-8"),
                             label="data-doctor cache")
        except OSError as error:
            if not self.warned:
                logger.warning("Could not write the data-doctor cache %s: %s", self.path, error)


def check_files(paths: list[str], modality: str, root: Path, workers: int | None = None,
                use_cache: bool = True) -> list[FileCheck]:
    """Check every file (in parallel; Pillow and hashlib release the GIL), reusing cached results."""
    cache = _DoctorCache(root, modality) if use_cache else None
    results: list[FileCheck | None] = [None] * len(paths)
    stats: list[os.stat_result | None] = [None] * len(paths)
    todo = []
    for i, path in enumerate(paths):
        try:
            stats[i] = os.stat(path)
        except OSError as error:
            results[i] = FileCheck(False, "", (), f"cannot read file ({error.strerror or error})")
            continue
        cached = cache.get(path, stats[i]) if cache else None
        if cached is None:
            todo.append(i)
        else:
            results[i] = cached
    if todo:
        workers = workers or min(8, (os.cpu_count() or 2) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            checked = pool.map(lambda i: inspect_file(paths[i], modality), todo)
            progress = tqdm(checked, total=len(todo), desc=f"Checking {modality} files", unit="file",
                            disable=len(todo) < PROGRESS_MIN_FILES or not sys.stderr.isatty(), leave=False)
            for i, check in zip(todo, progress):
                results[i] = check
                if cache and stats[i] is not None:
                    cache.put(paths[i], stats[i], check)
    if cache and todo:
        cache.save({cache._key(p) for p in paths})
    logger.debug("Data doctor: %d files checked, %d from cache", len(todo), len(paths) - len(todo))
    return results  # type: ignore[return-value]
