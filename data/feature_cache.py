"""On-disk store of a frozen backbone's features, one row per file content.

A store is identified by a key that covers everything the features depend on
except the files (backbone, its weights, input size, preprocessing; the caller
builds it). Inside a store, rows are looked up by each file's content key
(its SHA-256, plus the text encoding for text), so renaming or moving files keeps
their features, and an edited file simply misses. Each row is stored with a digest of its key
and values: a row that does not match is dropped and recomputed. The store is one `.npz`
(`keys`, `features`) per key, replaced atomically (write, then rename) so an
interrupted run never leaves a half-written store behind. A store that cannot be read or
written costs only speed: one warning, and the run goes on without it.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from data.atomic_write import write_atomically
from data.cache import cache_dir

logger = logging.getLogger(__name__)


def _row_digest(key, row: np.ndarray) -> str:
    return hashlib.sha256(str(key).encode("utf-8") + np.ascontiguousarray(row, np.float32).tobytes()).hexdigest()[:16]


class FeatureStore:
    def __init__(self, key: str, root: Path | None = None, dtype=np.float32):
        self.path = (root or cache_dir() / "features") / f"{key}.npz"
        # float16 halves the disk and memory of large rows (a backbone's intermediate activations,
        # data/activation_cache.py); the row digests are computed on the stored values.
        self.dtype = np.dtype(dtype)

    def _load(self) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.path.is_file():
            return np.zeros(0, dtype=str), None
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                keys, features, digests = stored["keys"], stored["features"], stored["row_sha256"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("Ignoring unreadable feature cache %s (%s); features will be recomputed.", self.path, error)
            return np.zeros(0, dtype=str), None
        # A row is trusted only with the digest of its key and values written beside it: a store
        # rewritten with its rows permuted was once used as is (validation accuracy at chance).
        intact = np.asarray([digest == _row_digest(key, row) for key, row, digest in zip(keys, features, digests)],
                            dtype=bool)
        if len(digests) != len(keys) or not intact.all():
            logger.warning("Feature cache %s: %d of %d rows do not match their digest; they will be recomputed.",
                           self.path, int((~intact).sum()) + abs(len(keys) - len(digests)), len(keys))
            keep = intact if len(digests) == len(keys) else np.zeros(len(keys), bool)
            return keys[keep], features[keep]
        return keys, features

    def _save(self, keys: np.ndarray, features: np.ndarray) -> None:
        """Store the rows; a cache that cannot be written (full disk, read-only) only costs speed:
        one warning, no temporary file left, and the run goes on with the features it computed."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            digests = np.asarray([_row_digest(key, row) for key, row in zip(keys, features)])
            write_atomically(self.path, lambda temporary: np.savez(temporary, keys=keys, features=features,
                                                                   row_sha256=digests), label="feature cache")
        except OSError as error:
            logger.warning("Could not write the feature cache %s (%s); continuing without caching these features.",
                           self.path, error)

    def get_or_compute(self, content_keys: list[str],
                       compute: Callable[[list[int]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Features for `content_keys` in order; `compute(indices)` fills in the missing ones.

        Returns (features, number of rows computed now).
        """
        stored_keys, stored = self._load()
        row_of = {key: row for row, key in enumerate(stored_keys.tolist())}
        missing = sorted({i for i, key in enumerate(content_keys) if key not in row_of},
                         key=content_keys.__getitem__)
        # One computation per distinct content: exact duplicates share a row.
        first_of: dict[str, int] = {}
        for i in missing:
            first_of.setdefault(content_keys[i], i)
        to_compute = sorted(first_of.values())
        if to_compute:
            computed = np.asarray(compute(to_compute), dtype=self.dtype)
            new_keys = np.asarray([content_keys[i] for i in to_compute])
            if stored is not None and stored.shape[1:] != computed.shape[1:]:
                # Cannot happen for a correct key (it covers the model); start the store afresh.
                logger.warning("Feature cache %s holds features of another shape; rebuilding it.", self.path)
                self.path.unlink(missing_ok=True)
                return self.get_or_compute(content_keys, compute)
            if stored is None:
                stored_keys, stored = new_keys, computed
            else:
                stored_keys = np.concatenate([stored_keys, new_keys])
                stored = np.concatenate([stored, computed])
            self._save(stored_keys, stored)
            row_of = {key: row for row, key in enumerate(stored_keys.tolist())}
        if not content_keys:
            return np.zeros((0,) + (stored.shape[1:] if stored is not None else (0,)), self.dtype), 0
        return stored[[row_of[key] for key in content_keys]], len(to_compute)
