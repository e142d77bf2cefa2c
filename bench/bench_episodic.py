"""How long `evaluate.py --episodes` takes on cached features, and whether its logistic-regression baseline
gives scikit-learn's answers.

On the fonts glyph set (bench/fonts_dataset.py; letters of the meta-val and meta-test alphabets, classes new
to the run), with a `linear` EfficientNet-Lite0 run at 96 px trained on a few meta-train letters:

1. one short evaluation computes and caches every pool file's features (timed, reported apart);
2. `evaluate.py RUN POOL --episodes 600 --ways 20 --shots 1 --queries 5` (and 5-way 1-shot, 15 queries), whole
   processes timed from start to exit with every feature in the cache: TensorFlow's import, loading the run,
   reading the cache, all 600 episodes of every learner (the run's, nearest centroid, logistic regression),
   the report; median of several runs (target: under 2 minutes);
3. the logistic-regression baseline against scikit-learn's `LogisticRegression` (default settings, as the
   baseline used to be computed) on the same episodes and features: mean accuracy of each, their difference
   (target: within 0.1 point) and the time per episode of each.

    .venv/bin/python bench/bench_episodic.py            # full: 3 timed runs per setting, 600 episodes, scikit-learn on 300 (~20 min)
    .venv/bin/python bench/bench_episodic.py --quick    # 1 run, 100 episodes, scikit-learn on 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from common import add_standard_arguments, emit, run_worker, serve_worker  # noqa: E402

WORK = Path("/tmp/metatune-bench/episodic")
IMAGE_SIZE = 96
TRAIN_CLASSES = 10
SETTINGS = [  # (ways, shots, queries): the 20-way setting, and the classic 5-way one
    (20, 1, 5),
    (5, 1, 15),
]
TARGET_SECONDS = 120.0
TARGET_POINTS = 0.1
FULL = {"episodes": 600, "runs": 3, "sklearn_episodes": 300}
QUICK = {"episodes": 100, "runs": 1, "sklearn_episodes": 100}


def _link_classes(folder: Path, images: Path, classes: list[str]) -> Path:
    """A class-per-folder dataset of symlinks to the rendered letters (nothing copied)."""
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for name in classes:
        if not (partial / name).exists():
            (partial / name).symlink_to(images / name, target_is_directory=True)
    os.replace(partial, folder)
    return folder


def prepare() -> tuple[Path, Path, dict]:
    import fonts_dataset

    data = fonts_dataset.build_dataset(verbose=False)
    manifest = fonts_dataset.read_manifest(data)
    classes = {split: [c for a in manifest["splits"][split] for c in manifest["alphabets"][a]["classes"]]
               for split in ("meta_train", "meta_val", "meta_test")}
    images = data / "images28"
    train = _link_classes(WORK / "train", images, classes["meta_train"][:TRAIN_CLASSES])
    pool = _link_classes(WORK / "pool", images, classes["meta_val"] + classes["meta_test"])
    return train, pool, {"train_classes": TRAIN_CLASSES, "pool_classes": len(classes["meta_val"]) +
                         len(classes["meta_test"]), "pool_files": 20 * (len(classes["meta_val"]) +
                                                                        len(classes["meta_test"]))}


def _timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def _evaluate_command(run: Path, pool: Path, episodes: int, setting, name: str) -> list[str]:
    ways, shots, queries = setting
    return [sys.executable, "evaluate.py", str(run), str(pool), "--episodes", str(episodes), "--ways", str(ways),
            "--shots", str(shots), "--queries", str(queries), "--name", name]


def sklearn_worker(params: dict) -> dict:
    """scikit-learn's and metatune's logistic regression on the same episodes and cached features."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from app.episodic_evaluation import _Features, choose_pool
    from app.evaluation import load_run
    from app.fewshot_baselines import logistic_regression_predict
    from data.episodes import EpisodeSampler

    run = load_run(params["run"])
    pool = choose_pool(run, params["pool"])
    features, _ = _Features(run, pool.examples, 32).baseline_features()  # from the cache
    ways, shots, queries = params["setting"]
    sampler = EpisodeSampler(pool.labels, ways, shots, queries, seed=0, class_names=pool.class_names)
    ours, theirs, our_time, their_time = [], [], 0.0, 0.0
    for number in range(params["episodes"]):
        episode = sampler.episode(number)
        support, query = features[episode.support_index], features[episode.query_index]
        started = time.perf_counter()
        predicted = logistic_regression_predict(support, episode.support_labels, query, ways)
        our_time += time.perf_counter() - started
        ours.append(float(np.mean(predicted == episode.query_labels)))
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            reference = LogisticRegression(max_iter=1000).fit(support, episode.support_labels).predict(query)
        their_time += time.perf_counter() - started
        theirs.append(float(np.mean(reference == episode.query_labels)))
    episodes = params["episodes"]
    return {"ours_mean": float(np.mean(ours)), "sklearn_mean": float(np.mean(theirs)),
            "ours_s_per_episode": our_time / episodes, "sklearn_s_per_episode": their_time / episodes,
            "episodes": episodes, "feature_dims": int(features.shape[1])}


