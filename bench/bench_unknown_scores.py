"""Unknown-class scores over many Fashion-MNIST class splits, on backbone features computed once.

bench_unknowns.py trains and evaluates real runs, 10 minutes a split on 2 cores, so it measures
5 splits. This bench asks what those 5 cannot answer (how each candidate score and the run's
own choice among them vary across many 7-known / 3-unknown splits) at numpy cost: the pooled
EfficientNet-Lite0 features (224 px, the `linear` strategy's input) of 100 training and 100 test
images per class are computed once; for every split, a logistic-regression head stands in for
the run's head (what app/unknown_selection.py fits on its folds too), and the product's own code
(`fit_unknown_detector`: every candidate's leave-classes-out AUROC, then the scorer) runs on the
known classes' training features (80% fit, 20% validation, as a run splits them). The AUROC is measured on the
test images of the 3 unknown classes against those of the 7 known ones.

    .venv/bin/python bench/bench_unknown_scores.py [--splits 16] [--quick] [--output s.md --json raw.json]
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

import common
from common import markdown_table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORK = Path("/tmp/metatune-bench/unknowns")
CLASSES, KNOWN, VAL_FRACTION = 10, 7, 0.2
# The candidates before relative_mahalanobis was added: what the run would have chosen among them
# (from the same fold AUROCs) is the "before" row.
EARLIER = ("max_softmax", "energy", "centroid", "knn", "mahalanobis", "max_softmax+knn")


def features(data: Path) -> dict:
    """{split: (features, labels, class names)} of the folder, through a .npz next to it (computed once)."""
    cache = WORK / f"features-{data.name}.npz"
    if not cache.is_file():
        from data.images import load_image
        from models.backbones import get_backbone

        extractor = get_backbone("efficientnet_lite0").build_features(224, "imagenet", None)
        arrays = {}
        for split in ("train", "test"):
            names = sorted(p.name for p in (data / split).iterdir() if p.is_dir())
            paths = [(f, c) for c, n in enumerate(names) for f in sorted((data / split / n).iterdir())]
            pixels = np.stack([load_image(str(f), (224, 224), "stretch") for f, _ in paths])
            arrays[f"{split}_x"] = extractor.predict(pixels, batch_size=50, verbose=0)
            arrays[f"{split}_y"], arrays["names"] = np.array([c for _, c in paths]), np.array(names)
        np.savez(cache, **arrays)
    with np.load(cache) as stored:
        return {k: stored[k] for k in stored.files}


def head(x: np.ndarray, y: np.ndarray, seed: int):
    from app.unknown_selection import _fold_head

    return _fold_head(x, y, len(np.unique(y)), seed)


def measure_split(arrays: dict, unknown: tuple[int, ...], seed: int) -> dict:
    from app.unknown_scores import SCORES, auroc
    from app.unknown_selection import fit_unknown_detector

    known = np.array([c for c in range(CLASSES) if c not in unknown])
    rows = np.isin(arrays["train_y"], known)
    x, y = arrays["train_x"][rows].astype(np.float64), np.searchsorted(known, arrays["train_y"][rows])
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), bool)
    for c in range(len(known)):
        members = np.flatnonzero(y == c)
        val[rng.choice(members, round(VAL_FRACTION * len(members)), replace=False)] = True
    kernel, bias = head(x[~val], y[~val], seed)
    scorer, detector = fit_unknown_detector(x[~val], y[~val], x[val], y[val], kernel, bias, 0.95, seed=seed)
    test_known = np.isin(arrays["test_y"], known)
    tk, tu = arrays["test_x"][test_known].astype(np.float64), arrays["test_x"][~test_known].astype(np.float64)
    accuracy = float(np.mean(np.argmax(tk @ kernel + bias, axis=1) == np.searchsorted(known, arrays["test_y"][test_known])))
    by_score = {name: auroc(scorer.score(name, tk), scorer.score(name, tu)) for name in SCORES}
    return {"unknown": [str(arrays["names"][c]) for c in unknown], "chosen": detector.score,  # the default's name
            "auroc": by_score[detector.score], "auroc_by_score": by_score,
            "selection": detector.selection.get("auroc", {}), "known_accuracy": accuracy}


def _spread(values) -> list[str]:
    """median, 10th percentile, 90th percentile, worst."""
    values = sorted(values)
    return [f"{statistics.median(values):.3f}", f"{np.percentile(values, 10):.3f}", f"{np.percentile(values, 90):.3f}",
            f"{values[0]:.3f}"]


def render(results: dict) -> str:
    from app.unknown_selection import DEFAULT_SCORE, folds_choice

    rows, names = results["splits"], list(results["splits"][0]["auroc_by_score"])
    default = [r["auroc_by_score"][DEFAULT_SCORE] for r in rows]
    folds = [r["auroc_by_score"][folds_choice(r["selection"], names)] for r in rows]
    counts = {n: sum(folds_choice(r["selection"], names) == n for r in rows) for n in names}
    before = [r["auroc_by_score"][folds_choice(r["selection"], EARLIER)] for r in rows]
    median_default, *others = _spread(default)
    table = markdown_table(
        ["score", "median AUROC", "10th pct", "90th pct", "worst", "folds' choice in"],
        [[f"**the default (`auto`: {DEFAULT_SCORE})**", f"**{median_default}**", *others, ""],
         ["the folds' choice (`--unknown-score folds`)", *_spread(folds), ""],
         [f"the folds' choice among the earlier candidates ({', '.join(EARLIER)})", *_spread(before), ""]]
        + [[n, *_spread([r["auroc_by_score"][n] for r in rows]), counts[n]] for n in names],
        align="lrrrrr")
    lines = ["## Unknown-class scores over many class splits (features computed once)", "",
             f"Command: `{results['command']}`. Fashion-MNIST, EfficientNet-Lite0 pooled features (224 px) of "
             f"{results['params']['per_class']} training and test images per class, {len(rows)} random 7-known / "
             "3-unknown splits (of the 120). Per split: a logistic-regression head on 80% of the known classes' "
             "training images, the product's `fit_unknown_detector` (every candidate's leave-classes-out AUROC on "
             "the training classes, scorer, standardisation on the other 20%), AUROC of unknown-class test images "
             f"against known-class test images. Wall time {results['wall_min']:.1f} min "
             f"({common.shared_machine(results)}).", "", table]
    worst = sorted(range(len(rows)), key=lambda i: default[i])[:5]
    lines += ["", "Hardest splits for the default score (unknown classes: AUROC): "
              + "; ".join(f"{', '.join(rows[i]['unknown'])}: {default[i]:.3f}" for i in worst) + ".", "",
              f"Known-class accuracy of the stand-in head: median {statistics.median(r['known_accuracy'] for r in rows):.3f} "
              "(rejection never changes the class named).", ""]
    gain = np.subtract(default, folds)
    lines.append(f"The fixed default against the folds' choice, split by split: {np.mean(gain):+.3f} AUROC on average, "
                 f"better on {int(np.sum(gain > 1e-9))}, worse on {int(np.sum(gain < -1e-9))}, level on "
                 f"{int(np.sum(np.abs(gain) <= 1e-9))} of {len(rows)} splits (level: the folds chose {DEFAULT_SCORE} "
                 "too). This is why `auto` is a fixed score (app/unknown_selection.py); it was chosen having seen "
                 "these splits, so the real runs of the section above (5 Fashion-MNIST splits drawn independently of these, one of "
                 "them, dress / sandal / sneaker, among these too; the glyph set; R8), re-measured with it, are "
                 "the check.")
    lines.append("")
    target = statistics.median(default)
    share = np.mean([c >= 0.85 for c in default])
    lines.append(f"Target (issue 21): AUROC >= 0.85 with the default score on a split not chosen by us. Median of the "
                 f"default score {target:.3f}, {100 * share:.0f}% of splits at or above 0.85: "
                 + ("**met**." if target >= 0.85 else "**missed**."))
    return "\n".join(lines) + "\n"


def measure(p: dict, log) -> dict:
    from bench_unknowns import make_data

    arrays = features(make_data(p))
    all_splits = list(itertools.combinations(range(CLASSES), CLASSES - KNOWN))
    picked = np.random.default_rng(2026).choice(len(all_splits), min(p["splits"], len(all_splits)), replace=False)
    results = {"params": {k: v for k, v in p.items() if k != "splits"}, "splits": [],
               "command": "python bench/bench_unknown_scores.py" + (" --quick" if p["quick"] else f" --splits {p['splits']}")}
    for i, index in enumerate(picked):
        split = measure_split(arrays, all_splits[index], seed=i)
        results["splits"].append(split)
        log(f"{i} {split['unknown']} {split['chosen']} {split['auroc']:.3f}")
    return results


def _arguments(parser) -> None:
    parser.add_argument("--splits", type=int, default=16, help="random 7/3 class splits (of the 120); 5 with --quick")


SECTION = common.Section(
    script="bench_unknown_scores.py", doc=__doc__, measure=measure, render=render, add_arguments=_arguments,
    params=lambda args: {"per_class": 100, "test_per_class": 100, "splits": 5 if args.quick else args.splits,
                         "quick": args.quick})


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
