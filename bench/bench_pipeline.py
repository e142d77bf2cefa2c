"""Benchmark metatune's image input pipeline against what it has to feed.

Measures, at 224x224 and batch size 32 (see bench/README.md):

1. metatune's `data.pipeline.image_dataset(..., shuffle=True, cache=...)` for a full
   epoch (first epoch = decode, second epoch = in-memory cache hit or decode again; with
   `cache="disk"`, the first epoch decodes into a fresh on-disk store and reads it, the later ones read it),
   on the bundled 500-file sample and on a synthetic 20,000-JPEG folder: throughput,
   time to the first batch, CPU used and peak RSS;
2. plain `keras.utils.image_dataset_from_directory` for one epoch on the same folders;
3. EfficientNet-Lite0's training consumption rate (whole backbone + 10-way head
   trainable) on in-memory uint8 batches, plus its frozen inference rate (what a
   feature-extraction pass consumes);
4. listing speed (`scan_folder(check_files_content=False)` on 100,000 files) and the
   data doctor on the 20k folder (cold cache vs warm cache).

Every measurement of every run is a fresh subprocess (clean memory, its own peak RSS:
VmHWM, with getrusage's ru_maxrss also recorded), and measurements are interleaved within a run so ratios
compare numbers taken side by side. Reported: median and min-max over `--runs`, the
ratios against the 3x targets with a pass/miss verdict each, and a section that says,
from the run's own numbers, whether each shuffled configuration stalls before its first
batch, what it holds in memory and what `cache="auto"` picks.

    .venv/bin/python bench/bench_pipeline.py            # full (about 10 min on 2 cores)
    .venv/bin/python bench/bench_pipeline.py --quick    # short (1-3 min: smaller folders, fewer steps)
    .venv/bin/python bench/bench_pipeline.py --output bench/results.md
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common
import render_pipeline

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "samples" / "fashion_mnist"
DEFAULT_WORK_DIR = Path("/tmp/metatune-bench")
IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
NUM_CLASSES = 10
DATA_VERSION = 1

FULL = {"jpegs": 20_000, "tiny": 100_000, "train_warm": 3, "train_steps": 6, "infer_warm": 2, "infer_steps": 6,
        "ceiling_files": 1_000, "noop_files": 10_000}
QUICK = {"jpegs": 1_000, "tiny": 10_000, "train_warm": 1, "train_steps": 2, "infer_warm": 1, "infer_steps": 3,
         "ceiling_files": 300, "noop_files": 3_000}


# --------------------------------------------------------------------------- data generation

def _make_jpeg(args):
    index, path = args
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    scale = rng.uniform(1.0, 2.0)
    width = int(round(160 * scale * rng.uniform(0.9, 1.1)))
    height = int(round(120 * scale * rng.uniform(0.9, 1.1)))
    # Smooth random colour field + some noise: compresses and decodes like a photo, not like white noise.
    coarse = rng.integers(0, 256, (rng.integers(4, 12), rng.integers(4, 12), 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    field += rng.normal(0, 12, field.shape).astype(np.float32)
    Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def _complete_marker(folder: Path) -> Path:
    return folder / ".bench-complete.json"


def _is_complete(folder: Path, expect: dict) -> bool:
    try:
        return json.loads(_complete_marker(folder).read_text()) == expect
    except (OSError, ValueError):
        return False


def ensure_jpeg_folder(work: Path, count: int) -> tuple[Path, float, dict]:
    """`count` random-content JPEGs in 10 class folders; generated once (in parallel) and reused."""
    folder = work / f"jpeg{count}"
    expect = {"version": DATA_VERSION, "count": count, "kind": "jpeg"}
    if _is_complete(folder, expect):
        sizes = [p.stat().st_size for p in folder.glob("*/*.jpg")]
        return folder, 0.0, {"files": len(sizes), "bytes": sum(sizes), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    jobs = []
    for c in range(NUM_CLASSES):
        (folder / f"class_{c:02d}").mkdir(parents=True)
    for i in range(count):
        jobs.append((i, str(folder / f"class_{i % NUM_CLASSES:02d}" / f"img_{i:06d}.jpg")))
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        sizes = pool.map(_make_jpeg, jobs, chunksize=256)
    elapsed = time.perf_counter() - started
    _complete_marker(folder).write_text(json.dumps(expect))
    return folder, elapsed, {"files": len(sizes), "bytes": sum(sizes), "reused": False}


def ensure_tiny_folder(work: Path, count: int) -> tuple[Path, float, dict]:
    """`count` identical 1x1 PNGs in 10 class folders (for listing speed only)."""
    from PIL import Image

    folder = work / f"tiny{count}"
    expect = {"version": DATA_VERSION, "count": count, "kind": "tiny-png"}
    if _is_complete(folder, expect):
        return folder, 0.0, {"files": count, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 64, 32)).save(buffer, "PNG")
    payload = buffer.getvalue()
    per_class = count // NUM_CLASSES
    for c in range(NUM_CLASSES):
        class_dir = folder / f"class_{c:02d}"
        class_dir.mkdir(parents=True)
        for i in range(per_class):
            with open(class_dir / f"f_{i:06d}.png", "wb") as handle:
                handle.write(payload)
    elapsed = time.perf_counter() - started
    _complete_marker(folder).write_text(json.dumps(expect))
    return folder, elapsed, {"files": per_class * NUM_CLASSES, "reused": False}


class PageCachePin:
    """Keep the data files resident in the OS page cache while the benchmark runs (`vmtouch -l` style).

    Some machines reclaim idle page-cache pages within seconds (e.g. DAMON
    "pageout" schemes on VMs), after which reads go to the (virtual) disk and an
    "epoch" measures the disk as well as the pipeline. Mapping every file (MAP_SHARED |
    MAP_POPULATE, read-only) in this parent process keeps the pages mapped, and
    mapped pages are not reclaimed while memory is plentiful. The workers read the
    files normally; they are unaffected apart from hitting the page cache. Nothing is
    written and nothing outside this process is configured.
    """

    PROT_READ, MAP_SHARED, MAP_POPULATE = 0x1, 0x01, 0x8000

    def __init__(self, folders: list[Path]):
        self.folders = folders
        self.maps: list[tuple[int, int]] = []
        self.seconds = 0.0
        self.bytes = 0
        self.files = 0
        self.libc = None

    def __enter__(self):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.libc = libc
        failed = ctypes.c_void_p(-1).value
        started = time.perf_counter()
        for folder in self.folders:
            for path in sorted(folder.rglob("*")):
                if not path.is_file():
                    continue
                fd = os.open(path, os.O_RDONLY)
                try:
                    size = os.fstat(fd).st_size
                    if size == 0:
                        continue
                    addr = libc.mmap(None, size, self.PROT_READ, self.MAP_SHARED | self.MAP_POPULATE, fd, 0)
                finally:
                    os.close(fd)  # the mapping stays valid without the descriptor
                if addr in (None, failed):
                    continue
                self.maps.append((addr, size))
                self.bytes += size
        self.files = len(self.maps)
        self.seconds = time.perf_counter() - started
        return self

    def __exit__(self, *exc):
        for addr, size in self.maps:
            self.libc.munmap(addr, size)
        self.maps.clear()


# --------------------------------------------------------------------------- worker side

def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _iterate_epoch(dataset) -> dict:
    """One full pass: wall time, time to the first batch, images seen, CPU cores used on average.
    `dataset` may be a function that makes the dataset: its time is then part of the epoch's."""
    cpu0, started = _cpu_seconds(), time.perf_counter()
    first_batch_s, images = None, 0
    for batch in dataset() if callable(dataset) else dataset:
        x = batch[0] if isinstance(batch, tuple) else batch
        images += int(x.shape[0])
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - started
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu0
    return {"images": images, "seconds": wall, "images_per_s": images / wall, "first_batch_s": first_batch_s,
            "cores_used": cpu / wall}


