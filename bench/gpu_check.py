"""What an accelerator gives metatune, measured in a few minutes (run through bench/gpu_check.sh).

On whatever TensorFlow sees (GPUs, else the CPU, said so in the output), each in a fresh
subprocess (precision policy and XLA are process-wide):

1. finetune throughput: EfficientNet-Lite0 (random weights: the same arithmetic as ImageNet's,
   no weights package needed) with the whole backbone and a 10-way head trainable, Adam,
   `train_on_batch` on in-memory uint8 batches, warm-up steps excluded, at
   - 1 device, float32, no XLA (the reference),
   - 1 device, mixed precision (mixed_float16 on a GPU, mixed_bfloat16 on a CPU),
   - 1 device, XLA (`jit_compile=True`),
   - every GPU (MirroredStrategy, the per-device batch times the GPUs; only with 2 or more);
2. the input pipeline (`data.pipeline.image_dataset`) on synthetic JPEGs, against the
   reference's training rate (the pipeline must outpace it): a decoding epoch (`cache="none"`),
   and an epoch read back from the on-disk store of `--image-cache disk` (written first).

Results go to OUTPUT/gpu_check.json (raw) and OUTPUT/gpu_check.md (a table), rewritten
(atomically) after every measurement, so a run cut short by its time limit keeps what it measured.

    .venv/bin/python bench/gpu_check.py --output DIR [--quick] [--per-measurement-timeout 150]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import run_worker, serve_worker, write_atomically

FULL = {"size": 224, "batch": 64, "warm": 3, "steps": 10, "jpegs": 2000}
QUICK = {"size": 64, "batch": 8, "warm": 1, "steps": 2, "jpegs": 64}
DECODING_ROW = "input pipeline (decoding epoch)"
DISK_ROW = "input pipeline (epoch read from the --image-cache disk store)"


# --------------------------------------------------------------------------- measurements (subprocesses)

def measure_training(params: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if params["precision"] != "float32":
        keras.mixed_precision.set_global_policy(params["precision"])
    devices = [d.name for d in gpus][: params["devices"]] if gpus else None
    strategy = tf.distribute.MirroredStrategy(devices) if params["devices"] > 1 else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    batch = params["batch"] * replicas
    size = params["size"]
    with strategy.scope():
        from models.backbones import get_backbone

        features = get_backbone("efficientnet_lite0").build_features(size, "none")
        outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(features.output)
        model = keras.Model(features.input, outputs)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                      jit_compile=params["xla"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    if replicas > 1:
        data = strategy.experimental_distribute_dataset(data)
    iterator = iter(data)
    for _ in range(params["warm"]):
        model.train_on_batch(*next(iterator))
    started = time.perf_counter()
    for _ in range(params["steps"]):
        loss = model.train_on_batch(*next(iterator))
    float(np.asarray(loss).ravel()[0])  # wait for the device
    seconds = time.perf_counter() - started
    return {"images_per_s": batch * params["steps"] / seconds, "global_batch": batch, "replicas": replicas,
            "device": "GPU" if gpus else "CPU"}


def measure_pipeline(params: dict) -> dict:
    import numpy as np
    from PIL import Image

    from data.pipeline import image_dataset

    folder = Path(params["work"]) / "jpegs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(params["jpegs"]):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    size = (params["size"], params["size"])
    cache = params.get("cache", "none")
    if cache == "disk":  # a store of its own, written while the dataset is made (not timed)
        os.environ["METATUNE_CACHE_DIR"] = str(Path(params["work"]) / "cache")
    dataset = image_dataset(paths, [0] * len(paths), size, params["batch"], shuffle=True, cache=cache)
    started, images = time.perf_counter(), 0
    for batch, _ in dataset:
        images += int(batch.shape[0])
    return {"images_per_s": images / (time.perf_counter() - started), "files": len(paths), "cores": os.cpu_count()}


WORKERS = {"training": measure_training, "pipeline": measure_pipeline}


# --------------------------------------------------------------------------- driver

def gpu_count() -> int:
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


def run_one(kind: str, params: dict, timeout: float) -> dict:
    """One measurement in its own process (the common harness); a failure or a timeout becomes a row saying so,
    so that the check goes on to the next measurement."""
    try:
        return run_worker(__file__, kind, params, timeout_s=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except RuntimeError as error:
        return {"error": (str(error).strip().splitlines() or ["no output"])[-1][:300]}


def render(results: dict) -> str:
    lines = [f"## GPU check ({results['date']})", "", f"Device: {results['device']}. Settings: {results['settings']}.", "",
             "| measurement | images/s | vs 1 device float32 |", "|---|---:|---:|"]
    reference = results["rows"].get("1 device, float32", {}).get("images_per_s")
    for name, row in results["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | – ({row['error']}) | – |")
            continue
        ratio = f"{row['images_per_s'] / reference:.2f}x" if reference else "–"
        lines.append(f"| {name} | {row['images_per_s']:,.0f} | {ratio} |")
    for name in (DECODING_ROW, DISK_ROW):
        pipeline = results["rows"].get(name, {}).get("images_per_s")
        if pipeline and reference:
            verdict = "keeps up with" if pipeline >= reference else "is slower than"
            lines += ["", f"The {name} {verdict} 1-device float32 training: {pipeline / reference:.2f}x its rate."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=False, help="Folder for gpu_check.json and gpu_check.md.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks that the script runs (CPU is fine).")
    parser.add_argument("--per-measurement-timeout", type=float, default=150.0)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if serve_worker(args, WORKERS):
        return 0
    if not args.output:
        parser.error("--output DIR is required")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    settings = dict(QUICK if args.quick else FULL)
    gpus = gpu_count()
    precision = "mixed_float16" if gpus else "mixed_bfloat16"
    plan = [("1 device, float32", "training", {"devices": 1, "precision": "float32", "xla": False}),
            (f"1 device, {precision}", "training", {"devices": 1, "precision": precision, "xla": False}),
            ("1 device, float32, XLA", "training", {"devices": 1, "precision": "float32", "xla": True})]
    if gpus > 1:
        plan.append((f"{gpus} GPUs (MirroredStrategy), float32", "training",
                     {"devices": gpus, "precision": "float32", "xla": False}))
    plan.append((DECODING_ROW, "pipeline", {"work": str(output / "work"), "cache": "none"}))
    plan.append((DISK_ROW, "pipeline", {"work": str(output / "work"), "cache": "disk"}))
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "device": f"{gpus} GPU(s)" if gpus else "no GPU visible to TensorFlow: CPU only",
               "settings": settings, "rows": {}}
    for name, kind, params in plan:
        print(f"measuring: {name}", file=sys.stderr, flush=True)
        results["rows"][name] = run_one(kind, {**settings, **params}, args.per_measurement_timeout)
        write_atomically(output / "gpu_check.json", json.dumps(results, indent=2))
        write_atomically(output / "gpu_check.md", render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
