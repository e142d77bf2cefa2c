"""Compute efficiency (issue 8, row 2): does `finetune` train as fast on real files as the
same model fed synthetic in-memory tensors, and how fast does each image backbone infer?

1. Training: the product's phase-2 models (`app/phases.compile_phase2`: `efficientnet_lite0`
   at 224 px, default `--unfreeze`, BatchNorm frozen, `DiscriminativeAdam` with warm-up +
   cosine) on real JPEGs through the trainer's own `finetune_inputs` (Pillow decode,
   `image_cache` auto), against the same compiled model fed one fixed batch of random uint8
   images from memory (`Dataset.from_tensors(...).repeat()`): no decoding, no I/O, so its
   rate is what the model's compute allows on this machine. The default model's first layer
   is the augmentation, so its synthetic epochs pay for the augmentation too. Each run builds
   a fresh dataset (so its first epoch decodes and fills the image cache, later epochs hit the
   cache) and times one decoding epoch and one cached epoch, each between two synthetic epochs
   of the same model and compared with their mean (the machine's speed drifts by up to 20%
   within a minute). Ratios per run, then the median over the runs (target: real / synthetic
   >= 0.9, by step rate and by whole-epoch time). The same again with `--no-augment` (the
   model without the augmentation layer) separates the input pipeline, and, for comparison,
   with the augmentation applied inside tf.data instead (the placement before 2026-12-03).
2. Inference: images/s of every registered image backbone's feature extractor at its
   default size, batch 32, on in-memory uint8 batches (warm-up batches excluded), weights
   `none` where pretrained weights would need a network (the weights' values do not
   change the compute).

Every measurement group runs in its own subprocess with its peak RSS (VmHWM).

    .venv/bin/python bench/bench_compute.py            # full: 640 JPEGs, 5 runs (about 7 min on 2 cores)
    .venv/bin/python bench/bench_compute.py --quick    # 96 JPEGs at 160 px, 1 run, 1 batch per backbone (about 1 min)
    .venv/bin/python bench/bench_compute.py --output section.md --json raw.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import bench_pipeline as pipeline_bench
import common
from common import REPO, markdown_table, median_range

WORK = pipeline_bench.DEFAULT_WORK_DIR
TARGET_RATIO = 0.9
WARMUP_STEPS = 2
FULL = {"images": 640, "image_size": 224, "runs": 5, "infer_warm": 2, "infer_batches": 6}
QUICK = {"images": 96, "image_size": 160, "runs": 1, "infer_warm": 1, "infer_batches": 1}


class _Example:
    """What `finetune_inputs` reads from a scanned example."""

    def __init__(self, path: str, label: int):
        self.path, self.label, self.encoding = path, label, None


def _pick_files(folder: Path, count: int) -> tuple[list[str], list[int]]:
    """`count` JPEGs of the pipeline bench's folder, the same number from each class folder."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    per_class = -(-count // len(classes))
    paths, labels = [], []
    for label, class_dir in enumerate(classes):
        files = sorted(class_dir.iterdir())[:per_class]
        paths += [str(f) for f in files]
        labels += [label] * len(files)
    return paths[:count], labels[:count]


# --------------------------------------------------------------------------- workers (own process each)

class StepTimes:
    """Wall time of every training batch (Keras callback), to drop warm-up steps."""

    def __new__(cls):
        import keras

        class _StepTimes(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_train_batch_begin(self, batch, logs=None):
                self.started = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self.started)

        return _StepTimes()


