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

from data.atomic_write import dead_temporaries, write_atomically
from data.cache import cache_dir

logger = logging.getLogger(__name__)
# Stores this process could not read or write and has warned about: the train and validation lookups of a run
# share a store, and a store that cannot be read usually cannot be written either (a read-only or full cache).
_WARNED: set[Path] = set()


def _warn_once(path: Path, message: str, *args) -> None:
    if path not in _WARNED:
        _WARNED.add(path)
        logger.warning(message, path, *args)


def _row_digest(key, row: np.ndarray) -> str:
    return hashlib.sha256(str(key).encode("utf-8") + np.ascontiguousarray(row, np.float32).tobytes()).hexdigest()[:16]


def _check_layout(keys: np.ndarray, features: np.ndarray, digests: np.ndarray) -> None:
    """One key, one feature row and one digest per row: a store rewritten with arrays of other lengths or
    ranks (fewer feature rows than keys) was an IndexError, or features matched to the wrong keys."""
    if keys.ndim != 1 or digests.ndim != 1 or features.ndim < 2:
        raise ValueError(f"its arrays have ranks {keys.ndim}, {features.ndim}, {digests.ndim}, not 1, 2+, 1")
    if not len(keys) == len(features) == len(digests):
        raise ValueError(f"it holds {len(keys)} keys, {len(features)} feature rows and {len(digests)} digests")


class FeatureStore:
    def __init__(self, key: str, root: Path | None = None, dtype=np.float32):
        self.path = (root or cache_dir() / "features") / f"{key}.npz"
        # float16 halves the disk and memory of large rows (a backbone's intermediate activations,
        # data/activation_cache.py); the row digests are computed on the stored values.
        self.dtype = np.dtype(dtype)
        self.bypassed = False  # a store of another shape that cannot be removed: computed, neither read nor written

    def _load(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.bypassed or not self.path.is_file():
            return np.zeros(0, dtype=str), None
        try:
            stored = np.load(self.path, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):  # a lone .npy array under the store's name
                raise ValueError(f"it holds a {type(stored).__name__}, not an .npz archive")
            with stored:
                keys, features, digests = stored["keys"], stored["features"], stored["row_sha256"]
            _check_layout(keys, features, digests)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            _warn_once(self.path, "Ignoring unreadable feature cache %s (%s); features will be recomputed.", error)
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
        if self.bypassed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._remove_abandoned_temporaries()
            digests = np.asarray([_row_digest(key, row) for key, row in zip(keys, features)])
            write_atomically(self.path, lambda temporary: np.savez(temporary, keys=keys, features=features,
                                                                   row_sha256=digests), label="feature cache")
        except OSError as error:
            _warn_once(self.path, "Could not write the feature cache %s (%s); continuing without caching these "
                       "features.", error)

    def _remove_abandoned_temporaries(self) -> None:
        """This store's temporaries left by processes killed while writing it (kill -9): an activation store's
        can take hundreds of megabytes, and nothing else removes them."""
        for (name, _), leftover in dead_temporaries(self.path.parent).items():
            if name == self.path.name:
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:  # a leftover that cannot be removed (a folder) costs space, not the cache
                    pass

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
                try:
                    self.path.unlink(missing_ok=True)
                except OSError as error:  # a read-only cache: this run's features are all computed, none cached
                    logger.warning("Could not remove the feature cache %s (%s); continuing without it.",
                                   self.path, error)
                    self.bypassed = True
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
