"""Transfer-learning benchmarks on Fashion-MNIST (Debian `dataset-fashion-mnist`).

1. Feature cache: one head epoch on metatune's cached features vs one epoch of the
   Keras transfer-learning guide's recipe (frozen base inside the model, run on every
   batch of every epoch), same data, same head, same optimizer; plus both test
   accuracies after the same number of epochs.
2. Strategies vs training-set size: `linear` and `finetune` (through `train.py` /
   `evaluate.py`, the product path) and the same architecture trained from random
   weights (`efficientnet_lite0`, BatchNorm trainable with momentum 0.9), trained on
   10, 30 and 100 images per class with 3 seeds each and tested on the same 100
   held-out test images per class (1,000); medians over the seeds, gains paired by seed.

Every measurement runs in its own subprocess and reports its peak RSS (VmHWM).

    .venv/bin/python bench/bench_transfer.py                  # full: 224 px, 10/30/100 per class x 3 seeds (about 135 min on 2 cores)
    .venv/bin/python bench/bench_transfer.py --quick          # 96 px, 10 per class, 1 seed, 2-3 epochs (about 1.5 min)
    .venv/bin/python bench/bench_transfer.py --output section.md --json raw.json
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

import common
from common import markdown_table, median_range

REPO = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/metatune-bench/transfer")
# finetune_epochs: the product default (20) in the full run. Row 4 of issue 8: every
# training-set size x seed runs linear, finetune and from-scratch; `variants` are extra
# finetune settings measured at the largest size only (flags added to train.py).
OLD_DEFAULT = "finetune --unfreeze 2 --finetune-learning-rate 1e-4 --lr-decay 0.5 --mixup 0 (the default until 2026-12-05)"
# The recipe that became finetune's image default on 2026-12-05 (the best of 4 MixUp recipes on a separate
# draw, bench/notes.md; measured here as a variant first), and the earlier names of variants, which
# did not spell out the options whose defaults changed.
NEW_DEFAULT_AS_VARIANT = "finetune --unfreeze all --finetune-learning-rate 3e-4 --lr-decay 0.8 --mixup 0.2"
RENAMED_VARIANTS = {"finetune --unfreeze 4 --finetune-learning-rate 5e-4":
                    "finetune --unfreeze 4 --finetune-learning-rate 5e-4 --lr-decay 0.5 --mixup 0",
                    "finetune --unfreeze 6 --finetune-learning-rate 2e-4 --lr-decay 0.8":
                    "finetune --unfreeze 6 --finetune-learning-rate 2e-4 --lr-decay 0.8 --mixup 0"}
FULL = {"image_size": 224, "sizes": [10, 30, 100], "seeds": [1, 2, 3], "test_per_class": 100, "guide_epochs": 5,
        "head_epochs": 5, "finetune_epochs": 20, "scratch_epochs": 12, "scratch_min_steps": 300,
        # Every variant spells out the four options whose image defaults changed on 2026-12-05
        # (unfreeze, learning rate, lr-decay, MixUp), so its name stays what it ran.
        "variants": {"finetune --unfreeze 4 --finetune-learning-rate 5e-4 --lr-decay 0.5 --mixup 0":
                     ["--unfreeze", "4", "--finetune-learning-rate", "5e-4", "--lr-decay", "0.5", "--mixup", "0"],
                     # The best of 9 finetune recipes tried on a separate draw (bench/notes.md).
                     "finetune --unfreeze 6 --finetune-learning-rate 2e-4 --lr-decay 0.8 --mixup 0":
                     ["--unfreeze", "6", "--finetune-learning-rate", "2e-4", "--lr-decay", "0.8", "--mixup", "0"],
                     # finetune's image default until 2026-12-05 (still text's): the top 2 blocks, no MixUp.
                     OLD_DEFAULT: ["--unfreeze", "2", "--finetune-learning-rate", "1e-4", "--lr-decay", "0.5",
                                   "--mixup", "0"]}}
QUICK = {"image_size": 96, "sizes": [10], "seeds": [1], "test_per_class": 30, "guide_epochs": 2, "head_epochs": 2,
         "finetune_epochs": 2, "scratch_epochs": 3, "scratch_min_steps": 0, "variants": {}}
TEST_SEED = 1  # the held-out test images are the same for every size and seed
VAL_FRACTION = 0.2  # train.py's default: the share of each class's training images held out for validation


def _generate(folder: Path, per_class: int, test_per_class: int, seed: int) -> None:
    common.run_script([REPO / "data/samples/make_fashion_mnist_sample.py", "--train-per-class", per_class,
                       "--test-per-class", test_per_class, "--seed", seed, "--output", folder])


def make_data(per_class: int, test_per_class: int, seed: int = TEST_SEED) -> Path:
    """Train images: `per_class` per class drawn from Fashion-MNIST's train set with `seed`; test
    images: the same `test_per_class` per class of its t10k set for every size and seed."""
    folder = WORK / (f"fmnist-{per_class}-{test_per_class}" if seed == TEST_SEED else
                     f"fmnist-{per_class}-{test_per_class}-seed{seed}")
    if (folder / "COMPLETE").is_file():
        return folder
    _generate(folder, per_class, test_per_class, seed)
    if seed != TEST_SEED or per_class != max(FULL["sizes"]):
        reference = make_data(max(FULL["sizes"]), test_per_class, TEST_SEED)
        shutil.rmtree(folder / "test")
        shutil.copytree(reference / "test", folder / "test")
    (folder / "COMPLETE").write_text("ok\n")
    return folder


# --------------------------------------------------------------------------- workers (own process each)

def _split_examples(folder: Path, seed: int = 42):
    from data.scan import scan_folder
    from data.splits import assign_splits

    scan = scan_folder(str(folder))
    examples = assign_splits(scan, 0.2, seed, 0.2)
    return scan, {s: [e for e in examples if e.split == s] for s in ("train", "val", "test")}


def worker_cache_vs_guide(params: dict) -> dict:
    """Head epochs on cached features vs the guide's frozen-base-in-the-model epochs."""
    import keras
    import numpy as np
    import tensorflow as tf

    from app.features import cached_features, feature_store_key
    from data.pipeline import image_dataset
    from models.backbones import get_backbone
    from models.heads import ClassificationHead

    size, epochs = params["image_size"], params["epochs"]
    scan, splits = _split_examples(Path(params["data"]))
    spec = get_backbone("efficientnet_lite0")
    keras.utils.set_random_seed(0)
    base = spec.build_features(size, "imagenet")
    base.trainable = False
    num_classes = len(scan.class_names)
    train, test = splits["train"], splits["test"]
    y_train = np.asarray([e.label for e in train], np.int32)
    y_test = np.asarray([e.label for e in test], np.int32)

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.started)

    # metatune: features once (through the on-disk cache, cold), then the head.
    key = feature_store_key(base, "efficientnet_lite0", "imagenet", "image", size, "stretch", None)
    started = time.perf_counter()
    f_train = cached_features(base, train, "image", size, 32, "stretch", key)
    f_test = cached_features(base, test, "image", size, 32, "stretch", key)
    feature_pass_s = time.perf_counter() - started
    started = time.perf_counter()
    cached_features(base, train, "image", size, 32, "stretch", key)
    warm_load_s = time.perf_counter() - started
    keras.utils.set_random_seed(0)
    head_model = ClassificationHead(num_classes, 0.2, seed=0).features_model(f_train.shape[-1])
    head_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ours = EpochTimes()
    head_ds = tf.data.Dataset.from_tensor_slices((f_train, y_train)).shuffle(len(y_train), seed=0).batch(32)
    head_model.fit(head_ds, epochs=epochs, callbacks=[ours], verbose=0)
    ours_accuracy = float(np.mean(head_model.predict(f_test, verbose=0).argmax(axis=1) == y_test))

    # The Keras guide's recipe: base(training=False) inside the model, every epoch decodes and runs it.
    keras.utils.set_random_seed(0)
    pixels = keras.Input((size, size, 3), dtype="uint8")
    guide_head = ClassificationHead(num_classes, 0.2, seed=0)
    guide = keras.Model(pixels, guide_head(base(pixels, training=False)))
    guide.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_ds = image_dataset([e.path for e in train], y_train.tolist(), (size, size), 32, shuffle=True, seed=0)
    theirs = EpochTimes()
    guide.fit(train_ds, epochs=epochs, callbacks=[theirs], verbose=0)
    test_ds = image_dataset([e.path for e in test], None, (size, size), 32)
    guide_accuracy = float(np.mean(guide.predict(test_ds, verbose=0).argmax(axis=1) == y_test))
    return {"train_images": len(train), "test_images": len(test), "epochs": epochs,
            "feature_pass_s": feature_pass_s, "warm_cache_load_s": warm_load_s,
            "ours_epoch_s": ours.times, "guide_epoch_s": theirs.times,
            "ours_test_accuracy": ours_accuracy, "guide_test_accuracy": guide_accuracy}


