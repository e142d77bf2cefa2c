"""What a cache key says about a model: its exact weights, and the precision it computes in."""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from models.layer_walk import flat_layers


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 over every weight's path, shape, dtype and bytes (about 0.1 s per 100 MB)."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}|{value.shape}|{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def reduced_compute_dtype(model: keras.Model) -> str | None:
    """The low-precision compute dtype of `model`'s layers (a run under --precision mixed_float16 /
    mixed_bfloat16), or None when every layer computes in float32.

    Features computed in float16 on a GPU differ from float32 ones (about 1e-3) with the same weights, so
    a cache key names it; None keeps the keys of float32 features, which every cache written so far holds."""
    reduced = sorted({str(layer.dtype_policy.compute_dtype) for layer in flat_layers(model)
                      if getattr(layer, "dtype_policy", None) is not None} - {"float32"})
    return "+".join(reduced) or None
