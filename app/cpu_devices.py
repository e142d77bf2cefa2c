"""METATUNE_CPU_DEVICES=N: split the CPU into N logical devices before TensorFlow runs any op.

Why: MirroredStrategy needs several devices, and most users (and CI) have one CPU. Keras' own
distribute tests split the CPU the same way (`tf.config.set_logical_device_configuration`), so a
distributed configuration can be tried on a laptop: N replicas that share the same cores (no
speed-up, the same arithmetic). It must happen before TensorFlow initialises its devices, which
the first op or device listing does; the entry scripts call `split_cpu_from_environment` right
after importing TensorFlow (app/cli.prepare_environment).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)
ENV_VAR = "METATUNE_CPU_DEVICES"
MAX_CPU_DEVICES = 64
ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"


def requested_cpu_devices(value: str | None) -> int:
    """The device count METATUNE_CPU_DEVICES asks for (1 when unset or empty); ValueError with the message to show."""
    if value is None or not value.strip():
        return 1
    text = value.strip()
    # Digits only: int() also reads "2_0" as 20 and "\u0662" (an Arabic-Indic 2) as 2, so a typo silently split the CPU
    # into 20 devices.
    count = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= count <= MAX_CPU_DEVICES:
        raise ValueError(f"{ENV_VAR} must be a whole number of logical CPU devices from 1 to {MAX_CPU_DEVICES}. "
                         f"Received: {ENV_VAR}={value!r}. Unset it to run on the CPU as one device.")
    return count


def split_cpu_from_environment() -> str | None:
    """Apply METATUNE_CPU_DEVICES; the message to report when it cannot be applied, else None."""
    try:
        count = requested_cpu_devices(os.environ.get(ENV_VAR))
    except ValueError as error:
        return str(error)
    if count == 1:
        return None
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:  # TensorFlow already initialised its devices in this process
        return (f"{ENV_VAR}={count} could not split the CPU: TensorFlow had already started ({error}). "
                "Set it in the environment of the command (METATUNE_CPU_DEVICES=2 python train.py ...).")
    logger.debug("CPU split into %d logical devices (%s=%d)", count, ENV_VAR, count)
    return None


def avoid_onednn_for_split_batches(environ=os.environ) -> bool:
    """Turn TensorFlow's oneDNN CPU kernels off (unless the user chose) when this process may run a replica
    on the CPU that gets an empty share of a batch: several logical CPU devices, or a multi-worker job
    (TF_CONFIG). Must run before TensorFlow is imported, which reads the variable once. True: turned off.

    Why: a global batch is split across replicas in order, so the last batch of an epoch (or a small
    split) can leave a replica with 0 examples (3 replicas, --batch-size 6, 4 files left: 2, 2, 0), and
    TensorFlow 2.21's oneDNN Conv2D on an empty batch returns its input unchanged, so the next layer
    fails ("Incompatible shapes: [8] vs. [0,32,32,3]"). TensorFlow's own Eigen kernels handle empty
    batches; logical CPU devices are for trying a configuration, not for speed."""
    try:
        several = requested_cpu_devices(environ.get(ENV_VAR)) > 1
    except ValueError:  # reported by split_cpu_from_environment
        several = False
    if not (several or (environ.get("TF_CONFIG") or "").strip()) or ONEDNN_VAR in environ:
        return False
    environ[ONEDNN_VAR] = "0"
    return True
