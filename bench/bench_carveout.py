"""What the test carve-out costs a small folder (issue 23, item 1): accuracy on files no run saw.

A folder without test/ has a share of every class held out for testing (`--test-fraction`).
With few files per class that share is taken from training: at 8 per class, 20% for testing
and 20% for validation leave 4 to train on (6 after the refit on train + validation). This
measures what that costs, on Fashion-MNIST (Debian `dataset-fashion-mnist`):

- training folders of 5 / 10 / 20 images per class, flat (no test/), 3 seeds (different draws);
- `train.py FOLDER --strategy linear` with `--test-fraction 0.2` (the default) and
  `--test-fraction 0` (no test split);
- every run scored on the same 100 external test images per class (Fashion-MNIST's t10k set),
  which no run ever sees.

    .venv/bin/python bench/bench_carveout.py              # 5/10/20 per class x 3 seeds (about 10 min on 2 cores)
    .venv/bin/python bench/bench_carveout.py --quick      # 5 per class, 1 seed, 96 px
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import common
from bench_transfer import make_data
from common import markdown_table

WORK = Path("/tmp/metatune-bench/carveout")
FULL = {"image_size": 224, "sizes": [5, 10, 20], "seeds": [1, 2, 3], "test_per_class": 100}
QUICK = {"image_size": 96, "sizes": [5], "seeds": [1], "test_per_class": 30}
SETTINGS = {"0.2": ["--test-fraction", "0.2"], "0": ["--test-fraction", "0"]}  # 0.2: the product default


def flat_training_folder(size: int, seed: int, test_per_class: int) -> tuple[Path, Path]:
    """(a flat folder of the draw's training images only, the folder whose test/ scores every run)."""
    data = make_data(size, test_per_class, seed)
    flat = WORK / f"flat-{size}-seed{seed}"
    if not flat.is_dir():
        staging = WORK / f".staging-{size}-seed{seed}-{time.time_ns()}"
        staging.mkdir(parents=True)
        for class_dir in sorted((data / "train").iterdir()):
            (staging / class_dir.name).symlink_to(class_dir.resolve(), target_is_directory=True)
        staging.rename(flat)
    return flat, data


def worker_run(params: dict) -> dict:
    """train.py on the flat folder, evaluate.py on the external test/ split; what was held out."""
    import evaluate
    import train
    from app import run_dir as rd

    run = Path(params["run"])
    args = [params["flat"], "--output", str(run), "--image-size", str(params["image_size"]),
            "--strategy", "linear", "--seed", str(params["seed"])] + params["flags"]
    assert train.main(args) == 0
    assert evaluate.main([str(run), params["data"], "--name", "external"]) == 0
    metrics = rd.read_json(run / "eval" / "external" / "metrics.json")
    manifest = rd.read_json(run / "manifest.json")
    splits = {name: sum(1 for f in manifest["files"] if f["split"] == name) for name in ("train", "val", "test")}
    return {"accuracy": metrics["accuracy"], "num_test": metrics["num_examples"], "splits": splits}


WORKERS = {"run": worker_run}


def measure(p: dict, log) -> dict:
    runs = list(p.get("previous_runs", []))
    root = WORK / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
    for size in p["sizes"]:
        for seed in p["seeds"]:
            flat, data = flat_training_folder(size, seed, p["test_per_class"])
            for setting in p["settings"]:
                flags = SETTINGS[setting]
                result = common.run_worker(__file__, "run", {
                    "flat": str(flat), "data": str(data), "run": str(root / f"{size}-{seed}-{setting}"),
                    "image_size": p["image_size"], "seed": seed, "flags": flags},
                    env={"METATUNE_CACHE_DIR": str(WORK / "cache")})
                runs.append({"size": size, "seed": seed, "setting": setting, **result})
                log(f"{size}/class seed {seed} test_fraction {setting}: {result['accuracy']:.3f} "
                    f"(train/val/test {result['splits']})")
    results = {"params": {k: v for k, v in p.items() if k not in ("previous_runs", "previous_command")}, "runs": runs}
    if "previous_command" in p:  # --add-to: the stored runs came from the earlier command
        own = "python bench/bench_carveout.py" + (" --quick" if p["quick"] else "")
        results["command"] = f"{p['previous_command']} + {own} --settings {','.join(p['settings'])}"
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _split(run: dict) -> str:
    return f"{run['splits']['train']} / {run['splits']['val']} / {run['splits']['test']}"


def render(results: dict) -> str:
    p = results["params"]
    by = {(r["size"], r["seed"], r["setting"]): r for r in results["runs"]}
    rows, gains = [], {}
    for size in p["sizes"]:
        for seed in p["seeds"]:
            cut, kept = by.get((size, seed, "0.2")), by.get((size, seed, "0"))
            if not (cut and kept):
                continue
            gain = 100 * (kept["accuracy"] - cut["accuracy"])
            gains.setdefault(size, []).append(gain)
            rows.append([size, seed, _split(cut), f"{cut['accuracy']:.3f}", _split(kept), f"{kept['accuracy']:.3f}",
                         f"{gain:+.1f}"])
    table = markdown_table(["per class", "seed", "files train / val / test, `--test-fraction 0.2`", "accuracy, 0.2",
                            "files train / val / test, `0`", "accuracy, 0", "gain of no carve-out (points)"],
                           rows, align="rrlrlrr")
    return "\n".join([
        "## Test carve-out on small folders", "",
        f"Command: `{results['command']}`; {results['machine']}; wall time {results['wall_min']:.1f} min. "
        f"Fashion-MNIST, flat training folders (no test/) of 5 / 10 / 20 images per class, seeds "
        f"{', '.join(map(str, p['seeds']))} (different draws), EfficientNet-Lite0 at {p['image_size']} px, "
        f"`--strategy linear` (refit on train + validation as by default). Every run is scored on the same "
        f"{p['test_per_class']} external test images per class, which no run sees.", "",
        table, "",
        "Median gain of training without a test carve-out, per size: " + "; ".join(
            f"{size}/class {_median(values):+.1f} points ({min(values):+.1f} to {max(values):+.1f})"
            for size, values in gains.items()) + ".", ""])


def _arguments(parser) -> None:
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"which of {', '.join(SETTINGS)} to measure (comma-separated)")
    parser.add_argument("--add-to", help="a --json file of an earlier run: keep its runs, add these")


def _params(args) -> dict:
    params = dict(QUICK if args.quick else FULL, settings=args.settings.split(","), quick=args.quick)
    unknown = sorted(set(params["settings"]) - set(SETTINGS))
    if unknown:
        raise common.UsageError(f"--settings: unknown setting(s) {unknown}; choose from {', '.join(SETTINGS)}")
    if args.add_to:
        previous = common.read_results(args.add_to)
        params["previous_runs"] = [r for r in previous["runs"] if r["setting"] not in params["settings"]]
        params["previous_command"] = previous["command"]
    return params


SECTION = common.Section(script="bench_carveout.py", doc=__doc__, params=_params, measure=measure, render=render,
                         workers=WORKERS, add_arguments=_arguments)


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