def worker_train(params: dict) -> dict:
    """Runs of (decoding epoch, cached epoch) per input placement, each between synthetic epochs
    of the same compiled model, on the product's phase-2 models."""
    import keras
    import numpy as np
    import tensorflow as tf

    from app.config import TOP_BLOCKS_RECIPE, TrainConfig
    from app.phases import compile_phase2, finetune_inputs, phase2_augmentation
    from data.augment import AugmentConfig
    from data.pipeline import image_dataset, without_autotune_thread
    from models.backbones import get_backbone
    from models.heads import ClassificationHead
    from models.task_model import build_task_model

    size = params["image_size"]
    # The top-2-blocks recipe (finetune's image default before 2026-12-05, still text's), which this
    # section has always measured: the input pipeline's share is what it reports, not the recipe.
    config = TrainConfig(data_dir="unused", strategy="finetune", **TOP_BLOCKS_RECIPE).validate()
    # `--no-augment`: the same pipeline and model without augmentation, the input pipeline alone.
    plain_config = TrainConfig(data_dir="unused", strategy="finetune", augment=False, **TOP_BLOCKS_RECIPE).validate()
    examples = [_Example(p, l) for p, l in zip(params["paths"], params["labels"])]
    num_classes = max(params["labels"]) + 1
    keras.utils.set_random_seed(config.seed)
    spec = get_backbone("efficientnet_lite0")
    features = spec.build_features(size, "imagenet")
    head = ClassificationHead(num_classes, config.dropout, seed=config.seed)
    task_model = build_task_model(features, head)
    steps = -(-len(examples) // config.batch_size)
    # The product's own phase-2 models (app/phases.compile_phase2): the default one, whose first
    # layer is the augmentation, and the task model itself, as `--no-augment` trains it. They share
    # every weight; each has its own optimizer.
    models = {"augmented": compile_phase2(config, spec, features, task_model, head.layers, steps, num_classes,
                                          phase2_augmentation(config, "image")),
              "plain": compile_phase2(plain_config, spec, features, task_model, head.layers, steps, num_classes)}
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8)),
             tf.constant(rng.integers(0, num_classes, config.batch_size, dtype=np.int32)))
    for model in models.values():
        model.fit(tf.data.Dataset.from_tensors(batch).repeat(WARMUP_STEPS + 1), verbose=0)  # trace + first steps

    def images_per_s(step_times: list[float]) -> float:
        timed = step_times[WARMUP_STEPS:]  # the first steps of an epoch also start the tf.data threads
        return config.batch_size * len(timed) / sum(timed)

    def epoch(model, dataset) -> dict:
        times = StepTimes()
        started = time.perf_counter()
        model.fit(dataset, epochs=1, callbacks=[times], verbose=0)
        return {"images_per_s": images_per_s(times.times), "epoch_s": time.perf_counter() - started,
                "step_s": times.times}

    def tf_data_augmented_inputs():
        """The placement before 2026-12-03, for comparison: the same augmentation applied per batch
        inside tf.data (`image_dataset(augment=...)`), feeding the model without the layer."""
        return image_dataset([e.path for e in examples], [e.label for e in examples], (size, size),
                             config.batch_size, shuffle=True, seed=config.seed, resize=config.resize,
                             augment=AugmentConfig(), cache=config.image_cache)

    # Fed like the product feeds fit() (app/phases.py): without tf.data's autotuning thread.
    synthetic_ds = without_autotune_thread(tf.data.Dataset.from_tensors(batch).repeat(steps))
    # (key prefix of its epochs, which model trains on it, how to build its inputs); each model's
    # real epochs are compared with that model's own synthetic epochs (`synthetic_key`).
    placements = [("", "augmented", lambda: finetune_inputs(config, "image", size, examples, [], num_classes).train),
                  ("no_augment_", "plain", lambda: finetune_inputs(plain_config, "image", size, examples, [],
                                                                   num_classes).train),
                  ("tf_data_augment_", "plain", tf_data_augmented_inputs)]
    synthetic_key = {"augmented": "synthetic_epochs", "plain": "plain_synthetic_epochs"}
    runs = []
    for _ in range(params["runs"]):
        # Every real epoch sits between two synthetic epochs of the same model and is compared with
        # their mean: this machine's speed drifts by up to 20% over a minute (shared host), which a
        # single synthetic epoch per run would read as a pipeline cost or gain.
        run = {key: [] for key in synthetic_key.values()}
        for prefix, model_name, make_inputs in placements:
            model, synthetic_epochs = models[model_name], run[synthetic_key[model_name]]
            if not synthetic_epochs:
                synthetic_epochs.append(epoch(model, synthetic_ds))
            train_ds = make_inputs().apply(tf.data.experimental.assert_cardinality(steps))
            for name in ("decoding_epoch", "cached_epoch"):  # the same dataset: its cache fills in the first
                real = epoch(model, train_ds)
                synthetic_epochs.append(epoch(model, synthetic_ds))
                before, after = synthetic_epochs[-2:]
                real["synthetic_neighbours"] = {key: (before[key] + after[key]) / 2
                                                for key in ("images_per_s", "epoch_s")}
                run[prefix + name] = real
        run["synthetic"] = {key: statistics.median(e[key] for e in run["synthetic_epochs"])
                            for key in ("images_per_s", "epoch_s")}
        runs.append(run)
    trainable = sum(int(np.prod(v.shape)) for v in task_model.trainable_variables)
    return {"runs": runs, "steps_per_epoch": steps, "batch_size": config.batch_size, "unfreeze": config.unfreeze,
            "trainable_parameters": trainable, "image_cache": config.image_cache, "augment": config.augment,
            "augmentation_placement": "model"}