WORKERS = {"sklearn": sklearn_worker}


def measure(sizes: dict) -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    train, pool, data = prepare()
    run = WORK / "run"
    results = {"sizes": sizes, "data": data, "image_size": IMAGE_SIZE, "settings": {}}
    if not (run / "model.keras").is_file() or (run / "INCOMPLETE").exists():
        subprocess.run(["rm", "-rf", str(run)], check=True)
        results["train_s"] = _timed([sys.executable, "train.py", str(train), "--output", str(run), "--image-size",
                                     str(IMAGE_SIZE), "--epochs", "10", "--test-fraction", "0"], env)
    results["feature_pass_s"] = _timed(_evaluate_command(run, pool, 2, SETTINGS[0], "warm"), env)
    for setting in SETTINGS:
        key = "{}way{}shot{}q".format(*setting)
        times = [_timed(_evaluate_command(run, pool, sizes["episodes"], setting, f"bench-{key}"), env)
                 for _ in range(sizes["runs"])]
        metrics = json.loads((run / "eval" / f"bench-{key}" / "metrics.json").read_text())
        check = run_worker(__file__, "sklearn", {"run": str(run), "pool": str(pool), "setting": list(setting),
                                                  "episodes": sizes["sklearn_episodes"]})
        results["settings"][key] = {
            "setting": list(setting), "seconds": times, "median_s": statistics.median(times),
            "run_accuracy": metrics["mean_accuracy"],
            "baselines": {k: v["mean_accuracy"] for k, v in metrics["baselines"].items()},
            "sklearn_check": check,
        }
    return results


def render(results: dict) -> str:
    sizes, data = results["sizes"], results["data"]
    lines = [
        "## Episodic evaluation speed\n",
        f"`python bench/bench_episodic.py` — `evaluate.py RUN POOL --episodes {sizes['episodes']}` on cached "
        f"features: a `linear` EfficientNet-Lite0 run at {results['image_size']} px (trained on "
        f"{data['train_classes']} meta-train letters of the fonts glyph set), evaluated on {data['pool_classes']} "
        f"letters new to it ({data['pool_files']} files, meta-val + meta-test alphabets). Whole processes timed "
        f"(TensorFlow import, run loading, every learner on every episode, the report), median of "
        f"{sizes['runs']} run(s). A warm-up evaluation first puts every pool file's features in the cache (it took "
        f"{results['feature_pass_s']:.0f} s here, less when an earlier run already cached some; not counted).\n",
        "| episodes | process time (median) | runs | target | run's learner | nearest centroid | logistic regression |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for key, r in results["settings"].items():
        ways, shots, queries = r["setting"]
        verdict = "pass" if r["median_s"] < TARGET_SECONDS else "**miss**"
        lines.append(f"| {sizes['episodes']} x {ways}-way {shots}-shot, {queries} queries | {r['median_s']:.0f} s | "
                     f"{', '.join(f'{s:.0f}' for s in r['seconds'])} | < {TARGET_SECONDS:.0f} s: {verdict} | "
                     f"{100 * r['run_accuracy']:.2f}% | {100 * r['baselines']['nearest_centroid']:.2f}% | "
                     f"{100 * r['baselines']['logistic_regression']:.2f}% |")
    lines += [
        "",
        "Logistic-regression baseline against scikit-learn's `LogisticRegression()` (default settings: lbfgs, "
        "C = 1, tol 1e-4, max_iter 1000) on the same episodes and features:\n",
        "| episodes | features | metatune | scikit-learn | difference | target | time per episode (metatune / scikit-learn) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for key, r in results["settings"].items():
        c = r["sklearn_check"]
        ways, shots, queries = r["setting"]
        difference = 100 * (c["ours_mean"] - c["sklearn_mean"])
        verdict = "pass" if abs(difference) <= TARGET_POINTS else "**miss**"
        lines.append(f"| {c['episodes']} x {ways}-way {shots}-shot | {c['feature_dims']}-d | "
                     f"{100 * c['ours_mean']:.2f}% | {100 * c['sklearn_mean']:.2f}% | {difference:+.2f} points | "
                     f"within {TARGET_POINTS} point: {verdict} | {1000 * c['ours_s_per_episode']:.0f} ms / "
                     f"{1000 * c['sklearn_s_per_episode']:.0f} ms "
                     f"({c['sklearn_s_per_episode'] / c['ours_s_per_episode']:.0f}x) |")
    lines += [
        "",
        "metatune solves the same problem as scikit-learn (multinomial, C = 1, unpenalised intercept) to its exact "
        "optimum, in the span of the support points with Newton steps (app/fewshot_baselines.py); scikit-learn at "
        "its default tolerance stops short of that optimum, so a few query predictions can differ.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_standard_arguments(parser, WORKERS)
    args = parser.parse_args(argv)
    if serve_worker(args, WORKERS):
        return 0
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = measure(QUICK if args.quick else FULL)
    emit(render(results), results, args.output, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
