"""The markdown section of bench_pipeline.py, from its results (measured now or read back with --from-json).

Every verdict here is computed from the results' own numbers: the 3x ratio targets, whether an epoch
stalls before its first batch, whether `cache="none"` holds the decoded images, what `cache="auto"`
picked and what decoding costs.
"""

from __future__ import annotations

import statistics

from common import markdown_table

TARGET_RATIO = 3.0
DECODING_TARGET = 1.0  # issue 19: decoding epochs against image_dataset_from_directory
# An epoch "stalls" when its first batch takes more than this share of the epoch and more than this many
# seconds (report wording only); decoded folders smaller than MEMORY_SIGNAL_MIB are too small for peak RSS
# to show whether a pipeline holds them.
STALL_SHARE, STALL_SECONDS = 0.10, 0.5
MEMORY_SIGNAL_MIB = 512
# The setup of results written before the setup was recorded in them (meta.setup): it never changed.
LEGACY_SETUP = {"image_size": [224, 224], "batch_size": 32, "num_classes": 10}


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], digits: int = 1) -> tuple[str, str]:
    """(median, "min – max"), the two cells the tables print."""
    med, lo, hi = _median_range(values)
    return f"{med:,.{digits}f}", f"{lo:,.{digits}f} – {hi:,.{digits}f}"


def verdict(ratio: float) -> str:
    if ratio >= TARGET_RATIO:
        return f"**pass** (≥ {TARGET_RATIO:g}x)"
    return f"**miss**: {ratio / TARGET_RATIO:.0%} of the {TARGET_RATIO:g}x target (short by {TARGET_RATIO - ratio:.2f}x)"


def decoding_verdict(ratio: float) -> str:
    """Issue 19: a decoding epoch at least as fast as `image_dataset_from_directory`'s."""
    if ratio >= DECODING_TARGET:
        return f"**pass** (≥ {DECODING_TARGET:g}x)"
    return f"**miss** (short by {DECODING_TARGET - ratio:.2f}x)"


