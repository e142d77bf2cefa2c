"""How much memory a second-order MAML step needs, and refusing to start when it won't fit.

The estimate is deliberately rough (it is a guard against an out-of-memory crash an
hour into a run, not a profiler). For ONE task (the wrapper visits tasks one at a time):

    all trainable parameters                      (the initialisation θ, once)
  + adapted parameters × inner_steps              (one fast-weight copy per inner step;
                                                   the second-order graph keeps them all)
  + support activations × 2 × inner_steps         (the forward activations of each inner
                                                   step and its backward intermediates,
                                                   which the outer tape keeps to
                                                   differentiate through the inner gradient)
  + query activations × 2                         (the outer forward and backward)

"Activations" = bytes of all floating-point tensors one forward pass of the model
produces at the given batch shape, counted from a traced graph (variable reads and
constants excluded). Optimizer slots and TensorFlow's own overhead are not included,
so `check_maml_fits` keeps a safety margin.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models.errors import ModelError

_NOT_ACTIVATIONS = {"ReadVariableOp", "Const", "Placeholder", "VarHandleOp", "NoOp", "Identity"}


def _variable_bytes(variables) -> int:
    return int(sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables))


def forward_activation_bytes(model, input_shape, input_dtype=None) -> int:
    """Bytes of the floating-point tensors of one forward pass of `model` on `input_shape`."""
    if input_dtype is None:
        inputs = getattr(model, "inputs", None) or getattr(getattr(model, "embedding", None), "inputs", None)
        input_dtype = inputs[0].dtype if inputs else "float32"
    spec = tf.TensorSpec(tuple(int(d) for d in input_shape), tf.as_dtype(input_dtype))
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph
    total = 0
    for op in graph.get_operations():
        if op.type in _NOT_ACTIVATIONS:
            continue
        for tensor in op.outputs:
            if tensor.dtype.is_floating and tensor.shape.is_fully_defined():
                total += tensor.shape.num_elements() * tensor.dtype.size
    return int(total)


def maml_memory_estimate(model_or_vars, inner_steps: int, support_shape=None, query_shape=None, *,
                         activation_bytes: int | None = None) -> int:
    """Rough bytes for the second-order MAML step of one task (formula in the module doc).

    model_or_vars: a MetaLearner (only its adapted variables are copied per step), any
        keras model (all trainable variables adapt), or a list of variables (then pass
        `activation_bytes`, the forward activations of one support batch, or get 0).
    support_shape / query_shape: one task's batch shapes, e.g. (N*K, 28, 28, 1).
    """
    if int(inner_steps) < 1:
        raise ValueError(f"inner_steps must be at least 1. Received: inner_steps={inner_steps!r}")
    if isinstance(model_or_vars, (list, tuple)):
        all_vars = adapted = list(model_or_vars)
        model = None
    else:
        model = model_or_vars
        all_vars = list(getattr(model, "meta_variables", None) or model.trainable_variables)
        adapted = list(getattr(model, "adapted_variables", None) or all_vars)
    param_bytes = _variable_bytes(all_vars) + _variable_bytes(adapted) * int(inner_steps)
    if activation_bytes is None:
        activation_bytes = forward_activation_bytes(model, support_shape) if model is not None and support_shape else 0
        query_bytes = forward_activation_bytes(model, query_shape) if model is not None and query_shape else 0
    else:
        query_bytes = activation_bytes
    return int(param_bytes + 2 * activation_bytes * int(inner_steps) + 2 * query_bytes)


def _meminfo_available(path="/proc/meminfo") -> int | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def available_memory_bytes(meminfo_path="/proc/meminfo") -> int | None:
    """Free memory of the device the model runs on: the first GPU if any, else host RAM.

    GPU: TensorFlow's memory limit for GPU:0 minus what its allocator holds now
    (`tf.config.experimental.get_memory_info`). CPU: MemAvailable from /proc/meminfo.
    None when neither can be read (then the check is skipped).
    """
    if tf.config.list_physical_devices("GPU"):
        try:
            from tensorflow.python.client import device_lib

            limits = [d.memory_limit for d in device_lib.list_local_devices() if d.device_type == "GPU"]
            used = tf.config.experimental.get_memory_info("GPU:0")["current"]
            if limits:
                return int(limits[0] - used)
        except Exception:  # noqa: BLE001  (private API; fall back to host memory)
            pass
    return _meminfo_available(meminfo_path)


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


def check_maml_fits(estimate: int, available_bytes: int | None = None, *, margin: float = 0.8) -> None:
    """Raise ModelError when `estimate` exceeds `margin` × the available memory.

    available_bytes: injectable for tests; default `available_memory_bytes()`.
    """
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    if available_bytes is None:
        return
    if estimate > margin * available_bytes:
        raise ModelError(
            f"Second-order MAML would need about {_human(estimate)} per task, but only "
            f"{_human(available_bytes)} is available ({int(margin * 100)}% usable). "
            "Use --strategy fomaml (first order: the memory of a single inner step), or fewer "
            "inner steps, or smaller episodes (fewer ways, shots or queries), or adapt fewer "
            "layers (head only)."
        )
