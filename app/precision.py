"""Which Keras dtype policy a run computes in: --precision auto|float32|mixed_float16|mixed_bfloat16.

Mixed precision only pays on GPUs with fast low-precision units: float16 Tensor Cores
from compute capability 7.0 (Volta), bfloat16 from 8.0 (Ampere). On a CPU it gains
nothing and float16 is emulated and slow, so every unsupported request falls back to
float32 with a log line saying why, rather than failing the run. The head always
computes in float32 (models/heads.py), so the probabilities and the loss stay float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.errors import UserError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# The lowest compute capability with fast hardware for each mixed policy.
MIN_COMPUTE_CAPABILITY = {"mixed_float16": (7, 0), "mixed_bfloat16": (8, 0)}

# (device name, compute capability (major, minor) or None when the driver does not say)
Gpu = tuple[str, "tuple[int, int] | None"]


def visible_gpus() -> list[Gpu]:
    """The GPUs TensorFlow can use, with their compute capability."""
    import tensorflow as tf  # here, not at import time: config parsing must stay fast

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append((details.get("device_name", device.name), details.get("compute_capability")))
    return gpus


def resolve_precision(requested: str, gpus: Sequence[Gpu] | None = None) -> str:
    """The policy to use for `requested`; `gpus` (default: the visible ones) is injectable for tests."""
    if requested not in PRECISIONS:
        raise UserError(f"precision must be one of {list(PRECISIONS)}. Received: precision={requested!r}")
    if requested == "float32":
        return "float32"
    gpus = visible_gpus() if gpus is None else list(gpus)
    if requested == "auto":
        return _auto(gpus)
    return _explicit(requested, gpus)


def _auto(gpus: list[Gpu]) -> str:
    # bfloat16 is never chosen automatically: float16 is as fast where both exist, and
    # bfloat16's short mantissa can cost accuracy; users who want it ask for it.
    if not gpus:
        logger.info("No GPU visible: mixed precision stays off on CPU (it gains nothing there); computing in float32.")
        return "float32"
    capability = _weakest(gpus)
    if capability is None or capability < MIN_COMPUTE_CAPABILITY["mixed_float16"]:
        logger.info("GPU compute capability %s is below 7.0 (no float16 Tensor Cores): computing in float32.",
                    _format(capability))
        return "float32"
    logger.info("GPU compute capability %s: computing in mixed_float16 (float32 variables and head).",
                _format(capability))
    return "mixed_float16"


def _explicit(requested: str, gpus: list[Gpu]) -> str:
    needed = MIN_COMPUTE_CAPABILITY[requested]
    if not gpus:
        logger.warning("precision=%s needs a GPU and none is visible: computing in float32 (on CPU mixed precision "
                       "gains nothing and float16 is much slower).", requested)
        return "float32"
    capability = _weakest(gpus)
    if capability is None:
        # The driver does not report it: trust the user's explicit request.
        logger.warning("Could not read the GPU compute capability: using precision=%s as requested.", requested)
        return requested
    if capability < needed:
        logger.warning("precision=%s needs GPU compute capability %s or higher; this GPU has %s: computing in float32.",
                       requested, _format(needed), _format(capability))
        return "float32"
    return requested


def _weakest(gpus: list[Gpu]) -> tuple[int, int] | None:
    """The lowest compute capability among the GPUs (a replica on the slowest one sets the pace)."""
    capabilities = [capability for _, capability in gpus]
    if any(capability is None for capability in capabilities):
        return None
    return min(tuple(capability) for capability in capabilities)


def _format(capability) -> str:
    return "unknown" if capability is None else ".".join(str(part) for part in capability)


def apply_precision(requested: str, gpus: Sequence[Gpu] | None = None) -> str:
    """Set Keras' global dtype policy for `requested` and return the policy name used.

    Always sets it, float32 included, so a policy left by an earlier run in the same
    process (tests, notebooks) does not leak into this one.
    """
    import keras

    policy = resolve_precision(requested, gpus)
    keras.mixed_precision.set_global_policy(policy)
    return policy
