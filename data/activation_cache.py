"""On-disk store of a backbone's intermediate activations (the input of its top blocks), per file and view.

Training a backbone's top blocks on a CPU pays off only when the frozen part below them runs
once per file instead of once per step (app/top_block_stage.py). Those activations are cached
as the frozen features are (data/feature_cache.py: rows looked up by file content, a digest per
row, written atomically, unreadable stores recomputed), with three differences:
- the key also names the cut (the first layer of the top part) and the augmented view: one
  store per view number, so a run asking for more views only computes the new ones;
- rows are float16: they are large (a 3 x 3 x 192 map per file for EfficientNet-Lite0 at
  96 px, 20 000 source files x 4 views is 280 MB as float16); float16 keeps about three
  significant digits, and the run's model.keras (float32 from the files) gives the cached
  path's embedding to within 1% (tests/app/test_top_block_stage.py);
- they live under `<cache>/activations/`, apart from the pooled features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from data.cache import cache_dir
from data.feature_cache import FeatureStore

ACTIVATION_CACHE_FORMAT = 1


def activation_store_key(identity: dict, view: int) -> str:
    """`identity`: everything the activations depend on besides the file (backbone, exact weights, input
    size, resize mode, the cut, the augmentation); `view`: 0 for the file itself, 1.. for augmented views."""
    fields = {"format": ACTIVATION_CACHE_FORMAT, **identity, "view": int(view)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def activation_store(key: str, root: Path | None = None) -> FeatureStore:
    return FeatureStore(key, root=root or cache_dir() / "activations", dtype=np.float16)
