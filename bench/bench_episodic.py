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

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import common
from common import markdown_table, run_script, run_worker

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


def _timed(command: list[str]) -> float:
    """The whole process's wall time: TensorFlow's import and the loading are part of what a user waits for."""
    return run_script(command).seconds


def _evaluate_command(run: Path, pool: Path, episodes: int, setting, name: str) -> list[str]:
    ways, shots, queries = setting
    return ["evaluate.py", str(run), str(pool), "--episodes", str(episodes), "--ways", str(ways),
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


def measure(sizes: dict, log) -> dict:
    train, pool, data = prepare()
    run = WORK / "run"
    results = {"sizes": sizes, "data": data, "image_size": IMAGE_SIZE, "settings": {}}
    if not (run / "model.keras").is_file() or (run / "INCOMPLETE").exists():
        shutil.rmtree(run, ignore_errors=True)
        log("training the run")
        results["train_s"] = _timed(["train.py", str(train), "--output", str(run), "--image-size",
                                     str(IMAGE_SIZE), "--epochs", "10", "--test-fraction", "0"])
    log("caching the pool's features")
    results["feature_pass_s"] = _timed(_evaluate_command(run, pool, 2, SETTINGS[0], "warm"))
    for setting in SETTINGS:
        key = "{}way{}shot{}q".format(*setting)
        log(f"timing {key}")
        times = [_timed(_evaluate_command(run, pool, sizes["episodes"], setting, f"bench-{key}"))
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
    speed = []
    for r in results["settings"].values():
        ways, shots, queries = r["setting"]
        verdict = "pass" if r["median_s"] < TARGET_SECONDS else "**miss**"
        speed.append([f"{sizes['episodes']} x {ways}-way {shots}-shot, {queries} queries", f"{r['median_s']:.0f} s",
                      ", ".join(f"{s:.0f}" for s in r["seconds"]), f"< {TARGET_SECONDS:.0f} s: {verdict}",
                      f"{100 * r['run_accuracy']:.2f}%", f"{100 * r['baselines']['nearest_centroid']:.2f}%",
                      f"{100 * r['baselines']['logistic_regression']:.2f}%"])
    check = []
    for r in results["settings"].values():
        c = r["sklearn_check"]
        ways, shots, queries = r["setting"]
        difference = 100 * (c["ours_mean"] - c["sklearn_mean"])
        verdict = "pass" if abs(difference) <= TARGET_POINTS else "**miss**"
        check.append([f"{c['episodes']} x {ways}-way {shots}-shot", f"{c['feature_dims']}-d",
                      f"{100 * c['ours_mean']:.2f}%", f"{100 * c['sklearn_mean']:.2f}%", f"{difference:+.2f} points",
                      f"within {TARGET_POINTS} point: {verdict}",
                      f"{1000 * c['ours_s_per_episode']:.0f} ms / {1000 * c['sklearn_s_per_episode']:.0f} ms "
                      f"({c['sklearn_s_per_episode'] / c['ours_s_per_episode']:.0f}x)"])
    return "\n".join([
        "## Episodic evaluation speed\n",
        f"`{results.get('command', 'python bench/bench_episodic.py')}`"
        + (f" on {results['machine']}" if "machine" in results else "") +
        f" — `evaluate.py RUN POOL --episodes {sizes['episodes']}` on cached "
        f"features: a `linear` EfficientNet-Lite0 run at {results['image_size']} px (trained on "
        f"{data['train_classes']} meta-train letters of the fonts glyph set), evaluated on {data['pool_classes']} "
        f"letters new to it ({data['pool_files']} files, meta-val + meta-test alphabets). Whole processes timed "
        f"(TensorFlow import, run loading, every learner on every episode, the report), median of "
        f"{sizes['runs']} run(s). A warm-up evaluation first puts every pool file's features in the cache (it took "
        f"{results['feature_pass_s']:.0f} s here, less when an earlier run already cached some; not counted).\n",
        markdown_table(["episodes", "process time (median)", "runs", "target", "run's learner", "nearest centroid",
                        "logistic regression"], speed, align="lrllrrr"),
        "",
        "Logistic-regression baseline against scikit-learn's `LogisticRegression()` (default settings: lbfgs, "
        "C = 1, tol 1e-4, max_iter 1000) on the same episodes and features:\n",
        markdown_table(["episodes", "features", "metatune", "scikit-learn", "difference", "target",
                        "time per episode (metatune / scikit-learn)"], check, align="lrrrrll"),
        "",
        "metatune solves the same problem as scikit-learn (multinomial, C = 1, unpenalised intercept) to its exact "
        "optimum, in the span of the support points with Newton steps (app/fewshot_baselines.py); scikit-learn at "
        "its default tolerance stops short of that optimum, so a few query predictions can differ.",
    ])


SECTION = common.Section(script="bench_episodic.py", doc=__doc__, workers=WORKERS, measure=measure, render=render,
                         params=lambda args: dict(QUICK if args.quick else FULL))


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
