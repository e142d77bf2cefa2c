"""Where metatune keeps its on-disk caches (converted weights, data-doctor results, features)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of metatune's cache: $METATUNE_CACHE_DIR, else $XDG_CACHE_HOME/metatune, else ~/.cache/metatune."""
    # expanduser: METATUNE_CACHE_DIR='~/x' (quoted, so no shell expanded it) made a folder named '~' in the current
    # one. An empty XDG_CACHE_HOME means unset (the XDG rule), not the current folder.
    root = os.environ.get("METATUNE_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "metatune"
