"""The data report (data_report.json and `train.py --check`) and the split manifest."""

from __future__ import annotations

from pathlib import Path

from app.escaping import visible
from data.duplicates import cross_split_duplicates
from data.records import Example
from data.scan import ScanResult
from data.splits import class_disjoint_splits

SPLITS = ("train", "val", "test")
MAX_LISTED = 20


def build_manifest(scan: ScanResult, examples: list[Example], seed: int = 0) -> dict:
    """Every file with its content hash, label and split: evaluation uses exactly the held-out files.

    Also records a class-disjoint meta-train / meta-val / meta-test assignment of the
    classes (seeded), which the meta-learning strategies use when they need
    classes that the target task never sees; absent below 3 classes.
    """
    meta = class_disjoint_splits(scan.class_names, seed=seed) if len(scan.class_names) >= 3 else None
    return {
        "root": scan.root,
        "class_names": scan.class_names,
        "class_splits": meta,
        "files": [
            {"path": str(Path(e.path).relative_to(scan.root)), "sha256": e.sha256,
             "label": scan.class_names[e.label], "split": e.split}
            for e in examples
        ],
    }


# manifest.json: why a file of the train or val split did not train the run (the split says only where it drew it).
EXCLUDED_KEY = "excluded"
EXCLUDED_LABEL_ISSUE = "a likely label error (--exclude-label-issues): not trained or validated on"


def mark_excluded(manifest: dict, left_out: list[str]) -> bool:
    """Mark the manifest's entries of the files --exclude-label-issues left out (`left_out`: their paths);
    whether any mark was added."""
    left = {str(Path(path).relative_to(manifest["root"])) for path in left_out}
    unmarked = [entry for entry in manifest["files"] if entry["path"] in left and EXCLUDED_KEY not in entry]
    for entry in unmarked:
        entry[EXCLUDED_KEY] = EXCLUDED_LABEL_ISSUE
    return bool(unmarked)


def without_exclusion_marks(manifest):
    """The manifest as a fresh scan builds it: without `mark_excluded`'s marks, which are the run's own (what a
    resume compares with the data now). Anything not shaped as a manifest is returned as it is."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        return manifest
    return manifest | {"files": [{key: value for key, value in entry.items() if key != EXCLUDED_KEY}
                                 if isinstance(entry, dict) else entry for entry in files]}


def build_data_report(scan: ScanResult, examples: list[Example] | None = None,
                      class_weights: dict[int, float] | None = None) -> dict:
    report = scan.summary()
    if examples is not None:
        report["splits"] = {
            split: {name: sum(1 for e in examples if e.split == split and e.label == i)
                    for i, name in enumerate(scan.class_names)}
            for split in SPLITS
        }
        report["duplicates"]["across_splits"] = cross_split_duplicates(examples)
    if class_weights is not None:
        report["class_weights"] = {scan.class_names[c]: round(w, 4) for c, w in class_weights.items()}
    return report


def _listed(items: list[str]) -> list[str]:
    lines = [f"    {item}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        # "a run's": train.py --check prints this report too and writes no data_report.json (it has no run directory).
        lines.append(f"    ... and {len(items) - MAX_LISTED} more (all in a run's data_report.json)")
    return lines


def format_data_report(report: dict) -> str:
    """A readable summary of a data report for the terminal, one line per entry: a control character in a name
    (a newline) is written escaped, as in predict.py's lines (app/escaping.visible)."""
    return "\n".join(visible(line) for line in _report_lines(report))


def _report_lines(report: dict) -> list[str]:
    lines = [
        f"Data folder: {report['root']}",
        f"  layout: {report['layout']}, modality: {report['modality']}, classes: {len(report['class_names'])}",
        f"  files found: {report['num_files_found']}, usable: {report['num_examples']}, "
        f"skipped: {len(report['skipped'])}, converted: {len(report['converted'])}",
    ]
    splits = report.get("splits") or report["counts_by_folder_split"] or {"all": report["counts"]}
    names = report["class_names"]
    width = max([len(n) for n in names] + [5])
    header = "  " + "class".ljust(width) + "".join(f"{s:>8}" for s in splits)
    lines += ["", header]
    for name in names:
        lines.append("  " + name.ljust(width) + "".join(f"{splits[s].get(name, 0):>8}" for s in splits))
    if report["empty_classes"]:
        lines += ["", f"Class folders without usable files (ignored): {report['empty_classes']}"]
    if report["skipped"]:
        lines += ["", "Skipped files:"] + _listed([f"{s['path']}: {s['reason']}" for s in report["skipped"]])
    if report["converted"]:
        by_note: dict[str, list[str]] = {}
        for item in report["converted"]:
            for note in item["notes"]:
                by_note.setdefault(note, []).append(item["path"])
        lines += ["", "Converted when loaded (a run's data_report.json lists every file):"]
        for note, paths in sorted(by_note.items(), key=lambda kv: -len(kv[1])):
            examples = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
            lines.append(f"    {note}: {len(paths)} file(s), e.g. {examples}")
    duplicates = report["duplicates"]
    if duplicates["num_conflicting_label_groups"]:
        lines += ["", f"WARNING: {duplicates['num_conflicting_label_groups']} group(s) of identical files under different classes:"]
        lines += _listed([", ".join(f"{f['path']} ({f['label']})" for f in g["files"]) for g in duplicates["conflicting_labels"]])
    if duplicates["num_within_class_groups"]:
        lines += ["", f"{duplicates['num_within_class_groups']} group(s) of identical files within a class:"]
        lines += _listed([", ".join(f["path"] for f in g["files"]) for g in duplicates["within_class"]])
    across = duplicates.get("across_splits")
    if across and across["num_files"]:
        lines += ["", f"WARNING: {across['num_files']} val/test files have an exact duplicate in train (leakage):"]
        lines += _listed(across["files"])
    if "class_weights" in report:
        lines += ["", "Class weights: " + ", ".join(f"{k} {v:.3f}" for k, v in report["class_weights"].items())]
    return lines
