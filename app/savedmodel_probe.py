"""Run an exported SavedModel the way a server does: TensorFlow only, no metatune, no Keras.

    python app/savedmodel_probe.py SAVEDMODEL_DIR REQUEST.json RESULT.npz

Run as a script in a fresh process (the export's parity check does), never imported by
metatune: that it answers at all is the proof that the SavedModel needs nothing of ours.
Keras is blocked before TensorFlow is imported, so a SavedModel that still needed it would
fail here instead of on the user's server. Text models need tensorflow-text's kernels; its
op libraries are loaded directly (`import tensorflow_text` would import Keras for its Keras
layers, which a SavedModel does not use).

REQUEST.json: {"files": [paths]} (image: each file's bytes go to serving_default) or
{"texts": [strings]}, with optional "pixels": a .npy of uint8 [n, H, W, 3] for the `pixels`
signature, and "batch_size". RESULT.npz: probabilities, top_class, pixels_probabilities, and where
the SavedModel has them (a run with an unknown-class detector) unknown_score, unknown,
pixels_unknown_score.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys

BLOCKED = ("keras", "keras_hub", "tf_keras")


def load_text_kernels(tf) -> None:
    spec = importlib.util.find_spec("tensorflow_text")
    if spec is None or spec.origin is None:
        return
    for library in sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "python", "ops", "*.so"))):
        tf.load_op_library(library)


def die_with_parent() -> None:
    """Linux: end this probe when the export that started it dies (a `kill -9` of export.py left it running)."""
    parent = os.environ.get("METATUNE_PROBE_PARENT")
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # the parent died before the call above took effect
        sys.exit(1)


def main(argv: list[str]) -> int:
    die_with_parent()
    for name in BLOCKED:
        sys.modules[name] = None  # `import keras` now fails; TensorFlow's optional look-ups see "absent"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    path, request_path, result_path = argv
    request = json.loads(open(request_path, encoding="utf-8").read())
    batch_size = int(request.get("batch_size", 32))
    if "texts" in request:
        load_text_kernels(tf)
    model = tf.saved_model.load(path)
    serve = model.signatures["serving_default"]
    items = request.get("texts") or request.get("files") or []
    probabilities, top_class, unknown_score, unknown = [], [], [], []
    # No items (an image run whose held-out files are all WebP/TIFF) still calls the signature once, on an empty
    # batch: the loaded graph runs, and the outputs keep their shapes ([0, classes]), which the export relies on.
    chunks = [items[start:start + batch_size] for start in range(0, len(items), batch_size)] or [[]]
    for chunk in chunks:
        if "texts" in request:
            inputs = tf.constant(chunk, tf.string)
        else:
            inputs = tf.constant([open(p, "rb").read() for p in chunk], tf.string)
        out = serve(inputs=inputs)
        probabilities.append(out["probabilities"].numpy())
        top_class += [c.decode("utf-8") for c in out["top_class"].numpy()]
        if "unknown_score" in out:
            unknown_score.append(out["unknown_score"].numpy())
            unknown.append(out["unknown"].numpy())
    result = {"probabilities": np.concatenate(probabilities), "top_class": np.asarray(top_class, dtype=str)}
    if unknown_score:
        result["unknown_score"], result["unknown"] = np.concatenate(unknown_score), np.concatenate(unknown)
    if request.get("pixels"):
        pixels = np.load(request["pixels"])
        signature = model.signatures["pixels"]
        outs = [signature(pixels=tf.constant(pixels[s:s + batch_size])) for s in range(0, len(pixels), batch_size)]
        parts = [out["probabilities"].numpy() for out in outs]
        result["pixels_probabilities"] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        if outs and "unknown_score" in outs[0]:
            result["pixels_unknown_score"] = np.concatenate([out["unknown_score"].numpy() for out in outs])
    loaded = sorted(name for name in BLOCKED if sys.modules.get(name) is not None)
    if loaded:
        raise SystemExit(f"the SavedModel pulled in {loaded}")
    temporary = result_path + ".tmp.npz"
    np.savez(temporary, **result)
    os.replace(temporary, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