def worker_inference(params: dict) -> dict:
    """Images/s of one backbone's feature extractor on in-memory batches, per run."""
    import keras
    import numpy as np
    import tensorflow as tf

    from models.backbones import get_backbone

    spec = get_backbone(params["backbone"])
    size = spec.default_size
    weights = "imagenet" if params["backbone"] == "efficientnet_lite0" else "none"
    keras.utils.set_random_seed(0)
    model = spec.build_features(size, weights)
    model.trainable = False
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8))
    infer = tf.function(lambda x: model(x, training=False), jit_compile=False)
    for _ in range(params["warm"]):
        infer(batch).numpy()
    rates = []
    for _ in range(params["runs"]):
        started = time.perf_counter()
        for _ in range(params["batches"]):
            infer(batch).numpy()
        rates.append(32 * params["batches"] / (time.perf_counter() - started))
    return {"image_size": size, "weights": weights, "images_per_s": rates,
            "parameters": int(model.count_params())}


WORKERS = {"train": worker_train, "inference": worker_inference}


def image_backbones() -> list[str]:
    sys.path.insert(0, str(REPO))
    from models.backbones import list_backbones

    return [spec.name for spec in list_backbones() if spec.modality == "image" and not spec.tests_only]


# --------------------------------------------------------------------------- report

_fmt = median_range