def worker_strategy(params: dict) -> dict:
    """`train.py` + `evaluate.py` for linear/finetune: the product path, timed end to end."""
    import evaluate
    import train
    from app import run_dir as rd

    run = Path(params["run"])
    args = [params["data"], "--output", str(run), "--image-size", str(params["image_size"]),
            "--strategy", params["strategy"], "--no-cache-features", "--seed", str(params["seed"])]
    if params["strategy"] == "finetune":
        args += ["--finetune-epochs", str(params["finetune_epochs"])] + params.get("flags", [])
    started = time.perf_counter()
    assert train.main(args) == 0
    train_s = time.perf_counter() - started
    assert evaluate.main([str(run), params["data"], "--name", "bench"]) == 0
    metrics = rd.read_json(run / "eval" / "bench" / "metrics.json")
    history = rd.read_json(run / rd.HISTORY_FILE)
    refit = rd.read_json(run / rd.METADATA_FILE).get("refit", {"applied": False})
    return {"train_wall_s": train_s, "test_accuracy": metrics["accuracy"], "test_ci95": metrics["ci95"]["accuracy"],
            "macro_f1": metrics["macro_f1"], "num_test": metrics["num_examples"], "phases": history["phases"],
            "refit": refit}


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def worker_scratch(params: dict) -> dict:
    """The same network from random weights: everything trainable, BatchNorm momentum 0.9 (docs/ARCHITECTURE.md)."""
    import keras
    import numpy as np

    from data.augment import AugmentConfig
    from data.pipeline import image_dataset
    from models.backbones import get_backbone
    from models.heads import ClassificationHead
    from models.task_model import build_task_model

    size, seed = params["image_size"], params["seed"]
    scan, splits = _split_examples(Path(params["data"]), seed)
    epochs = scratch_epochs(params["epochs"], params.get("min_steps", 0), len(splits["train"]))
    keras.utils.set_random_seed(seed)
    features = get_backbone("efficientnet_lite0").build_features(size, "none")
    for layer in _all_layers(features):  # the backbone is nested: its BatchNorm layers are not in .layers
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model = build_task_model(features, ClassificationHead(len(scan.class_names), 0.2, seed=seed))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = {s: image_dataset([e.path for e in splits[s]], [e.label for e in splits[s]], (size, size), 32,
                             shuffle=s == "train", seed=seed, augment=AugmentConfig() if s == "train" else None,
                             cache="auto") for s in ("train", "val", "test")}
    started = time.perf_counter()
    assert all(l.momentum == 0.9 for l in _all_layers(model) if isinstance(l, keras.layers.BatchNormalization))
    model.fit(data["train"], validation_data=data["val"], epochs=epochs, verbose=0,
              # Every epoch runs and the best validation accuracy is kept: a from-scratch network's
              # validation loss is erratic for its first epochs (BatchNorm statistics still settling),
              # so early stopping on it would keep an untrained epoch.
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=epochs,
                                                       restore_best_weights=True)])
    train_s = time.perf_counter() - started
    y_test = np.asarray([e.label for e in splits["test"]])
    accuracy = float(np.mean(model.predict(data["test"], verbose=0)[:len(y_test)].argmax(axis=1) == y_test))
    return {"train_wall_s": train_s, "test_accuracy": accuracy, "num_test": len(y_test), "epochs": epochs}