def worker_ours(params: dict) -> dict:
    import data.pipeline as pipeline
    from data.pipeline import image_dataset, should_cache
    from data.scan import scan_folder

    rss_after_import = common.current_rss_mib()
    started = time.perf_counter()
    scan = scan_folder(params["folder"], check_files_content=False)
    list_s = time.perf_counter() - started
    paths = [e.path for e in scan.examples]
    labels = [e.label for e in scan.examples]
    cache = params["cache"]

    def make():
        return image_dataset(paths, labels, IMAGE_SIZE, BATCH_SIZE, shuffle=True, cache=cache)

    if cache == "disk":
        # A fresh store in a folder of its own (removed afterwards): the first epoch is the decoding
        # into the store, done while the dataset is made, plus one read of it; the later ones read it.
        store_root = tempfile.mkdtemp(prefix="image-store-", dir=params["work"])
        os.environ["METATUNE_CACHE_DIR"] = store_root
        try:
            epochs = [_iterate_epoch(make)]
            dataset = make()
            epochs += [_iterate_epoch(dataset) for _ in range(params.get("epochs", 2) - 1)]
        finally:
            shutil.rmtree(store_root, ignore_errors=True)
    else:
        dataset = make()
        epochs = [_iterate_epoch(dataset) for _ in range(params.get("epochs", 2))]
    budget = getattr(pipeline, "default_cache_budget_bytes", None)
    return {"files": len(paths), "cache": cache, "cached": should_cache(len(paths), IMAGE_SIZE, cache),
            "auto_would_cache": should_cache(len(paths), IMAGE_SIZE, "auto"),
            # what "auto" compared against, and the post-cache shuffle buffer, as the library has them now
            "cache_budget_bytes": budget() if budget else None,
            "cached_shuffle_buffer": getattr(pipeline, "CACHED_SHUFFLE_BUFFER", None),
            "list_s": list_s, "epochs": epochs, "rss_after_import_mib": rss_after_import}