def render(results: dict) -> str:
    """The section, from what bench_pipeline's measure() returned ({"meta": ..., "runs": [...]})."""
    meta, runs = results["meta"], results["runs"]
    setup = meta.get("setup", LEGACY_SETUP)
    image_size, num_classes = setup["image_size"], setup["num_classes"]
    size_text = f"{image_size[0]}x{image_size[1]}"
    n = len(runs)
    big = meta["big"]
    m = meta["machine"]
    lines: list[str] = []
    add = lines.append

    def col(key, fn):
        return [fn(r[key]) for r in runs]

    def median_of(key, fn):
        return statistics.median(fn(r[key]) for r in runs)

    def cell(values, digits=0):  # two cells: median, min – max
        return list(fmt(values, digits))

    def median_cell(values, digits=0):
        return fmt(values, digits)[0]

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
        f"summarised. Image size {size_text}, batch size {setup['batch_size']}. Total wall time {meta['total_s'] / 60:.1f} min, "
        f"data generation included ({meta['jpeg_gen_s'] + meta['tiny_gen_s']:.0f} s).")
    add("")
    info = meta["jpeg_info"]
    pinned = meta.get("pinned", {})
    made = " in an earlier run and reused" if info["reused"] else f" in {meta['jpeg_gen_s']:.0f} s"
    add(f"Data: the bundled sample `data/samples/fashion_mnist` (500 PNGs, 28x28 grayscale, in train/ and "
        f"test/); a synthetic folder of {info['files']:,} JPEGs in {num_classes} classes (smooth random colour "
        f"fields + noise, about 160x120 to 320x240, quality 90, {info['bytes'] / info['files'] / 1e3:.1f} kB on "
        f"average; generated with Pillow in parallel"
        f"{made}); "
        f"{meta['tiny_info']['files']:,} identical 1x1 PNGs in {num_classes} classes for listing speed. "
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
    add(markdown_table(
        ["measurement", "images/s", "min – max", f"s per batch of {setup['batch_size']}", "peak RSS MiB"],
        [[f"training step: whole backbone + {num_classes}-way Dense trainable ({t0['trainable_params']:,} params), "
          f"`train_on_batch` on an in-memory uint8 batch, Adam, compiled with Keras defaults "
          f"(resolved jit_compile={t0['jit_compile']}; model built via {t0.get('builder', 'registry')}); "
          f"{t0['train']['warm_steps']} warm steps excluded, {t0['train']['steps']} timed",
          *cell(col("train", lambda t: t["train"]["images_per_s"]), 1),
          median_cell(col("train", lambda t: t["train"]["step_s"]), 2),
          median_cell(col("train", lambda t: t["peak_rss_mib"]))],
         ["inference, frozen backbone (`predict_on_batch`; what a feature-extraction pass over the images consumes)",
          *cell(col("train", lambda t: t["infer"]["images_per_s"]), 1),
          median_cell(col("train", lambda t: t["infer"]["step_s"]), 2), "(same process)"]],
        align="lrlrr"))
    add("")

    # ---- pipelines
    sample, big_none = runs[0]["ours_sample"], runs[0]["ours_big_none"]
    auto_big = big_none["auto_would_cache"]  # True: "auto" (the default) caches the big folder
    default_key = "ours_big_memory" if auto_big else "ours_big_none"
    sample_mb = sample["files"] * image_size[0] * image_size[1] * 3 / 1e6
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
    disk = "ours_big_disk" in runs[0]  # measured since the on-disk store (results before it lack the rows)
    if disk:
        disk_label = "ours, `cache=\"disk\"` (a fresh store per run, in the page cache once written)"
        rows[7:7] = [(big, disk_label, "ours_big_disk", 0, "1 (decode into the store, read it)"),
                     (big, disk_label, "ours_big_disk", 1, "2 (read the store)"),
                     (big, disk_label, "ours_big_disk", 2, "3 (read the store)")]
    add("### 2. Pipeline throughput, full epoch")
    add("")
    add(markdown_table(
        ["folder", "pipeline", "epoch", "images/s", "min – max", "first batch after (s)", "CPU cores busy",
         "peak RSS MiB"],
        [[folder, label, epoch, *cell(col(key, lambda x: x["epochs"][e]["images_per_s"])),
          median_cell(col(key, lambda x: x["epochs"][e]["first_batch_s"]), 2),
          median_cell(col(key, lambda x: x["epochs"][e]["cores_used"]), 2), median_cell(col(key, lambda x: x["peak_rss_mib"]))]
         for folder, label, key, e, epoch in rows], align="lllrlrrr"))
    add("")
    images_gb = big_none["files"] * image_size[0] * image_size[1] * 3 / 1e9
    budget = big_none.get("cache_budget_bytes")
    if budget:
        budget_text = (f"the `\"auto\"` budget of {budget / 2**30:.2f} GiB = {budget / 1e9:.2f} GB "
                       f"(`data.pipeline.default_cache_budget_bytes()` in the worker: "
                       f"{budget / (m['ram_gib'] * 2**30):.0%} of this machine's {m['ram_gib']:.1f} GiB RAM)")
    else:
        budget_text = "the `\"auto\"` budget, which this JSON does not record (it predates that field)"
    add(f"`should_cache(..., \"auto\")` is {sample['auto_would_cache']} for the sample and "
        f"{auto_big} for the {big} folder ({big_none['files']:,} x {size_text}x3 = "
        f"{images_gb:.2f} GB against {budget_text}). Peak RSS is the whole worker process; "
        f"TensorFlow alone is about {fmt(col('ours_sample', lambda x: x['rss_after_import_mib']), 0)[0]} MiB "
        f"after import. \"First batch after\" is the time from the start of the epoch to its first batch; "
        f"\"CPU cores busy\" is process CPU time / wall time over the epoch ({m['nproc']} is the machine's "
        f"maximum).")
    add("")
    ceiling = runs[0].get("ceiling", {})
    if ceiling:
        add("Diagnostics (same runs): `data.images.load_image` called directly (Pillow decode, then the resize of data/resize.py through a tf.function), no tf.data, and a no-op "
            f"`tf.numpy_function` pipeline (returns a preallocated {size_text}x3 array; AUTOTUNE map, batch "
            f"{setup['batch_size']}, prefetch):")
        add("")
        diagnostics = []
        for folder, entry in ceiling.items():
            if not (isinstance(entry, dict) and "files" in entry):
                continue
            for k in (k for k in entry if k.startswith("threads_")):
                threads = k.split("_")[1]
                diagnostics.append(
                    [f"`load_image` on {entry['files']:,} files of {folder}, {threads} thread{'s' if threads != '1' else ''}",
                     *cell(col("ceiling", lambda c, f=folder, k=k: c[f][k]["images_per_s"])),
                     median_cell(col("ceiling", lambda c, f=folder, k=k: c[f][k]["cores_used"]), 2)])
        diagnostics.append([f"no-op `tf.numpy_function` pipeline, {ceiling['noop_numpy_function']['images']:,} elements",
                            *cell(col("ceiling", lambda c: c["noop_numpy_function"]["images_per_s"])),
                            median_cell(col("ceiling", lambda c: c["noop_numpy_function"]["cores_used"]), 2)])
        add(markdown_table(["measurement", "images/s", "min – max", "CPU cores busy"], diagnostics, align="lrlr"))
        add("")

    # ---- ratios
    add("### 3. Ratios (per run, side by side) against the 3x targets")
    add("")
    ratio_rows = [
        ("sample, epoch 1 (decode)", "ours_sample", 0, "keras_sample"),
        (f"sample, epoch {rows[1][4]}", "ours_sample", 1, "keras_sample"),
        (f"{big} memory{' (default)' if auto_big else ''}, epoch 1 (decode)", "ours_big_memory", 0, "keras_big"),
        (f"{big} memory{' (default)' if auto_big else ''}, epoch 2 (cache hit)", "ours_big_memory", 1, "keras_big"),
        (f"{big} none{'' if auto_big else ' (default)'}, epoch 1 (decode)", "ours_big_none", 0, "keras_big"),
        (f"{big} none{'' if auto_big else ' (default)'}, epoch 2 (decode again)", "ours_big_none", 1, "keras_big"),
    ]
    if disk:
        ratio_rows += [(f"{big} disk, epoch 1 (decode into the store)", "ours_big_disk", 0, "keras_big"),
                       (f"{big} disk, epoch 2 (read the store)", "ours_big_disk", 1, "keras_big")]
    summary, table = [], []
    for ref_name in ("EfficientNet-Lite0 training", "`image_dataset_from_directory`, same folder"):
        for label, key, e, keras_key in ratio_rows:
            ratios = []
            for r in runs:
                ours = r[key]["epochs"][e]["images_per_s"]
                ref = (r["train"]["train"]["images_per_s"] if ref_name.startswith("Eff")
                       else r[keras_key]["epochs"][0]["images_per_s"])
                ratios.append(ours / ref)
            med, lo, hi = _median_range(ratios)
            decoding = "decode" in label and not ref_name.startswith("Eff")
            table.append([label, ref_name, f"{med:,.2f}x", f"{lo:,.2f} – {hi:,.2f}x", verdict(med),
                          decoding_verdict(med) if decoding else "–"])
            summary.append((label, ref_name, med))
    add(markdown_table(["ours (folder, epoch)", "against", "ratio", "min – max", f"target ≥ {TARGET_RATIO:g}x",
                        f"decoding epochs ≥ {DECODING_TARGET:g}x (issue 19)"], table, align="llrlll"))
    add("")
    infer_ratio = [r["ours_big_none"]["epochs"][0]["images_per_s"] / r["train"]["infer"]["images_per_s"] for r in runs]
    add(f"Not a target, for context: ours ({big}, `cache=\"none\"`, epoch 1) / frozen-backbone inference "
        f"(a feature-extraction pass) = {statistics.median(infer_ratio):.2f}x "
        f"(min – max {min(infer_ratio):.2f} – {max(infer_ratio):.2f}x).")
    add("")

    # ---- listing and doctor
    add("### 4. Listing and data doctor")
    add("")
    scan_s = col("scan", lambda s: s["seconds"])
    nfiles = runs[0]["scan"]["files"]
    listing = [[f"`scan_folder(check_files_content=False)`, {nfiles:,} files", *cell(scan_s, 2),
                f"{nfiles / statistics.median(scan_s):,.0f}", "–", median_cell(col("scan", lambda s: s["peak_rss_mib"]))]]
    for phase, text in (("cold", "first scan with content checks, cold cache (fresh `METATUNE_CACHE_DIR`)"),
                        ("warm", "second scan, warm cache (stats only)")):
        listing.append([f"data doctor (`scan_folder`, checks on) on {big}: {text}",
                        *cell(col("doctor", lambda d, p=phase: d[p]["seconds"]), 2),
                        median_cell(col("doctor", lambda d, p=phase: d[p]["files_per_s"])),
                        median_cell(col("doctor", lambda d, p=phase: d[p]["cores_used"]), 2),
                        median_cell(col("doctor", lambda d: d["peak_rss_mib"]))])
    add(markdown_table(["measurement", "seconds", "min – max", "files/s", "CPU cores busy", "peak RSS MiB"], listing,
                       align="lrlrrr"))
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
    add(markdown_table(
        ["folder", "pipeline", "epoch", "first batch after (s)", "min – max", "wait, share of the epoch", "images/s",
         "peak RSS MiB", "min – max"],
        [[folder, label, epoch, *cell(col(key, lambda x: x["epochs"][e]["first_batch_s"]), 2),
          f"{median_of(key, lambda x: x['epochs'][e]['first_batch_s'] / x['epochs'][e]['seconds']):.1%}",
          median_cell(col(key, lambda x: x["epochs"][e]["images_per_s"])), *cell(col(key, lambda x: x["peak_rss_mib"]))]
         for folder, label, key, e, epoch in rows], align="lllrlrrrl"))
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
    decoded_mib = n_big * image_size[0] * image_size[1] * 3 / 2**20
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
    add(f"- **Decoding cost (TensorFlow's decoders for plain files, Pillow in `tf.numpy_function` for the "
        f"other files, then the same TensorFlow resize, data/resize.py), which the shuffle order does not affect.** On the "
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