def scratch_epochs(epochs: int, min_steps: int, train_images: int, batch_size: int = 32) -> int:
    """`epochs`, or more where the training set is so small that they would make fewer than
    `min_steps` optimizer steps: at 10 per class, 12 epochs are 36 steps, after which a network
    from random weights still predicts one class; the budget gives every size the steps that 12
    epochs make at 100 per class, so the baseline is not starved at the small sizes."""
    steps_per_epoch = -(-train_images // batch_size)
    return max(epochs, -(-min_steps // steps_per_epoch))


WORKERS = {"cache_vs_guide": worker_cache_vs_guide, "strategy": worker_strategy, "scratch": worker_scratch}


def run_worker(kind: str, params: dict) -> dict:
    # A cold feature cache every time: caching across runs must not flatter the timings.
    return common.run_worker(__file__, kind, params, env={"METATUNE_CACHE_DIR": str(WORK / f"cache-{time.time_ns()}")})


def measure_scratch(p: dict, size: int, seed: int) -> dict:
    folder = str(make_data(size, p["test_per_class"], seed))
    result = run_worker("scratch", {"data": folder, "image_size": p["image_size"], "seed": seed,
                                    "epochs": p["scratch_epochs"], "min_steps": p.get("scratch_min_steps", 0)})
    return {**result, "seed": seed}


def measure_strategy(p: dict, size: int, seed: int, strategy: str, run: Path, flags: list[str] | None = None) -> dict:
    folder = str(make_data(size, p["test_per_class"], seed))
    result = run_worker("strategy", {"data": folder, "image_size": p["image_size"], "seed": seed,
                                     "finetune_epochs": p["finetune_epochs"], "strategy": strategy, "run": str(run),
                                     "flags": flags or []})
    return {**result, "seed": seed}


def measure_variant(p: dict, size: int, seed: int, index: int, flags: list[str], runs_root: Path) -> dict:
    """`finetune` with a variant's extra flags (the full run's and `--add-variants` both use it)."""
    return measure_strategy(p, size, seed, "finetune", runs_root / f"{size}-{seed}-variant{index}", flags)


def rerun(results: dict, what: str, sizes: list[int], command: str) -> None:
    """Re-measure `what` ("scratch", or "strategies": linear and finetune) at `sizes` (every seed) in
    `results`, noting the command: a change to one recipe need not re-run the whole 100-minute grid."""
    p = results["params"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if what == "scratch":  # today's from-scratch recipe; the table shows the epochs each size ran
        p["scratch_min_steps"] = FULL["scratch_min_steps"]
    for size in sizes:
        runs = results["sizes"][str(size)]
        if what == "scratch":
            runs["scratch"] = [measure_scratch(p, size, seed) for seed in p["seeds"]]
        else:
            for strategy in ("linear", "finetune"):
                runs[strategy] = [measure_strategy(p, size, seed, strategy,
                                                   WORK / f"runs-{stamp}" / f"{size}-{seed}-{strategy}")
                                  for seed in p["seeds"]]
        logging.info("%d per class: %s", size, {k: [r["test_accuracy"] for r in v] for k, v in runs.items()
                                                if k in ("linear", "finetune", "scratch")})
    results.setdefault("reruns", []).append({"command": command, "what": what, "sizes": sizes,
                                             "when": time.strftime("%Y-%m-%d %H:%M")})


def add_variants(results: dict, command: str) -> list[str]:
    """Measure the finetune variants of FULL that `results` lacks (at the largest size, every
    seed), so that a new recipe joins the table without re-running the rest; return their names."""
    p = results["params"]
    size = max(p["sizes"])
    runs = results["sizes"][str(size)].setdefault("variants", {})
    missing = [name for name in FULL["variants"] if name not in runs]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in missing:
        index = list(FULL["variants"]).index(name)
        runs[name] = [measure_variant(p, size, seed, index, FULL["variants"][name], WORK / f"runs-{stamp}")
                      for seed in p["seeds"]]
        p.setdefault("variants", {})[name] = FULL["variants"][name]
        logging.info("%d per class, %s: %s", size, name, [r["test_accuracy"] for r in runs[name]])
    if missing:
        results.setdefault("reruns", []).append({"command": command, "what": "variants", "sizes": [size],
                                                 "names": missing, "when": time.strftime("%Y-%m-%d %H:%M")})
    return missing


def adopt_new_finetune_default(results: dict, command: str) -> None:
    """Re-label results measured before finetune's image defaults changed (2026-12-05), without
    re-running anything. Since then a training split of at least WHOLE_BACKBONE_MIN_PER_CLASS files
    per class (median) gets the whole-backbone MixUp recipe, a smaller one keeps the top 2 blocks.
    At the sizes where that recipe now applies, the `finetune` runs become the OLD_DEFAULT variant and
    the recipe's runs, measured as a variant (train.py with exactly the flags that are now the
    defaults), become the `finetune` row; at smaller sizes the `finetune` row is already today's default."""
    sys.path.insert(0, str(REPO))
    from app.config import WHOLE_BACKBONE_MIN_PER_CLASS

    if any(r.get("what") == "adopt_new_default" for r in results.get("reruns", [])):
        return
    adopted = []
    for size, runs in results["sizes"].items():
        variants = runs.setdefault("variants", {})
        for old, new in RENAMED_VARIANTS.items():
            if old in variants:
                variants[new] = variants.pop(old)
        if int(size) * (1 - VAL_FRACTION) < WHOLE_BACKBONE_MIN_PER_CLASS:
            continue
        if NEW_DEFAULT_AS_VARIANT not in variants:
            raise SystemExit(f"{size} per class: the new default was never measured as a variant; re-run the "
                             f"strategies there (--rerun-strategies {size}) instead")
        variants[OLD_DEFAULT] = runs["finetune"]
        runs["finetune"] = variants.pop(NEW_DEFAULT_AS_VARIANT)
        adopted.append(int(size))
    p = results["params"]
    p["variants"] = {RENAMED_VARIANTS.get(name, name): flags for name, flags in p.get("variants", {}).items()
                     if name != NEW_DEFAULT_AS_VARIANT}
    p["variants"][OLD_DEFAULT] = FULL["variants"][OLD_DEFAULT]
    results.setdefault("reruns", []).append({"command": command, "what": "adopt_new_default", "sizes": adopted,
                                             "when": time.strftime("%Y-%m-%d %H:%M")})


# --------------------------------------------------------------------------- report

def _median(values):
    return statistics.median(values) if values else float("nan")


_RERUN_LABELS = {"scratch": "From-scratch runs", "strategies": "`linear` and `finetune` runs"}


def _rerun_line(rerun: dict) -> str:
    sizes = ", ".join(map(str, rerun["sizes"]))
    if rerun.get("what") == "adopt_new_default":
        return (f" On {rerun['when']} (`{rerun['command']}`) finetune's image default became the whole-backbone MixUp "
                "recipe for training splits of 50 or more files per class (median), the top 2 blocks below: at "
                f"{sizes} per class the earlier `finetune` row is now labelled `{OLD_DEFAULT}` and the `finetune` "
                "row is the new recipe's runs, measured as a variant with exactly today's default flags; at the "
                "smaller sizes the `finetune` row is today's default as it was measured.")
    if rerun.get("what") == "variants":
        names = ", ".join(f"`{name}`" for name in rerun["names"])
        return f" {names} at {sizes} per class measured on {rerun['when']} with `{rerun['command']}`."
    return (f" {_RERUN_LABELS[rerun.get('what', 'scratch')]} at {sizes} per class re-measured on {rerun['when']} "
            f"with `{rerun['command']}`.")


def render(results: dict) -> str:
    p, out = results["params"], []
    add = out.append
    add("## Transfer learning (issue 5; issue 8 rows 3 and 4)\n")
    add(f"- **Command**: `{results['command']}`; wall time {results['wall_min']:.1f} min on {results['machine']}."
        + "".join(_rerun_line(r) for r in results.get("reruns", [])))
    add(f"- Data: Fashion-MNIST from Debian `dataset-fashion-mnist`: {', '.join(map(str, p['sizes']))} training images "
        f"per class from its train set (20% of them held out for validation), tested on {p['test_per_class'] * 10} "
        f"images from its t10k set; images {p['image_size']}x{p['image_size']}, EfficientNet-Lite0, batch 32.\n")
    c = results["cache_vs_guide"]
    ratios = [g / o for g, o in zip(c["guide_epoch_s"], c["ours_epoch_s"])]
    add("### Feature cache vs the Keras transfer-learning guide's recipe\n")
    add(f"At {max(p['sizes'])} per class (seed {TEST_SEED}): same {c['train_images']} training images, same head, Adam 1e-3, {c['epochs']} epochs each; per-epoch "
        "times side by side (epoch i of ours vs epoch i of the guide), median and min – max.\n")
    add(markdown_table(["", "per head epoch", "test accuracy", "one-off cost"], [
        ["metatune (head on cached features)", f"{_median(c['ours_epoch_s']) * 1000:.1f} ms "
         f"({min(c['ours_epoch_s']) * 1000:.1f} – {max(c['ours_epoch_s']) * 1000:.1f})", f"{c['ours_test_accuracy']:.3f}",
         f"feature pass {c['feature_pass_s']:.1f} s (train + test, cold cache); reloading from the cache "
         f"{c['warm_cache_load_s']:.2f} s"],
        ["Keras guide (frozen base inside the model)", f"{_median(c['guide_epoch_s']):.2f} s "
         f"({min(c['guide_epoch_s']):.2f} – {max(c['guide_epoch_s']):.2f})",
         f"{c['guide_test_accuracy']:.3f}", "none"]], align="lrrl"))
    verdict = "**pass**" if _median(ratios) >= 10 else f"**miss** (short by {10 / _median(ratios):.1f}x)"
    add(f"\nSpeed-up per head epoch: **{_median(ratios):,.0f}x** (min {min(ratios):,.0f}x, max {max(ratios):,.0f}x; "
        f"target ≥ 10x: {verdict}). Accuracy difference: "
        f"{abs(c['ours_test_accuracy'] - c['guide_test_accuracy']) * 100:.1f} points (the two differ only in "
        "shuffling order and dropout draws). Counting the one-off feature pass, the cache breaks even after "
        f"{c['feature_pass_s'] / max(1e-9, _median(c['guide_epoch_s'])):.1f} guide epochs.\n")
    add(f"Peak RSS: {c['peak_rss_mib']:,.0f} MiB (both recipes in one worker).\n")
    add(render_sizes(results))
    return "\n".join(out)


CLEAR_MARGIN_POINTS = 2.0


def _accuracies(runs: list[dict]) -> list[float]:
    return [r["test_accuracy"] for r in runs]


def _range(values: list[float], digits: int = 3) -> str:
    """median (min – max) over the seeds; the value alone for one seed."""
    return f"{values[0]:.{digits}f}" if len(values) == 1 else median_range(values, digits, thousands=False)


def _gains(finetune: list[dict], linear: list[dict]) -> list[float]:
    """finetune − linear in points, paired by seed (same training images, same split)."""
    by_seed = {r["seed"]: r["test_accuracy"] for r in linear}
    return [(r["test_accuracy"] - by_seed[r["seed"]]) * 100 for r in finetune if r["seed"] in by_seed]


def margin_verdict(gains: list[float]) -> str:
    """The issue's "clear margin": a median gain of at least 2 points, ahead on every seed."""
    median = statistics.median(gains)
    if median >= CLEAR_MARGIN_POINTS and min(gains) > 0:
        return f"**yes** (median {median:+.1f} points, ahead on every seed)"
    why = [f"median gain {median:+.1f} points < {CLEAR_MARGIN_POINTS:.0f}"] if median < CLEAR_MARGIN_POINTS else []
    if min(gains) <= 0:
        why.append(f"behind or level on {sum(g <= 0 for g in gains)} of {len(gains)} seeds")
    return "**no** (" + "; ".join(why) + ")"


def _refit_line(results: dict) -> str:
    """Per size, how many `linear` / `finetune` runs refitted on train + validation (`--refit auto`)."""
    parts = []
    for size in results["params"]["sizes"]:
        runs = results["sizes"][str(size)]
        ours = runs["linear"] + runs["finetune"] + [r for v in runs.get("variants", {}).values() for r in v]
        known = [r for r in ours if "refit" in r]
        refitted = sum(1 for r in known if r["refit"].get("applied"))
        parts.append(f"{size} per class: {refitted} of {len(ours)}" + (
            f" ({len(ours) - len(known)} measured before the refit existed)" if len(known) < len(ours) else ""))
    return ("Refit (`--refit auto`, the default: train again on train + validation for the chosen epochs when fewer "
            f"than 20 training files per class remain), `linear` / `finetune` runs that refitted: {'; '.join(parts)}. "
            "The from-scratch baseline does not refit.")


def _scratch_budget(results: dict) -> str:
    """The from-scratch training length: the recipe, and the epochs each size actually ran."""
    p = results["params"]
    if not p.get("scratch_min_steps"):
        return f"{p['scratch_epochs']} epochs"
    by_size = ", ".join(f"{size} per class: {'/'.join(str(e) for e in sorted({r['epochs'] for r in runs['scratch']}))}"
                        for size, runs in results["sizes"].items() if runs["scratch"])
    return (f"{p['scratch_epochs']} epochs or at least {p['scratch_min_steps']} steps, whichever is more "
            f"(epochs run: {by_size})")


def render_sizes(results: dict) -> str:
    p, out = results["params"], []
    add = out.append
    seeds = p["seeds"]
    add("### Accuracy vs training-set size: linear vs finetune vs from scratch\n")
    add(f"Each size is trained with {len(seeds)} seeds ({', '.join(map(str, seeds))}): the seed draws the training images "
        "from Fashion-MNIST's train set and seeds the split (20% of them held out for validation) and the training; the "
        f"{p['test_per_class'] * 10} test images are the same for every size and seed. `linear` and `finetune` run through "
        "`train.py` + `evaluate.py` with the product defaults (finetune: "
        f"`--finetune-epochs {p['finetune_epochs']}`; on images since 2026-12-05 the whole backbone at 3e-4 with "
        "lr-decay 0.8 and MixUp 0.2, before that the top 2 blocks at 1e-4, the row labelled as such); from scratch is the same network from random weights, every layer "
        f"trainable, BatchNorm momentum 0.9, augmentation, Adam 1e-3, {_scratch_budget(results)}, the epoch "
        "with the best validation accuracy kept. Cells: median (min – max) over the seeds; finetune − linear is paired by seed.\n")
    add(_refit_line(results) + "\n")
    table, verdicts = [], []
    for size in p["sizes"]:
        runs = results["sizes"][str(size)]
        rows = [("`linear`", runs["linear"]), ("`finetune`", runs["finetune"]),
                ("from scratch", runs["scratch"])] + [(f"`{name}`", r) for name, r in runs.get("variants", {}).items()]
        for label, method_runs in rows:
            gains = _gains(method_runs, runs["linear"]) if "finetune" in label else []
            table.append([size, label, _range(_accuracies(method_runs)), _range(gains, digits=1) if gains else "",
                          f"{_range([r['train_wall_s'] for r in method_runs], digits=0)} s",
                          f"{_range([r['peak_rss_mib'] for r in method_runs], digits=0)} MiB"])
        medians = {k: statistics.median(_accuracies(runs[k])) for k in ("linear", "finetune", "scratch")}
        order = medians["finetune"] > medians["linear"] > medians["scratch"]
        verdicts.append(f"- {size} per class: finetune {medians['finetune']:.3f}, linear {medians['linear']:.3f}, "
                        f"scratch {medians['scratch']:.3f} (medians): "
                        + ("finetune > linear > scratch." if order else
                           "**not** in the order finetune > linear > scratch.")
                        + f" Does finetune beat linear by a clear margin? {margin_verdict(_gains(runs['finetune'], runs['linear']))}."
                        + "".join(f" `{name}`: {margin_verdict(_gains(r, runs['linear']))}."
                                  for name, r in runs.get("variants", {}).items()))
    add(markdown_table(["images per class", "method", "test accuracy", "finetune − linear (points)",
                        "training wall time", "peak RSS"], table, align="rlrrrr"))
    add("")
    add(f"Verdicts (a clear margin: the median paired gain is at least {CLEAR_MARGIN_POINTS:.0f} points — about the "
        f"half-width of a 95% interval on 1,000 test images — and finetune is ahead on every seed; issue 5's bar is the "
        "100-per-class row of the full run):\n")
    out.extend(verdicts)
    return "\n".join(out) + "\n"


def measure(p: dict, log) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    data = str(make_data(max(p["sizes"]), p["test_per_class"]))
    results = {"params": p}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log("feature cache vs the Keras guide")
    results["cache_vs_guide"] = run_worker("cache_vs_guide", {"data": data, "image_size": p["image_size"],
                                                              "epochs": p["guide_epochs"]})
    results["sizes"] = {}
    for size in p["sizes"]:
        runs = results["sizes"][str(size)] = {"linear": [], "finetune": [], "scratch": [], "variants": {}}
        variants = p["variants"] if size == max(p["sizes"]) else {}
        for seed in p["seeds"]:
            for strategy in ("linear", "finetune"):
                runs[strategy].append(measure_strategy(p, size, seed, strategy,
                                                       WORK / f"runs-{stamp}" / f"{size}-{seed}-{strategy}"))
            for index, (name, flags) in enumerate(variants.items()):
                runs["variants"].setdefault(name, []).append(
                    measure_variant(p, size, seed, index, flags, WORK / f"runs-{stamp}"))
            runs["scratch"].append(measure_scratch(p, size, seed))
            log(f"{size} per class, seed {seed}: linear {runs['linear'][-1]['test_accuracy']:.3f} finetune "
                f"{runs['finetune'][-1]['test_accuracy']:.3f} scratch {runs['scratch'][-1]['test_accuracy']:.3f}")
    return results


def _reruns(args) -> dict:
    return {what: getattr(args, f"rerun_{what}") for what in ("scratch", "strategies")}


def revise(args, results: dict) -> dict:
    """--from-json with --adopt-new-default / --rerun-* / --add-variants: update the stored results."""
    if args.adopt_new_default:
        adopt_new_finetune_default(results, f"python bench/bench_transfer.py --from-json {args.from_json} "
                                            "--adopt-new-default")
    for what, sizes in _reruns(args).items():
        if sizes:
            rerun(results, what, [int(size) for size in sizes.split(",")],
                  f"python bench/bench_transfer.py --from-json {args.from_json} --rerun-{what} {sizes}")
    if args.add_variants and not add_variants(
            results, f"python bench/bench_transfer.py --from-json {args.from_json} --add-variants"):
        logging.info("Every finetune variant of the full run is already measured in %s", args.from_json)
    return results


def _params(args) -> dict:
    if any(_reruns(args).values()) or args.add_variants or args.adopt_new_default:
        raise common.UsageError("--rerun-scratch / --rerun-strategies / --add-variants need --from-json FILE "
                                "(the results to update)")
    return dict(QUICK if args.quick else FULL)


def _arguments(parser) -> None:
    for what in ("scratch", "strategies"):
        parser.add_argument(f"--rerun-{what}", metavar="SIZES",
                            help=f"with --from-json: re-measure the {_RERUN_LABELS[what]} at these sizes (comma "
                                 "list of images per class, every seed) and write the merged results (--json, --output)")
    parser.add_argument("--adopt-new-default", action="store_true",
                        help="with --from-json: re-label results measured before finetune's image defaults changed "
                             "(2026-12-05; see adopt_new_finetune_default), before any --rerun-*")
    parser.add_argument("--add-variants", action="store_true",
                        help="with --from-json: measure the finetune variants of the full run that the results lack "
                             "(largest size, every seed) and write the merged results (--json, --output)")


SECTION = common.Section(script="bench_transfer.py", doc=__doc__, params=_params, measure=measure, render=render,
                         workers=WORKERS, add_arguments=_arguments, revise=revise)


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