def worker_keras(params: dict) -> dict:
    import keras

    rss_after_import = common.current_rss_mib()
    started = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(params["folder"], image_size=IMAGE_SIZE,
                                                       batch_size=BATCH_SIZE, verbose=False)
    build_s = time.perf_counter() - started
    epochs = [_iterate_epoch(dataset) for _ in range(params.get("epochs", 1))]
    return {"build_s": build_s, "epochs": epochs, "rss_after_import_mib": rss_after_import}


def build_lite0_features():
    """EfficientNet-Lite0 feature extractor (uint8 pixels -> 1280 features) with the ImageNet weights.

    Through the backbone registry (whose `build_features` takes (h, w) in older
    versions and an int side in newer ones). When the registry cannot be imported
    (the library is being edited while the benchmark runs), the same model is built
    the way the registry builds it, from the same library modules; the result says which.
    """
    import keras

    try:
        from models.backbones import get_backbone

        spec = get_backbone("efficientnet_lite0")
        size = IMAGE_SIZE[0] if hasattr(spec, "default_size") else IMAGE_SIZE
        return spec.build_features(size, "imagenet"), "registry"
    except ImportError as error:
        print(f"registry unavailable ({error}); building EfficientNet-Lite0 directly", file=sys.stderr)
    from models.backbones.efficientnet_lite import build_efficientnet_lite0
    from models.weights.efficientnet_lite0 import assign_weights, load_converted_weights

    core = build_efficientnet_lite0(input_shape=(*IMAGE_SIZE, 3), include_top=False)
    assign_weights(core, load_converted_weights())
    pixels = keras.Input(shape=(*IMAGE_SIZE, 3), dtype="uint8", name="pixels")
    normalized = keras.layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(pixels)
    return keras.Model(pixels, core(normalized), name="efficientnet_lite0_features"), "direct (registry unavailable)"


