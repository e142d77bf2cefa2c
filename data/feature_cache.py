"""On-disk store of a frozen backbone's features, one row per file content.

A store is identified by a key that covers everything the features depend on
except the files (backbone, its weights, input size, preprocessing; the caller
builds it). Inside a store, rows are looked up by each file's content key
(its SHA-256, plus the text encoding for text), so renaming or moving files keeps
their features, and an edited file simply misses. The store is one `.npz`
(`keys`, `features`) per key, replaced atomically (write, then rename) so an
interrupted run never leaves a half-written store behind.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from data.cache import cache_dir

logger = logging.getLogger(__name__)


class FeatureStore:
    def __init__(self, key: str, root: Path | None = None):
        self.path = (root or cache_dir() / "features") / f"{key}.npz"

    def _load(self) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.path.is_file():
            return np.zeros(0, dtype=str), None
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                return stored["keys"], stored["features"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("Ignoring unreadable feature cache %s (%s); features will be recomputed.", self.path, error)
            return np.zeros(0, dtype=str), None

    def _save(self, keys: np.ndarray, features: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
        np.savez(temporary, keys=keys, features=features)
        os.replace(temporary, self.path)

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
            computed = np.asarray(compute(to_compute), dtype=np.float32)
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
            return np.zeros((0,) + (stored.shape[1:] if stored is not None else (0,)), np.float32), 0
        return stored[[row_of[key] for key in content_keys]], len(to_compute)
