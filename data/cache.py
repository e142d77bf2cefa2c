"""Where metatune keeps its on-disk caches (converted weights, data-doctor results, features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of metatune's cache: $METATUNE_CACHE_DIR, else $XDG_CACHE_HOME/metatune, else ~/.cache/metatune."""
    root = os.environ.get("METATUNE_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metatune"
