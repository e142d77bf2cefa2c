"""Benchmark metatune's image input pipeline against what it has to feed.

Measures, at 224x224 and batch size 32 (see bench/README.md):

1. metatune's `data.pipeline.image_dataset(..., shuffle=True, cache=...)` for a full
   epoch (first epoch = decode, second epoch = in-memory cache hit or decode again),
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

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "samples" / "fashion_mnist"
DEFAULT_WORK_DIR = Path("/tmp/metatune-bench")
IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
NUM_CLASSES = 10
RESULT_PREFIX = "BENCH_RESULT "
TARGET_RATIO = 3.0
# An epoch "stalls" when its first batch takes more than this share of the epoch and more than this many
# seconds (report wording only); decoded folders smaller than MEMORY_SIGNAL_MIB are too small for peak RSS
# to show whether a pipeline holds them.
STALL_SHARE, STALL_SECONDS = 0.10, 0.5
MEMORY_SIGNAL_MIB = 512
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

def _current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _iterate_epoch(dataset) -> dict:
    """One full pass: wall time, time to the first batch, images seen, CPU cores used on average."""
    cpu0, started = _cpu_seconds(), time.perf_counter()
    first_batch_s, images = None, 0
    for batch in dataset:
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

    rss_after_import = _current_rss_mib()
    started = time.perf_counter()
    scan = scan_folder(params["folder"], check_files_content=False)
    list_s = time.perf_counter() - started
    paths = [e.path for e in scan.examples]
    labels = [e.label for e in scan.examples]
    cache = params["cache"]
    dataset = image_dataset(paths, labels, IMAGE_SIZE, BATCH_SIZE, shuffle=True, cache=cache)
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

    rss_after_import = _current_rss_mib()
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

    rss_after_import = _current_rss_mib()
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


def worker_main(kind: str, params: dict) -> None:
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    result = WORKERS[kind](params)
    result["peak_rss_mib"] = peak_rss_mib()
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent side

def _system_busy_s() -> float:
    """CPU seconds all processes on the machine have been busy (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_and_children_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 0.5) -> float:
    """Wait (at most `max_wait_s`) until other processes use less than `threshold_cores`; returns seconds waited.

    The machine is shared (tests may run beside the benchmark); this avoids starting
    a measurement in the middle of someone else's burst. It cannot prevent one.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        busy0, mine0 = _system_busy_s(), _own_and_children_cpu_s()
        time.sleep(window_s)
        if (_system_busy_s() - busy0 - (_own_and_children_cpu_s() - mine0)) / window_s < threshold_cores:
            break
    return time.perf_counter() - started


def run_worker(kind: str, params: dict, max_wait_s: float = 0.0) -> dict:
    waited = wait_for_quiet(max_wait_s) if max_wait_s > 0 else 0.0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--params", json.dumps(params)]
    busy0, mine0, started = _system_busy_s(), _own_and_children_cpu_s(), time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    other = (_system_busy_s() - busy0 - (_own_and_children_cpu_s() - mine0)) / wall
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"worker {kind} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_s"] = wall
    result["other_cores"] = max(0.0, other)  # CPU used by other processes while this worker ran
    result["waited_for_quiet_s"] = waited
    return result


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], digits: int = 1) -> tuple[str, str]:
    med, lo, hi = _median_range(values)
    return f"{med:,.{digits}f}", f"{lo:,.{digits}f} – {hi:,.{digits}f}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    from common import cpu_model

    cpu = cpu_model()
    ram_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_plan(args, sizes: dict, jpeg_dir: Path, tiny_dir: Path, work: Path, big: str) -> list[tuple]:
    """(result name, worker kind, worker params), in the order they run within every run."""
    plan = [
        ("train", "train", {"train_warm": sizes["train_warm"], "train_steps": sizes["train_steps"],
                            "infer_warm": sizes["infer_warm"], "infer_steps": sizes["infer_steps"]}),
        ("ours_sample", "ours", {"folder": str(SAMPLE_DIR), "cache": "auto", "epochs": 2}),
        ("keras_sample", "keras", {"folder": str(SAMPLE_DIR), "epochs": 1}),
        ("ours_big_memory", "ours", {"folder": str(jpeg_dir), "cache": "memory", "epochs": 2}),
        ("ours_big_none", "ours", {"folder": str(jpeg_dir), "cache": "none", "epochs": 2}),
        ("keras_big", "keras", {"folder": str(jpeg_dir), "epochs": 1}),
    ]
    if not args.quick:  # diagnostics, full run only
        plan += [
            ("ceiling", "ceiling", {"folders": {"sample": str(SAMPLE_DIR), big: str(jpeg_dir)},
                                    "files": sizes["ceiling_files"], "noop_files": sizes["noop_files"]}),
        ]
    plan += [
        ("scan", "scan", {"folder": str(tiny_dir)}),
        ("doctor", "doctor", {"folder": str(jpeg_dir), "work": str(work)}),
    ]
    return plan


def measure(args, plan: list[tuple]) -> list[dict]:
    runs: list[dict] = []
    wait_budget = 30.0 if args.quick else 60.0  # total seconds we may spend waiting for a quiet machine
    for r in range(args.runs):
        results = {}
        for name, kind, params in plan:
            log(f"run {r + 1}/{args.runs}: {name} ...")
            result = run_worker(kind, params, max_wait_s=min(wait_budget, 5.0 if args.quick else 20.0))
            wait_budget -= result["waited_for_quiet_s"]
            results[name] = result
            log(f"  {summarize(name, result)}  [other processes: {result['other_cores']:.2f} cores; waited "
                f"{result['waited_for_quiet_s']:.1f} s for quiet]")
        runs.append(results)
    return runs


def run_benchmark(args) -> tuple[dict, dict]:
    sizes = QUICK if args.quick else FULL
    work = Path(args.work_dir)
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
    plan = build_plan(args, sizes, jpeg_dir, tiny_dir, work, big)
    with PageCachePin([SAMPLE_DIR, jpeg_dir] if args.pin_page_cache else []) as pin:
        if args.pin_page_cache:
            log(f"  pinned {pin.files:,} data files ({pin.bytes / 1e6:.0f} MB) in the page cache in {pin.seconds:.1f} s")
        runs = measure(args, plan)
    meta = {
        "pinned": {"enabled": args.pin_page_cache, "files": pin.files, "bytes": pin.bytes, "seconds": pin.seconds},
        "quick": args.quick, "runs": args.runs, "sizes": sizes, "big": big,
        "jpeg_dir": str(jpeg_dir), "jpeg_info": jpeg_info, "jpeg_gen_s": jpeg_gen_s,
        "tiny_dir": str(tiny_dir), "tiny_info": tiny_info, "tiny_gen_s": tiny_gen_s,
        "total_s": time.perf_counter() - total_started, "machine": machine_info(),
        "command": " ".join([".venv/bin/python", "bench/bench_pipeline.py", *sys.argv[1:]]),
    }
    return meta, {"runs": runs}


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


# --------------------------------------------------------------------------- report

def verdict(ratio: float) -> str:
    if ratio >= TARGET_RATIO:
        return f"**pass** (≥ {TARGET_RATIO:g}x)"
    return f"**miss**: {ratio / TARGET_RATIO:.0%} of the {TARGET_RATIO:g}x target (short by {TARGET_RATIO - ratio:.2f}x)"


def render_markdown(meta: dict, data: dict) -> str:
    runs = data["runs"]
    n = len(runs)
    big = meta["big"]
    m = meta["machine"]
    lines: list[str] = []
    add = lines.append

    def col(key, fn):
        return [fn(r[key]) for r in runs]

    def median_of(key, fn):
        return statistics.median(fn(r[key]) for r in runs)

    def cell(values, digits=0):
        med, rng = fmt(values, digits)
        return f"{med} | {rng}"

    add(f"## Input pipeline benchmark ({'quick' if meta['quick'] else 'full'} run)")
    add("")
    gpus = runs[0]["train"].get("gpus")
    gpu_text = ("" if gpus is None else "no GPU; " if gpus == 0
                else f"{gpus} GPU{'s' if gpus != 1 else ''} visible to TensorFlow; ")
    add(f"Machine: {m['nproc']} CPU cores (`nproc`), {m['cpu']}, {m['ram_gib']:.1f} GiB RAM, {gpu_text}"
        f"{m['platform']}.  ")
    add(f"Python {m['python']}, tensorflow {m['tensorflow']}, keras {m['keras']}, numpy {m['numpy']}, "
        f"pillow {m['pillow']}.")
    add("")
    add(f"Command: `{meta['command']}` (from the repository root). {n} run{'s' if n != 1 else ''}; every "
        f"table gives the median over the runs and the min – max range. Every measurement is a fresh "
        f"subprocess (its own peak RSS: VmHWM from /proc/self/status, since `getrusage`'s ru_maxrss also counts "
        f"the parent's RSS at fork; both are in the JSON); within a run the measurements are "
        f"interleaved, and each ratio is computed per run from the two numbers of that run, then "
        f"summarised. Image size 224x224, batch size 32. Total wall time {meta['total_s'] / 60:.1f} min, "
        f"data generation included ({meta['jpeg_gen_s'] + meta['tiny_gen_s']:.0f} s).")
    add("")
    info = meta["jpeg_info"]
    pinned = meta.get("pinned", {})
    made = " in an earlier run and reused" if info["reused"] else f" in {meta['jpeg_gen_s']:.0f} s"
    add(f"Data: the bundled sample `data/samples/fashion_mnist` (500 PNGs, 28x28 grayscale, in train/ and "
        f"test/); a synthetic folder of {info['files']:,} JPEGs in {NUM_CLASSES} classes (smooth random colour "
        f"fields + noise, about 160x120 to 320x240, quality 90, {info['bytes'] / info['files'] / 1e3:.1f} kB on "
        f"average; generated with Pillow in parallel"
        f"{made}); "
        f"{meta['tiny_info']['files']:,} identical 1x1 PNGs in {NUM_CLASSES} classes for listing speed. "
        + (f"The sample and JPEG files ({pinned['bytes'] / 1e6:.0f} MB) were kept mapped, hence resident in the "
           f"OS page cache, for the whole benchmark (mapping them took {pinned['seconds']:.1f} s), so the epochs "
           f"measure decoding, not this VM's disk (see bench/README.md)."
           if pinned.get("enabled") else
           "The data files were NOT pinned in the page cache (--no-pin-page-cache): epochs may include disk reads."))
    add("")

    # ---- consumption
    t0 = runs[0]["train"]
    add("### 1. EfficientNet-Lite0 consumption (what the pipeline must outpace)")
    add("")
    add("| measurement | images/s | min – max | s per batch of 32 | peak RSS MiB |")
    add("|---|---:|---|---:|---:|")
    add(f"| training step: whole backbone + 10-way Dense trainable ({t0['trainable_params']:,} params), "
        f"`train_on_batch` on an in-memory uint8 batch, Adam, compiled with Keras defaults "
        f"(resolved jit_compile={t0['jit_compile']}; model built via {t0.get('builder', 'registry')}); "
        f"{t0['train']['warm_steps']} warm steps excluded, "
        f"{t0['train']['steps']} timed | {cell(col('train', lambda t: t['train']['images_per_s']), 1)} | "
        f"{fmt(col('train', lambda t: t['train']['step_s']), 2)[0]} | "
        f"{fmt(col('train', lambda t: t['peak_rss_mib']), 0)[0]} |")
    add(f"| inference, frozen backbone (`predict_on_batch`; what a feature-extraction pass over the images "
        f"consumes) | {cell(col('train', lambda t: t['infer']['images_per_s']), 1)} | "
        f"{fmt(col('train', lambda t: t['infer']['step_s']), 2)[0]} | (same process) |")
    add("")

    # ---- pipelines
    sample, big_none = runs[0]["ours_sample"], runs[0]["ours_big_none"]
    auto_big = big_none["auto_would_cache"]  # True: "auto" (the default) caches the big folder
    default_key = "ours_big_memory" if auto_big else "ours_big_none"
    sample_mb = sample["files"] * IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3 / 1e6
    sample_label = ("ours, `cache=\"auto\"` "
                    + (f"(→ cached, {sample_mb:.0f} MB)" if sample["cached"] else "(→ not cached)"))
    memory_label = "ours, `cache=\"memory\"`" + (" (= what `\"auto\"` gives here: the default)" if auto_big else "")
    none_label = "ours, `cache=\"none\"`" + ("" if auto_big else " (= what `\"auto\"` gives here: the default)")
    # (folder, pipeline, result key, epoch index, epoch label): every configuration measured
    rows = [
        ("sample (500)", sample_label, "ours_sample", 0, "1 (decode)"),
        ("sample (500)", sample_label, "ours_sample", 1, "2 (cache hit)" if sample["cached"] else "2 (decode again)"),
        ("sample (500)", "`image_dataset_from_directory`", "keras_sample", 0, "1"),
        (big, memory_label, "ours_big_memory", 0, "1 (decode)"),
        (big, memory_label, "ours_big_memory", 1, "2 (cache hit)"),
        (big, none_label, "ours_big_none", 0, "1 (decode)"),
        (big, none_label, "ours_big_none", 1, "2 (decode again)"),
        (big, "`image_dataset_from_directory`", "keras_big", 0, "1"),
    ]
    add("### 2. Pipeline throughput, full epoch")
    add("")
    add("| folder | pipeline | epoch | images/s | min – max | first batch after (s) | CPU cores busy | "
        "peak RSS MiB |")
    add("|---|---|---|---:|---|---:|---:|---:|")
    for folder, label, key, e, epoch in rows:
        add(f"| {folder} | {label} | {epoch} | {cell(col(key, lambda x: x['epochs'][e]['images_per_s']))} | "
            f"{fmt(col(key, lambda x: x['epochs'][e]['first_batch_s']), 2)[0]} | "
            f"{fmt(col(key, lambda x: x['epochs'][e]['cores_used']), 2)[0]} | "
            f"{fmt(col(key, lambda x: x['peak_rss_mib']), 0)[0]} |")
    add("")
    images_gb = big_none["files"] * IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3 / 1e9
    budget = big_none.get("cache_budget_bytes")
    if budget:
        budget_text = (f"the `\"auto\"` budget of {budget / 2**30:.2f} GiB = {budget / 1e9:.2f} GB "
                       f"(`data.pipeline.default_cache_budget_bytes()` in the worker: "
                       f"{budget / (m['ram_gib'] * 2**30):.0%} of this machine's {m['ram_gib']:.1f} GiB RAM)")
    else:
        budget_text = "the `\"auto\"` budget, which this JSON does not record (it predates that field)"
    add(f"`should_cache(..., \"auto\")` is {sample['auto_would_cache']} for the sample and "
        f"{auto_big} for the {big} folder ({big_none['files']:,} x 224x224x3 = "
        f"{images_gb:.2f} GB against {budget_text}). Peak RSS is the whole worker process; "
        f"TensorFlow alone is about {fmt(col('ours_sample', lambda x: x['rss_after_import_mib']), 0)[0]} MiB "
        f"after import. \"First batch after\" is the time from the start of the epoch to its first batch; "
        f"\"CPU cores busy\" is process CPU time / wall time over the epoch ({m['nproc']} is the machine's "
        f"maximum).")
    add("")
    ceiling = runs[0].get("ceiling", {})
    if ceiling:
        add("Diagnostics (same runs): `data.images.load_image` called directly, no TensorFlow, and a no-op "
            "`tf.numpy_function` pipeline (returns a preallocated 224x224x3 array; AUTOTUNE map, batch 32, prefetch):")
        add("")
        add("| measurement | images/s | min – max | CPU cores busy |")
        add("|---|---:|---|---:|")
        for folder, entry in ceiling.items():
            if not (isinstance(entry, dict) and "files" in entry):
                continue
            for k in (k for k in entry if k.startswith("threads_")):
                threads = k.split("_")[1]
                add(f"| `load_image` on {entry['files']:,} files of {folder}, {threads} thread{'s' if threads != '1' else ''} "
                    f"| {cell(col('ceiling', lambda c, f=folder, k=k: c[f][k]['images_per_s']))} | "
                    f"{fmt(col('ceiling', lambda c, f=folder, k=k: c[f][k]['cores_used']), 2)[0]} |")
        add(f"| no-op `tf.numpy_function` pipeline, {ceiling['noop_numpy_function']['images']:,} elements | "
            f"{cell(col('ceiling', lambda c: c['noop_numpy_function']['images_per_s']))} | "
            f"{fmt(col('ceiling', lambda c: c['noop_numpy_function']['cores_used']), 2)[0]} |")
        add("")

    # ---- ratios
    add("### 3. Ratios (per run, side by side) against the 3x targets")
    add("")
    add("| ours (folder, epoch) | against | ratio | min – max | target ≥ 3x |")
    add("|---|---|---:|---|---|")
    ratio_rows = [
        ("sample, epoch 1 (decode)", "ours_sample", 0, "keras_sample"),
        (f"sample, epoch {rows[1][4]}", "ours_sample", 1, "keras_sample"),
        (f"{big} memory{' (default)' if auto_big else ''}, epoch 1 (decode)", "ours_big_memory", 0, "keras_big"),
        (f"{big} memory{' (default)' if auto_big else ''}, epoch 2 (cache hit)", "ours_big_memory", 1, "keras_big"),
        (f"{big} none{'' if auto_big else ' (default)'}, epoch 1 (decode)", "ours_big_none", 0, "keras_big"),
        (f"{big} none{'' if auto_big else ' (default)'}, epoch 2 (decode again)", "ours_big_none", 1, "keras_big"),
    ]
    summary = []
    for ref_name in ("EfficientNet-Lite0 training", "`image_dataset_from_directory`, same folder"):
        for label, key, e, keras_key in ratio_rows:
            ratios = []
            for r in runs:
                ours = r[key]["epochs"][e]["images_per_s"]
                ref = (r["train"]["train"]["images_per_s"] if ref_name.startswith("Eff")
                       else r[keras_key]["epochs"][0]["images_per_s"])
                ratios.append(ours / ref)
            med, lo, hi = _median_range(ratios)
            add(f"| {label} | {ref_name} | {med:,.2f}x | {lo:,.2f} – {hi:,.2f}x | {verdict(med)} |")
            summary.append((label, ref_name, med))
    add("")
    infer_ratio = [r["ours_big_none"]["epochs"][0]["images_per_s"] / r["train"]["infer"]["images_per_s"] for r in runs]
    add(f"Not a target, for context: ours ({big}, `cache=\"none\"`, epoch 1) / frozen-backbone inference "
        f"(a feature-extraction pass) = {statistics.median(infer_ratio):.2f}x "
        f"(min – max {min(infer_ratio):.2f} – {max(infer_ratio):.2f}x).")
    add("")

    # ---- listing and doctor
    add("### 4. Listing and data doctor")
    add("")
    add("| measurement | seconds | min – max | files/s | CPU cores busy | peak RSS MiB |")
    add("|---|---:|---|---:|---:|---:|")
    scan_s = col("scan", lambda s: s["seconds"])
    nfiles = runs[0]["scan"]["files"]
    add(f"| `scan_folder(check_files_content=False)`, {nfiles:,} files | {cell(scan_s, 2)} | "
        f"{nfiles / statistics.median(scan_s):,.0f} | – | {fmt(col('scan', lambda s: s['peak_rss_mib']), 0)[0]} |")
    for phase, text in (("cold", "first scan with content checks, cold cache (fresh `METATUNE_CACHE_DIR`)"),
                        ("warm", "second scan, warm cache (stats only)")):
        add(f"| data doctor (`scan_folder`, checks on) on {big}: {text} | "
            f"{cell(col('doctor', lambda d, p=phase: d[p]['seconds']), 2)} | "
            f"{fmt(col('doctor', lambda d, p=phase: d[p]['files_per_s']), 0)[0]} | "
            f"{fmt(col('doctor', lambda d, p=phase: d[p]['cores_used']), 2)[0]} | "
            f"{fmt(col('doctor', lambda d: d['peak_rss_mib']), 0)[0]} |")
    speedup = [d["doctor"]["cold"]["seconds"] / d["doctor"]["warm"]["seconds"] for d in runs]
    add("")
    add(f"Warm scan is {statistics.median(speedup):.1f}x faster than cold (min – max {min(speedup):.1f} – "
        f"{max(speedup):.1f}x); the cache file is {runs[0]['doctor']['cache_bytes'] / 1e6:.1f} MB for "
        f"{runs[0]['doctor']['cold']['files']:,} files.")
    add("")

    # ---- shuffle: first-batch latency and memory, and the status of the known pipeline problems
    add("### 5. Shuffle cost (first batch, memory) and the known pipeline problems, as this run measures them")
    add("")
    add(f"Every `image_dataset` above is built with `shuffle=True`. \"Wait\" is the time to the first batch as a "
        f"share of the epoch's wall time; an epoch counts as stalled when it waits more than "
        f"{STALL_SHARE:.0%} of the epoch and more than {STALL_SECONDS:g} s before its first batch "
        f"(the thresholds are this script's, not the library's).")
    add("")
    add("| folder | pipeline | epoch | first batch after (s) | min – max | wait, share of the epoch | images/s | "
        "peak RSS MiB | min – max |")
    add("|---|---|---|---:|---|---:|---:|---:|---|")
    for folder, label, key, e, epoch in rows:
        first, first_range = fmt(col(key, lambda x: x["epochs"][e]["first_batch_s"]), 2)
        rss, rss_range = fmt(col(key, lambda x: x["peak_rss_mib"]), 0)
        add(f"| {folder} | {label} | {epoch} | {first} | {first_range} | "
            f"{median_of(key, lambda x: x['epochs'][e]['first_batch_s'] / x['epochs'][e]['seconds']):.1%} | "
            f"{fmt(col(key, lambda x: x['epochs'][e]['images_per_s']), 0)[0]} | {rss} | {rss_range} |")
    add("")

    def first_batch(key, e):
        return median_of(key, lambda x: x["epochs"][e]["first_batch_s"])

    def wait_share(key, e):
        return median_of(key, lambda x: x["epochs"][e]["first_batch_s"] / x["epochs"][e]["seconds"])

    def stalled(key, e):
        return wait_share(key, e) > STALL_SHARE and first_batch(key, e) > STALL_SECONDS

    def waited_images(key, e):  # how many images the epoch's own rate would have delivered during the wait
        return median_of(key, lambda x: x["epochs"][e]["first_batch_s"] * x["epochs"][e]["images_per_s"])

    n_big = big_none["files"]
    buffer = big_none.get("cached_shuffle_buffer")
    add("The problems checked: shuffling decoded images through a buffer as large as the dataset makes every "
        "epoch wait for the whole folder to be decoded before its first batch, and holds every decoded image in "
        "memory (so that turning the cache off saves no memory); decoding through Pillow in `tf.numpy_function` "
        "costs more CPU per image than `image_dataset_from_directory`'s decoding. Status in this run:")
    add("")
    # 1. time to the first batch, for every configuration of ours
    stall_configs = [  # (result key, where, files, cached, keras key)
        ("ours_sample", f"`cache=\"auto\"`{' (cached)' if sample['cached'] else ''}, sample", sample["files"],
         sample["cached"], "keras_sample"),
        ("ours_big_memory", f"`cache=\"memory\"`, {big}", n_big, True, "keras_big"),
        ("ours_big_none", f"`cache=\"none\"`, {big}", n_big, False, "keras_big"),
    ]
    for key, where, files, cached, keras_key in stall_configs:
        epoch_names = ("epoch 1 (decode into the cache)", "epoch 2 (cache hit)") if cached else (
            "epoch 1 (decode)", "epoch 2 (decode again)")
        reference = f"`image_dataset_from_directory` on the same folder: {first_batch(keras_key, 0):.2f} s"
        stalls = [e for e in (0, 1) if stalled(key, e)]
        if not stalls:
            text = (f"- **Stall before the first batch, {where}: not seen.** First batch after "
                    f"{first_batch(key, 0):.2f} s (epoch 1) and {first_batch(key, 1):.2f} s (epoch 2), "
                    f"{wait_share(key, 0):.1%} and {wait_share(key, 1):.1%} of the epoch; {reference}.")
            for e in (0, 1):
                if wait_share(key, e) > 0.5:  # most of a short epoch: under the seconds threshold, still say so
                    images = waited_images(key, e)
                    text += (f" Epoch {e + 1} does wait for {wait_share(key, e):.0%} of itself, about {images:,.0f} "
                             f"images' worth of decoding ({images / files:.0%} of the folder), but that is only "
                             f"{first_batch(key, e):.2f} s.")
            add(text)
            continue
        for e in stalls:
            images = waited_images(key, e)
            text = (f"- **Stall before the first batch, {where}, {epoch_names[e]}: present.** The first batch "
                    f"comes after {first_batch(key, e):.2f} s ({wait_share(key, e):.0%} of the epoch), about "
                    f"{images:,.0f} images' worth of decoding ({images / files:.0%} of the folder); {reference}")
            if cached and buffer:
                filled = min(files, buffer)
                if 0.5 <= images / filled <= 1.5:
                    text += (f". That is about the bounded shuffle buffer after the cache "
                             f"(`CACHED_SHUFFLE_BUFFER` = {buffer:,}, so {filled:,} images here"
                             + (": the whole folder, which is smaller than the buffer" if filled == files else "")
                             + "), which tf.data fills before it yields anything, in the first epoch too; it "
                               "waits for less than the whole folder only when the folder is larger than the "
                               "buffer")
            add(text + ".")
        for e in (0, 1):
            if e not in stalls:
                add(f"  {epoch_names[e][0].upper() + epoch_names[e][1:]}: first batch after "
                    f"{first_batch(key, e):.2f} s ({wait_share(key, e):.1%} of the epoch), not a stall.")
    # 3. memory
    decoded_mib = n_big * IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3 / 2**20
    none_rss, keras_rss = median_of("ours_big_none", lambda x: x["peak_rss_mib"]), median_of(
        "keras_big", lambda x: x["peak_rss_mib"])
    memory_rss = median_of("ours_big_memory", lambda x: x["peak_rss_mib"])
    tf_rss = median_of("ours_big_none", lambda x: x["rss_after_import_mib"])
    excess = none_rss - keras_rss
    if decoded_mib < MEMORY_SIGNAL_MIB:
        add(f"- **Memory of the uncached shuffle: cannot tell at this size.** The {big} folder decodes to only "
            f"{decoded_mib:,.0f} MiB, too little against the worker's {tf_rss:,.0f} MiB after importing TensorFlow "
            f"for peak RSS to show "
            f"whether the decoded images are held; a full run tells. Measured: `cache=\"none\"` {none_rss:,.0f} MiB, "
            f"`image_dataset_from_directory` {keras_rss:,.0f} MiB.")
    elif excess < 0.25 * decoded_mib:
        add(f"- **Memory of the uncached shuffle: bounded.** `cache=\"none\"` peaks at {none_rss:,.0f} MiB, "
            f"{excess:+,.0f} MiB against `image_dataset_from_directory` ({keras_rss:,.0f} MiB), while the "
            f"folder's decoded images would take {decoded_mib:,.0f} MiB.")
    else:
        add(f"- **Memory of the uncached shuffle: not bounded.** `cache=\"none\"` peaks at {none_rss:,.0f} MiB, "
            f"{excess:,.0f} MiB more than `image_dataset_from_directory` ({keras_rss:,.0f} MiB): "
            f"{excess / decoded_mib:.0%} of the {decoded_mib:,.0f} MiB the folder's decoded images take.")
    add(f"- **Memory with the cache.** `cache=\"memory\"` peaks at {memory_rss:,.0f} MiB: {memory_rss - tf_rss:,.0f} "
        f"MiB above the worker's footprint after importing TensorFlow ({tf_rss:,.0f} MiB), for "
        f"{decoded_mib:,.0f} MiB of decoded images. Turning the cache off "
        + (f"saves {memory_rss - none_rss:,.0f} MiB ({none_rss:,.0f} MiB)." if none_rss < memory_rss else
           f"does not save memory: it peaks at {none_rss:,.0f} MiB, {none_rss - memory_rss:,.0f} MiB more."))
    # 4. the "auto" budget
    default_rss = median_of(default_key, lambda x: x["peak_rss_mib"])
    auto_text = (f"- **`cache=\"auto\"` (the default) at {big}: "
                 + ("caches" if auto_big else "does not cache") + f".** The decoded folder ({decoded_mib / 1024:.2f} "
                 f"GiB) is compared with ")
    auto_text += (f"{budget / 2**30:.2f} GiB (`default_cache_budget_bytes()`, {budget / (m['ram_gib'] * 2**30):.0%} "
                  f"of RAM here)" if budget else "the library's budget (not recorded in this JSON)")
    auto_text += (f". The default configuration peaks at {default_rss:,.0f} MiB, "
                  f"{default_rss / (m['ram_gib'] * 1024):.0%} of this machine's RAM, and its decoding epoch runs "
                  f"at {median_of(default_key, lambda x: x['epochs'][0]['images_per_s']):,.0f} images/s"
                  + (", its later epochs (cache hits) at " if auto_big else ", its later epochs (decoded again) at ")
                  + f"{median_of(default_key, lambda x: x['epochs'][1]['images_per_s']):,.0f} images/s.")
    add(auto_text)
    # 5. decoding cost, which the shuffle does not change
    cpu_ours = median_of("ours_big_none", lambda x: x["epochs"][0]["cores_used"] / x["epochs"][0]["images_per_s"])
    cpu_keras = median_of("keras_big", lambda x: x["epochs"][0]["cores_used"] / x["epochs"][0]["images_per_s"])
    rate_ratio = median_of("ours_big_none", lambda x: x["epochs"][0]["images_per_s"]) / median_of(
        "keras_big", lambda x: x["epochs"][0]["images_per_s"])
    add(f"- **Decoding cost (TensorFlow's decoders for plain files and Pillow's resize per batch; Pillow in "
        f"`tf.numpy_function` for the other files), which the shuffle order does not affect.** On the "
        f"{big} folder, a decoding epoch of ours costs {cpu_ours * 1e3:.2f} ms of CPU per image, "
        f"`image_dataset_from_directory` {cpu_keras * 1e3:.2f} ms ({cpu_ours / cpu_keras:.1f}x); ours decodes at "
        f"{rate_ratio:.2f}x its rate (medians), against the 3x target (section 3). "
        + ("The diagnostics in section 2 break the cost down." if ceiling else
           "The diagnostics that break this down run only in a full run."))
    add("")

    # ---- background load
    loads = {name: [r[name].get("other_cores", 0.0) for r in runs] for name in runs[0]}
    worst = max(loads.items(), key=lambda item: max(item[1]))
    add("### Background load")
    add("")
    add(f"The machine is shared. CPU used by other processes while a measurement's worker ran (from "
        f"/proc/stat, minus the benchmark's own CPU): median over all measurements "
        f"{statistics.median(v for vals in loads.values() for v in vals):.2f} cores, worst "
        f"{max(worst[1]):.2f} cores (`{worst[0]}`). Before each measurement the benchmark waits up to "
        f"{5 if meta['quick'] else 20} s (at most {30 if meta['quick'] else 60} s in all) for other processes "
        f"to go below 0.25 cores; it waited "
        f"{sum(r[name].get('waited_for_quiet_s', 0.0) for r in runs for name in r):.0f} s in total.")
    add("")

    # ---- verdict
    missed = [(label, ref, med) for label, ref, med in summary if med < TARGET_RATIO]
    add("### Targets")
    add("")
    if missed:
        add(f"{len(summary) - len(missed)} of {len(summary)} ratios meet the 3x target. Missed:")
        add("")
        for label, ref, med in missed:
            add(f"- ours {label} vs {ref}: {med:.2f}x, {med / TARGET_RATIO:.0%} of the target "
                f"(short by {TARGET_RATIO - med:.2f}x)")
    else:
        add(f"All {len(summary)} ratios meet the 3x target.")
    add("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller folders (1k JPEGs, 10k files), fewer steps, no diagnostics")
    parser.add_argument("--runs", type=int, help="repetitions of every measurement (default 3; 1 with --quick)")
    parser.add_argument("--output", help="write the markdown section to this file")
    parser.add_argument("--json", help="also write the raw results as JSON to this file")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="temporary data (reused if present)")
    parser.add_argument("--no-pin-page-cache", dest="pin_page_cache", action="store_false",
                        help="do not keep the data files mapped (resident in the page cache) while measuring")
    parser.add_argument("--from-json", help="re-render the markdown from a file written by --json (no measuring)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, json.loads(args.params))
        return 0
    if args.runs is None:
        args.runs = 1 if args.quick else 3  # --quick checks the harness end to end within `make bench-quick`'s 10 min
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        meta, data = saved["meta"], {"runs": saved["runs"]}
    else:
        meta, data = run_benchmark(args)
    markdown = render_markdown(meta, data)
    print()
    print(markdown)
    if args.output:
        Path(args.output).write_text(markdown + "\n", encoding="utf-8")
        log(f"Markdown written to {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **data}, indent=1), encoding="utf-8")
        log(f"Raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