def render(results: dict) -> str:
    p, t = results["params"], results["train"]
    out = []
    add = out.append
    add("## Compute efficiency (issue 8, row 2)\n")
    add(f"- **Command**: `{results['command']}`; wall time {results['wall_min']:.1f} min on {results['machine']}.")
    add(f"- Training: the product's finetune phase-2 model (`app/phases.compile_phase2`) — `efficientnet_lite0` at {p['image_size']} px, "
        f"`--unfreeze {t['unfreeze']}` ({t['trainable_parameters']:,} trainable parameters, BatchNorm frozen), "
        f"DiscriminativeAdam with warm-up + cosine, batch {t['batch_size']} — on {p['images']} real JPEGs "
        f"(bench_pipeline's synthetic photos, 160x120 to 320x240) through the trainer's own `finetune_inputs` "
        f"(Pillow decode, `image_cache={t['image_cache']}`; augmentation {'on' if t['augment'] else 'off'}"
        + (", as the first layer of the model" if t.get("augmentation_placement") == "model" else "") +
        f"), against the same compiled model fed one random uint8 batch from memory. {t['steps_per_epoch']} steps per "
        f"epoch, the first {WARMUP_STEPS} of each epoch excluded; {p['runs']} runs, each with a fresh dataset; "
        "median (min – max). Every real epoch runs between two synthetic epochs and its ratio is to their "
        "mean (the machine's speed drifts by up to 20% within a minute); ratios per run, then their median.\n")
    runs = t["runs"]
    in_model = t.get("augmentation_placement") == "model"
    where = "augmentation in the model" if in_model else "augmentation in tf.data"
    table = []
    rows = [("synthetic_epochs", "synthetic in-memory tensors, the default model" +
             (" (its first layer is the augmentation)" if in_model else "") + ": the compute-bound limit"),
            ("decoding_epoch", f"real files, first epoch (decode, fills the cache; {where})"),
            ("cached_epoch", f"real files, later epochs (cache hit; {where})"),
            ("plain_synthetic_epochs", "synthetic in-memory tensors, the model without augmentation (`--no-augment`)"),
            ("no_augment_decoding_epoch", "real files, first epoch, `--no-augment`"),
            ("no_augment_cached_epoch", "real files, later epochs, `--no-augment`"),
            ("tf_data_augment_decoding_epoch", "for comparison: real files, first epoch, augmentation in tf.data "
             "(the placement before 2026-12-03), model without augmentation"),
            ("tf_data_augment_cached_epoch", "for comparison: real files, later epochs, augmentation in tf.data, "
             "model without augmentation")]
    for key, label in rows:
        if key.endswith("synthetic_epochs"):
            epochs = [e for r in runs for e in r.get(key, [r["synthetic"]] if key == "synthetic_epochs" else [])]
            if epochs:
                table.append([label, _fmt([e["images_per_s"] for e in epochs]), 1, "",
                              f"{_fmt([e['epoch_s'] for e in epochs], 2)} s", 1])
            continue
        if key not in runs[0]:
            continue
        rates = [r[key]["images_per_s"] for r in runs]
        # Each real epoch against its two neighbouring synthetic epochs (older results: the run's one).
        references = [r[key].get("synthetic_neighbours", r["synthetic"]) for r in runs]
        ratios = [r[key]["images_per_s"] / ref["images_per_s"] for r, ref in zip(runs, references)]
        by_epoch = [ref["epoch_s"] / r[key]["epoch_s"] for r, ref in zip(runs, references) if "epoch_s" in r[key]]
        # The verdict takes the worse of the two ratios: stalls outside the timed steps count too.
        median = min(statistics.median(ratios), statistics.median(by_epoch) if by_epoch else float("inf"))
        verdict = "**pass**" if median >= TARGET_RATIO else f"**miss** (short by {(TARGET_RATIO - median) * 100:.0f} points)"
        if key.startswith("tf_data_"):
            verdict = verdict.replace("**", "") + ", not the product's placement"
        epoch_cells = [f"{_fmt([r[key]['epoch_s'] for r in runs], 2)} s", _fmt(by_epoch, 3)] if by_epoch else ["", ""]
        table.append([label, _fmt(rates), _fmt(ratios, 3), verdict, *epoch_cells])
    add(markdown_table(["training input", "images/s (steps)", "ratio to synthetic", "target ≥ 0.9", "epoch wall time",
                        "ratio by epoch time"], table, align="lrrlrr"))
    add(f"\nImages/s (steps) times every step but the first {WARMUP_STEPS} of each epoch; the epoch wall time is the "
        "whole `fit()` call of one epoch, start-up and first batches included. The training default is "
        "augmentation on: one random affine transform per image for flip, rotation and zoom, then Keras' "
        "RandomContrast" + ("; since 2026-12-03 it is the first layer of the model phase 2 trains "
        "(`app/phases.phase2_training_model`; on a GPU it runs on the device), so the synthetic tensors of the "
        "default model go through it too, and the ratio measures what the input pipeline costs. The saved "
        "classifier does not contain it." if in_model else "; applied per batch inside tf.data on the same "
        "2 cores the model trains on.") + " The `--no-augment` rows show the input pipeline itself.")
    if "tf_data_augment_cached_epoch" in runs[0]:
        add("\nWhat the user gets, with augmentation on (the default): images/s of training on real files with the "
            "augmentation in the model, against the same with it in tf.data (the placement before 2026-12-03), "
            "paired within each run (those epochs run within a minute of each other); median (min – max) of the "
            "runs' ratios:\n")
        placements = []
        for name, label in (("decoding_epoch", "first (decode)"), ("cached_epoch", "later (cache hit)")):
            model_side = [r[name] for r in runs]
            data_side = [r["tf_data_augment_" + name] for r in runs]
            placements.append([label, _fmt([e["images_per_s"] for e in model_side]),
                               _fmt([e["images_per_s"] for e in data_side]),
                               _fmt([a["images_per_s"] / b["images_per_s"] for a, b in zip(model_side, data_side)], 3),
                               _fmt([b["epoch_s"] / a["epoch_s"] for a, b in zip(model_side, data_side)], 3)])
        add(markdown_table(["epochs", "augmentation in the model", "augmentation in tf.data",
                            "ratio, images/s (steps)", "ratio by epoch time"], placements, align="lrrrr"))
    add(f"\nPeak RSS of the training worker: {t['peak_rss_mib']:,.0f} MiB.\n")
    add("### Inference images/s per image backbone\n")
    add(f"Feature extractor only (the head is a single matrix product), default size, batch 32, in-memory uint8 "
        f"batches, {p['infer_warm']} warm-up batches then {p['runs']} runs of {p['infer_batches']} batches; "
        "median (min – max).\n")
    add(markdown_table(
        ["backbone", "size", "parameters", "weights used", "images/s", "ms per image", "peak RSS"],
        [[f"`{name}`", f"{r['image_size']} px", f"{r['parameters'] / 1e6:.1f}M", r["weights"], _fmt(r["images_per_s"]),
          f"{1000 / statistics.median(r['images_per_s']):.1f}", f"{r['peak_rss_mib']:,.0f} MiB"]
         for name, r in results["inference"].items()], align="lrrlrrr"))
    return "\n".join(out)


def measure(p: dict, log) -> dict:
    folder, _, _ = pipeline_bench.ensure_jpeg_folder(WORK, pipeline_bench.QUICK["jpegs"])
    paths, labels = _pick_files(folder, p["images"])
    results = {"params": p}
    with pipeline_bench.PageCachePin([folder]):
        log("training: real files vs synthetic tensors")
        results["train"] = common.run_worker(__file__, "train", {"paths": paths, "labels": labels,
                                                                 "image_size": p["image_size"], "runs": p["runs"]})
    results["inference"] = {}
    for name in image_backbones():
        log(f"inference: {name}")
        results["inference"][name] = common.run_worker(__file__, "inference", {
            "backbone": name, "warm": p["infer_warm"], "batches": p["infer_batches"], "runs": p["runs"]})
    return results


SECTION = common.Section(script="bench_compute.py", doc=__doc__, workers=WORKERS, measure=measure, render=render,
                         params=lambda args: dict(QUICK if args.quick else FULL))


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
