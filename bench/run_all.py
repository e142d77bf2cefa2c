"""Run every benchmark and rewrite BENCHMARKS.md from their own outputs (`make bench`).

Each benchmark script measures side by side, prints a markdown section with its verdicts
computed from its numbers, and saves its raw numbers. This script runs them one after
the other (never two at once: they would share the two cores), keeps each section and
JSON under `bench/results/` (so `--assemble-only` can rebuild BENCHMARKS.md without
measuring), and writes BENCHMARKS.md: machine, package versions, the command of each
section, the sections, then bench/notes.md (caveats that do not depend on the numbers).

    .venv/bin/python bench/run_all.py                    # everything, full size (about 3 h on 2 cores + the text grid: hours)
    .venv/bin/python bench/run_all.py --quick            # reduced sizes; writes bench/results-quick/BENCHMARKS.md
    .venv/bin/python bench/run_all.py --only fewshot     # re-measure one section, reuse the others' results
    .venv/bin/python bench/run_all.py --assemble-only    # rebuild BENCHMARKS.md from bench/results/
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from common import PACKAGES, machine_description, machine_summary, write_atomically

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
# (name, script, what it answers); the order of BENCHMARKS.md.
SECTIONS = [
    ("pipeline", "bench_pipeline.py", "input pipeline vs EfficientNet-Lite0 training and image_dataset_from_directory; "
                                      "listing and the data doctor"),
    ("photos", "bench_photos.py", "input pipeline on photo-sized JPEGs"),
    ("compute", "bench_compute.py", "finetune on real files vs synthetic tensors; inference images/s per backbone"),
    ("transfer", "bench_transfer.py", "feature cache vs the Keras guide; linear vs finetune vs from scratch at "
                                      "10/30/100 images per class"),
    ("fewshot", "bench_fewshot.py", "ProtoNet, Reptile, FOMAML, MAML vs baselines and the Keras Reptile example"),
    ("text", "bench_text.py", "few-shot text: linear, finetune, protonet vs SetFit"),
    ("episodic", "bench_episodic.py", "evaluate.py --episodes time on cached features; the logistic-regression "
                                      "baseline against scikit-learn"),
    ("export", "bench_export.py", "SavedModel and LiteRT exports: size, latency, throughput, accuracy vs model.keras"),
    ("carveout", "bench_carveout.py", "what the test carve-out costs small folders without test/ (linear, "
                                      "5/10/20 images per class)"),
    ("metatransfer", "bench_meta_transfer.py", "pretrained backbone + a source of other classes (source stages) "
                                               "on novel classes, vs the baselines and the conv4 anchor"),
    ("unknowns", "bench_unknowns.py", "unknown-class rejection on held-out Fashion-MNIST classes, glyph letters "
                                      "and R8 topics; label issues "
                                      "under random label flips"),
    ("unknownscores", "bench_unknown_scores.py", "every unknown-class score and the run's choice over many "
                                                 "Fashion-MNIST class splits, on features computed once"),
]
# What each benchmark reads from Debian packages (`make bench-data` installs them).
PREREQUISITES = {
    "transfer": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
    "fewshot": (Path("/usr/share/fonts/truetype/noto"), "fonts-noto-core"),
    "episodic": (Path("/usr/share/fonts/truetype/noto"), "fonts-noto-core"),
    "export": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
    "carveout": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
    "metatransfer": (Path("/usr/share/fonts/truetype/noto"), "fonts-noto-core"),
    "unknowns": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
    "unknownscores": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}
# The peers' own virtual environments (`make bench-peers` builds them).
PEER_PREREQUISITES = {
    "text": (BENCH / ".venv-setfit" / "bin" / "python", "SetFit's virtual environment bench/.venv-setfit"),
}
logger = logging.getLogger("bench")


def check_prerequisites(names: list[str]) -> None:
    missing = [package for name, (path, package) in PREREQUISITES.items() if name in names and not path.exists()]
    if missing:
        raise SystemExit(f"Benchmark data missing: Debian package(s) {', '.join(missing)} not installed. "
                         "Run `make bench-data` (as root) first.")
    peers = [what for name, (path, what) in PEER_PREREQUISITES.items() if name in names and not path.exists()]
    if peers:
        raise SystemExit(f"Benchmark peer missing: {', '.join(peers)} does not exist. Run `make bench-peers` first.")


def run_section(name: str, script: str, results: Path, quick: bool) -> float:
    command = [sys.executable, str(BENCH / script), "--output", str(results / f"{name}.md"),
               "--json", str(results / f"{name}.json")] + (["--quick"] if quick else [])
    logger.info("%s: %s", name, " ".join(command[1:]))
    started = time.perf_counter()
    log_path = results / f"{name}.log"
    with open(log_path, "w") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{script} failed (exit {code}) after {elapsed / 60:.1f} min; its output is in {log_path}. "
                         "The other sections' results are kept; rerun with --only " + name)
    logger.info("%s: done in %.1f min", name, elapsed / 60)
    return elapsed


def machine_lines() -> list[str]:
    machine = machine_description()
    return [
        f"- **Machine**: {machine_summary(machine)}, {machine['ram_gib']:.1f} GiB RAM, no GPU used; "
        f"{machine['kernel']}, Python {machine['python']}.",
        "- **Packages**: " + ", ".join(f"{p} {machine[p]}" for p in PACKAGES) + ".",
    ]


MISS_MARKERS = ("**miss", "**not", "**no**", "is not met**")


def misses_at_a_glance(results: Path) -> list[str]:
    """Every line of the sections that reports a missed target, so none is lost in the detail."""
    lines = []
    for name, _, _ in SECTIONS:
        section = results / f"{name}.md"
        if not section.is_file():
            continue
        for line in section.read_text().splitlines():
            if any(marker in line for marker in MISS_MARKERS) and not line.startswith("|"):
                lines.append(f"- [{name}](#{name}): {line.lstrip('- ').strip()}")
        table_misses = [l for l in section.read_text().splitlines() if l.startswith("|") and "**miss" in l]
        if table_misses:
            lines.append(f"- [{name}](#{name}): {len(table_misses)} table row(s) marked **miss** (see the section).")
    if not lines:
        return ["All targets measured in these sections are met.\n"]
    return ["Misses and negative findings, as the sections report them:\n", *lines, ""]


def assemble(results: Path, output: Path, quick: bool) -> None:
    parts = [
        "# Benchmarks\n",
        "Written by `bench/run_all.py` (`make bench`) from the benchmark scripts' own output: every number "
        "below was measured by the command given in its section, on the machine below, and every verdict "
        "(pass / miss, and by how much) is computed by the script from those numbers. How each benchmark "
        "works: [bench/README.md](bench/README.md)." + (" **Quick mode: reduced sizes.**" if quick else "") + "\n",
        *machine_lines(),
        f"- **Written**: {time.strftime('%Y-%m-%d %H:%M %Z')}; sections measured one after another, never "
        "two at once.\n",
        "Sections: " + "; ".join(f"[{name}](#{name}) ({what})" for name, _, what in SECTIONS) + ".\n",
    ]
    parts += misses_at_a_glance(results)
    for name, script, _ in SECTIONS:
        section = results / f"{name}.md"
        parts.append(f'<a id="{name}"></a>\n')
        if section.is_file():
            parts.append(section.read_text().rstrip() + "\n")
        else:
            parts.append(f"## {name}\n\nNot measured in this run (`python bench/run_all.py --only {name}`).\n")
    notes = BENCH / "notes.md"
    if notes.is_file():
        parts.append(notes.read_text().rstrip() + "\n")
    write_atomically(output, "\n".join(parts))
    logger.info("wrote %s", output)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark in its --quick mode")
    parser.add_argument("--only", help="comma list of sections to measure: " + ", ".join(n for n, _, _ in SECTIONS))
    parser.add_argument("--assemble-only", action="store_true", help="rebuild the markdown from saved results")
    parser.add_argument("--results-dir", type=Path, help="default bench/results (bench/results-quick with --quick)")
    parser.add_argument("--output", type=Path, help="default BENCHMARKS.md (bench/results-quick/BENCHMARKS.md with --quick)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = args.results_dir or BENCH / ("results-quick" if args.quick else "results")
    output = args.output or (results / "BENCHMARKS.md" if args.quick else REPO / "BENCHMARKS.md")
    names = [n for n, _, _ in SECTIONS]
    chosen = names if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"Unknown section(s) {unknown}. Choose from {names}.")
    results.mkdir(parents=True, exist_ok=True)
    if not args.assemble_only:
        check_prerequisites(chosen)
        for name, script, _ in SECTIONS:
            if name in chosen:
                run_section(name, script, results, args.quick)
    assemble(results, output, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