def worker_train(params: dict) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    rss_after_import = common.current_rss_mib()
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    features, builder = build_lite0_features()
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (BATCH_SIZE, *IMAGE_SIZE, 3), dtype=np.uint8))
    y = tf.constant(rng.integers(0, NUM_CLASSES, (BATCH_SIZE,), dtype=np.int32))

    def timed(step, warm, steps):
        compile_started = time.perf_counter()
        for _ in range(warm):
            step()
        warm_s = time.perf_counter() - compile_started
        cpu0, started = _cpu_seconds(), time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - started
        return {"warm_steps": warm, "warm_s": warm_s, "steps": steps, "seconds": wall,
                "images_per_s": steps * BATCH_SIZE / wall, "step_s": wall / steps,
                "cores_used": (_cpu_seconds() - cpu0) / wall}

    # Inference first (frozen backbone: what the linear strategy's feature pass consumes).
    features.trainable = False
    infer = timed(lambda: features.predict_on_batch(x), params["infer_warm"], params["infer_steps"])

    features.trainable = True
    pixels = keras.Input(shape=(*IMAGE_SIZE, 3), dtype="uint8", name="pixels")
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="head")(features(pixels))
    model = keras.Model(pixels, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.SparseCategoricalCrossentropy())
    train = timed(lambda: model.train_on_batch(x, y), params["train_warm"], params["train_steps"])
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return {"build_s": build_s, "builder": builder, "train": train, "infer": infer, "trainable_params": trainable,
            "jit_compile": bool(getattr(model, "jit_compile", False)), "rss_after_import_mib": rss_after_import,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def worker_scan(params: dict) -> dict:
    from data.scan import scan_folder

    started = time.perf_counter()
    scan = scan_folder(params["folder"], check_files_content=False)
    return {"files": len(scan.examples), "seconds": time.perf_counter() - started}


def worker_doctor(params: dict) -> dict:
    cache_root = tempfile.mkdtemp(prefix="doctor-cache-", dir=params["work"])
    os.environ["METATUNE_CACHE_DIR"] = cache_root  # fresh, empty cache: the first scan is cold
    try:
        from data.scan import scan_folder

        out = {}
        for name in ("cold", "warm"):
            cpu0, started = _cpu_seconds(), time.perf_counter()
            scan = scan_folder(params["folder"], check_files_content=True, use_cache=True)
            wall = time.perf_counter() - started
            out[name] = {"files": len(scan.examples), "seconds": wall, "files_per_s": len(scan.examples) / wall,
                         "cores_used": (_cpu_seconds() - cpu0) / wall}
        out["cache_bytes"] = sum(p.stat().st_size for p in Path(cache_root).rglob("*") if p.is_file())
        return out
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)


