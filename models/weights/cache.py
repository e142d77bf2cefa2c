"""Where converted pretrained weights are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path


def converted_weights_dir() -> Path:
    """<metatune's cache root>/weights.

    The root follows the rule of data/cache.py::cache_dir ($METATUNE_CACHE_DIR, else
    $XDG_CACHE_HOME/metatune, else ~/.cache/metatune). It is restated here rather than
    imported because models/ does not depend on data/; tests/test_architecture.py checks
    that the two agree.
    """
    root = os.environ.get("METATUNE_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "metatune"
    return Path(root).expanduser() / "weights"