def worker_ceiling(params: dict) -> dict:
    """Diagnostics: `load_image` called directly (1 thread, one thread per core) on each folder, and
    the rate of a no-op `tf.numpy_function` pipeline (the overhead of the Python-decode route alone)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import tensorflow as tf

    from data.images import IMAGE_EXTENSIONS, load_image

    out = {}
    for name, folder in params["folders"].items():
        paths = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths = paths[: params["files"]]
        entry = {"files": len(paths)}
        for threads in (1, os.cpu_count() or 2):
            cpu0, started = _cpu_seconds(), time.perf_counter()
            if threads == 1:
                for p in paths:
                    load_image(p, IMAGE_SIZE)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda p: load_image(p, IMAGE_SIZE), paths, chunksize=16))
            wall = time.perf_counter() - started
            entry[f"threads_{threads}"] = {"images_per_s": len(paths) / wall,
                                           "cores_used": (_cpu_seconds() - cpu0) / wall}
        out[name] = entry
    blank = np.zeros((*IMAGE_SIZE, 3), np.uint8)
    count = params["noop_files"]

    def noop(path):
        image = tf.numpy_function(lambda p: blank, [path], tf.uint8, stateful=False)
        image.set_shape((*IMAGE_SIZE, 3))
        return image

    noop_ds = (tf.data.Dataset.from_tensor_slices(np.asarray([f"x{i}" for i in range(count)]))
               .map(noop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
    _iterate_epoch(noop_ds.take(4))
    out["noop_numpy_function"] = _iterate_epoch(noop_ds)
    return out


WORKERS = {"ours": worker_ours, "keras": worker_keras, "train": worker_train, "scan": worker_scan,
           "doctor": worker_doctor, "ceiling": worker_ceiling}


# --------------------------------------------------------------------------- parent side

def build_plan(quick: bool, sizes: dict, jpeg_dir: Path, tiny_dir: Path, work: Path, big: str) -> list[tuple]:
    """(result name, worker kind, worker params), in the order they run within every run."""
    plan = [
        ("train", "train", {"train_warm": sizes["train_warm"], "train_steps": sizes["train_steps"],
                            "infer_warm": sizes["infer_warm"], "infer_steps": sizes["infer_steps"]}),
        ("ours_sample", "ours", {"folder": str(SAMPLE_DIR), "cache": "auto", "epochs": 2}),
        ("keras_sample", "keras", {"folder": str(SAMPLE_DIR), "epochs": 1}),
        ("ours_big_memory", "ours", {"folder": str(jpeg_dir), "cache": "memory", "epochs": 2}),
        ("ours_big_none", "ours", {"folder": str(jpeg_dir), "cache": "none", "epochs": 2}),
        ("ours_big_disk", "ours", {"folder": str(jpeg_dir), "cache": "disk", "epochs": 3, "work": str(work)}),
        ("keras_big", "keras", {"folder": str(jpeg_dir), "epochs": 1}),
    ]
    if not quick:  # diagnostics, full run only
        plan += [
            ("ceiling", "ceiling", {"folders": {"sample": str(SAMPLE_DIR), big: str(jpeg_dir)},
                                    "files": sizes["ceiling_files"], "noop_files": sizes["noop_files"]}),
        ]
    plan += [
        ("scan", "scan", {"folder": str(tiny_dir)}),
        ("doctor", "doctor", {"folder": str(jpeg_dir), "work": str(work)}),
    ]
    return plan


def measure_runs(p: dict, plan: list[tuple], log) -> list[dict]:
    runs: list[dict] = []
    wait_budget = 30.0 if p["quick"] else 60.0  # total seconds we may spend waiting for a quiet machine
    for r in range(p["runs"]):
        results = {}
        for name, kind, params in plan:
            log(f"run {r + 1}/{p['runs']}: {name} ...")
            result = common.run_worker(__file__, kind, params, max_wait_s=min(wait_budget, 5.0 if p["quick"] else 20.0))
            wait_budget -= result["waited_for_quiet_s"]
            results[name] = result
            log(f"  {summarize(name, result)}  [other processes: {result['other_cores']:.2f} cores; waited "
                f"{result['waited_for_quiet_s']:.1f} s for quiet]")
        runs.append(results)
    return runs


def measure(p: dict, log) -> dict:
    sizes = QUICK if p["quick"] else FULL
    work = Path(p["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    total_started = time.perf_counter()

    log(f"Preparing data under {work} ...")
    jpeg_dir, jpeg_gen_s, jpeg_info = ensure_jpeg_folder(work, sizes["jpegs"])
    log(f"  {jpeg_dir}: {jpeg_info['files']} JPEGs, {jpeg_info['bytes'] / 1e6:.1f} MB, "
        f"{'reused' if jpeg_info['reused'] else f'generated in {jpeg_gen_s:.1f} s'}")
    tiny_dir, tiny_gen_s, tiny_info = ensure_tiny_folder(work, sizes["tiny"])
    log(f"  {tiny_dir}: {tiny_info['files']} tiny PNGs, "
        f"{'reused' if tiny_info['reused'] else f'generated in {tiny_gen_s:.1f} s'}")
    big = f"{sizes['jpegs'] // 1000}k"
    plan = build_plan(p["quick"], sizes, jpeg_dir, tiny_dir, work, big)
    with PageCachePin([SAMPLE_DIR, jpeg_dir] if p["pin_page_cache"] else []) as pin:
        if p["pin_page_cache"]:
            log(f"  pinned {pin.files:,} data files ({pin.bytes / 1e6:.0f} MB) in the page cache in {pin.seconds:.1f} s")
        runs = measure_runs(p, plan, log)
    meta = {
        "pinned": {"enabled": p["pin_page_cache"], "files": pin.files, "bytes": pin.bytes, "seconds": pin.seconds},
        "quick": p["quick"], "runs": p["runs"], "sizes": sizes, "big": big,
        "setup": {"image_size": list(IMAGE_SIZE), "batch_size": BATCH_SIZE, "num_classes": NUM_CLASSES},
        "jpeg_dir": str(jpeg_dir), "jpeg_info": jpeg_info, "jpeg_gen_s": jpeg_gen_s,
        "tiny_dir": str(tiny_dir), "tiny_info": tiny_info, "tiny_gen_s": tiny_gen_s,
        "total_s": time.perf_counter() - total_started, "machine": common.machine_description(),
        "command": p["command"],
    }
    return {"meta": meta, "runs": runs, "command": p["command"]}


def summarize(name: str, result: dict) -> str:
    if "epochs" in result:
        parts = [f"epoch {i + 1}: {e['images_per_s']:,.0f} img/s ({e['seconds']:.1f} s, first batch "
                 f"{e['first_batch_s']:.1f} s, {e['cores_used']:.2f} cores)" for i, e in enumerate(result["epochs"])]
        return "; ".join(parts) + f"; peak RSS {result['peak_rss_mib']:,.0f} MiB"
    if name == "train":
        return (f"train {result['train']['images_per_s']:.1f} img/s ({result['train']['step_s']:.2f} s/step), "
                f"inference {result['infer']['images_per_s']:.1f} img/s; peak RSS {result['peak_rss_mib']:,.0f} MiB")
    if name == "scan":
        return f"{result['files']:,} files listed in {result['seconds']:.2f} s"
    if name == "doctor":
        return (f"cold {result['cold']['seconds']:.1f} s ({result['cold']['files_per_s']:,.0f} files/s), "
                f"warm {result['warm']['seconds']:.2f} s")
    if name == "ceiling":
        parts = [f"{folder} {k}: {v['images_per_s']:,.0f} img/s ({v['cores_used']:.2f} cores)"
                 for folder, entry in result.items() if isinstance(entry, dict) and "files" in entry
                 for k, v in entry.items() if k.startswith("threads_")]
        parts.append(f"no-op numpy_function pipeline {result['noop_numpy_function']['images_per_s']:,.0f} img/s")
        return ", ".join(parts)
    return json.dumps(result)[:200]


def _arguments(parser) -> None:
    parser.add_argument("--runs", type=int, help="repetitions of every measurement (default 3; 1 with --quick)")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="temporary data (reused if present)")
    parser.add_argument("--no-pin-page-cache", dest="pin_page_cache", action="store_false",
                        help="do not keep the data files mapped (resident in the page cache) while measuring")


def _params(args) -> dict:
    runs = args.runs if args.runs is not None else 1 if args.quick else 3  # --quick: within bench-quick's 10 min
    if runs < 1:
        raise common.UsageError("--runs must be at least 1")
    # The command as the section prints it: the options that change what is measured, not where the
    # outputs went (run_all.py passes absolute --output / --json paths).
    options = (["--quick"] if args.quick else []) + ([f"--runs {args.runs}"] if args.runs is not None else []) \
        + ([f"--work-dir {args.work_dir}"] if args.work_dir != str(DEFAULT_WORK_DIR) else []) \
        + ([] if args.pin_page_cache else ["--no-pin-page-cache"])
    return {"quick": args.quick, "runs": runs, "work_dir": args.work_dir, "pin_page_cache": args.pin_page_cache,
            "command": " ".join([".venv/bin/python", "bench/bench_pipeline.py", *options])}


SECTION = common.Section(script="bench_pipeline.py", doc=__doc__, params=_params, measure=measure,
                         render=render_pipeline.render, workers=WORKERS, add_arguments=_arguments)


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
