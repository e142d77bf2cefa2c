"""The data report printed by `train.py --check` and the split manifest (app/data_report.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from app.data_report import MAX_LISTED, build_data_report, build_manifest, format_data_report
from data.scan import scan_folder
from data.splits import assign_splits, class_weights


@pytest.fixture
def split_folder(tmp_path, make_image):
    """train/ + val/ with conversions, a skipped file, a within-class duplicate and a cross-class leak."""
    root = tmp_path / "data"
    make_image(root / "train/cat/a.png")
    make_image(root / "train/cat/b.png", mode="L")
    make_image(root / "train/cat/c.png", mode="L")
    make_image(root / "train/cat/d.jpg", mode="CMYK")
    make_image(root / "train/dog/e.png")
    shutil.copy(root / "train/dog/e.png", root / "train/dog/e_copy.png")
    make_image(root / "train/dog/f.png")
    make_image(root / "train/dog/g.png")
    (root / "train/dog/broken.jpg").write_text("not a picture")
    make_image(root / "val/cat/v1.png")
    make_image(root / "val/dog/v2.png")
    shutil.copy(root / "train/cat/a.png", root / "val/dog/leak.png")
    return root


def _report(root):
    scan = scan_folder(root)
    examples = assign_splits(scan, 0.2, seed=0, test_fraction=0.0)
    weights = class_weights([e.label for e in examples if e.split == "train"], len(scan.class_names))
    return scan, examples, build_data_report(scan, examples, weights)


def _row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


def test_report_dict_is_complete_and_json_serialisable(split_folder):
    root = split_folder
    scan, examples, report = _report(root)

    json.dumps(report)  # plain JSON, no custom encoder needed
    assert report["splits"] == {
        "train": {"cat": 4, "dog": 4},
        "val": {"cat": 1, "dog": 2},
        "test": {"cat": 0, "dog": 0},
    }
    assert report["num_examples"] == len(examples) == 11
    assert report["class_weights"] == {"cat": 1.0, "dog": 1.0}
    across = report["duplicates"]["across_splits"]
    assert across == {"num_files": 1, "files": [str(root / "val/dog/leak.png")]}


def test_formatted_report_lists_counts_skips_conversions_and_warnings(split_folder):
    root = split_folder
    _, _, report = _report(root)

    text = format_data_report(report)

    lines = text.splitlines()
    assert lines[0] == f"Data folder: {root}"
    assert "layout: split, modality: image, classes: 2" in text
    assert "files found: 12, usable: 11, skipped: 1, converted: 3" in text
    # class counts per split
    assert _row(text, "class") == ["class", "train", "val", "test"]
    assert _row(text, "cat") == ["cat", "4", "1", "0"]
    assert _row(text, "dog") == ["dog", "4", "2", "0"]
    # skipped files with their reasons
    skipped_at = lines.index("Skipped files:")
    assert lines[skipped_at + 1].strip().startswith(f"{root / 'train/dog/broken.jpg'}: not a readable image")
    # conversions aggregated by kind, most frequent first, with counts
    converted_at = next(i for i, line in enumerate(lines) if line.startswith("Converted when loaded"))
    assert lines[converted_at + 1].strip().startswith("grayscale (L) converted to RGB: 2 file(s), e.g. ")
    assert str(root / "train/cat/b.png") in lines[converted_at + 1] and str(root / "train/cat/c.png") in lines[converted_at + 1]
    assert lines[converted_at + 2].strip() == f"CMYK converted to RGB: 1 file(s), e.g. {root / 'train/cat/d.jpg'}"
    # duplicates: conflicting labels, within a class, leakage across splits
    conflict_at = lines.index("WARNING: 1 group(s) of identical files under different classes:")
    assert f"{root / 'train/cat/a.png'} (cat)" in lines[conflict_at + 1]
    assert f"{root / 'val/dog/leak.png'} (dog)" in lines[conflict_at + 1]
    within_at = lines.index("1 group(s) of identical files within a class:")
    assert str(root / "train/dog/e.png") in lines[within_at + 1] and str(root / "train/dog/e_copy.png") in lines[within_at + 1]
    leak_at = lines.index("WARNING: 1 val/test files have an exact duplicate in train (leakage):")
    assert lines[leak_at + 1].strip() == str(root / "val/dog/leak.png")
    assert "Class weights: cat 1.000, dog 1.000" in text


def test_clean_folder_report_has_no_warnings(tmp_path, make_image):
    for name in ("ant", "bee"):
        for i in range(3):
            make_image(tmp_path / name / f"{i}.png")
    scan = scan_folder(tmp_path)
    text = format_data_report(build_data_report(scan, assign_splits(scan, 0.3, seed=0)))

    assert "WARNING" not in text and "Skipped" not in text and "Converted" not in text
    assert "identical" not in text and "Class weights" not in text
    assert _row(text, "ant") == ["ant", "2", "1", "0"]


def test_scan_only_report_shows_folder_counts(tmp_path, make_image):
    for name in ("ant", "bee"):
        for i in range(3 if name == "ant" else 2):
            make_image(tmp_path / name / f"{i}.png")
    flat = format_data_report(build_data_report(scan_folder(tmp_path)))
    assert _row(flat, "class") == ["class", "all"]
    assert _row(flat, "ant") == ["ant", "3"] and _row(flat, "bee") == ["bee", "2"]


def test_long_lists_are_truncated_with_a_pointer_to_the_json(tmp_path, make_image):
    for name in ("ant", "bee"):
        for i in range(2):
            make_image(tmp_path / name / f"{i}.png")
    for i in range(MAX_LISTED + 5):
        (tmp_path / "ant" / f"bad_{i:02d}.png").write_bytes(b"")
    report = build_data_report(scan_folder(tmp_path))
    assert len(report["skipped"]) == MAX_LISTED + 5  # the JSON keeps every file

    text = format_data_report(report)

    assert sum("empty file (0 bytes)" in line for line in text.splitlines()) == MAX_LISTED
    assert "    ... and 5 more (all in a run's data_report.json)" in text.splitlines()


def test_manifest_paths_are_relative_with_sha256_label_and_split(split_folder):
    root = split_folder
    scan, examples, _ = _report(root)

    manifest = build_manifest(scan, examples)

    assert manifest["root"] == str(root)
    assert manifest["class_names"] == ["cat", "dog"]
    files = manifest["files"]
    assert len(files) == len(examples) == 11
    assert sorted(f["path"] for f in files) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "broken.jpg"
    )
    for entry in files:
        assert not Path(entry["path"]).is_absolute()
        assert entry["sha256"] == hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest()
        split, label = entry["path"].split("/")[:2]
        assert entry["split"] == split and entry["label"] == label
    json.dumps(manifest)


def test_manifest_of_a_flat_folder_with_automatic_splits(tmp_path, make_image):
    for name in ("ant", "bee"):
        for i in range(5):
            make_image(tmp_path / name / f"{i}.png")
    scan = scan_folder(tmp_path)
    examples = assign_splits(scan, 0.2, seed=0, test_fraction=0.2)

    files = build_manifest(scan, examples)["files"]

    assert {f["path"] for f in files} == {f"{n}/{i}.png" for n in ("ant", "bee") for i in range(5)}
    assert {f["split"] for f in files} == {"train", "val", "test"}
    assert all(f["label"] == f["path"].split("/")[0] for f in files)
    assert all(len(f["sha256"]) == 64 for f in files)


def test_a_name_holding_a_newline_stays_on_its_line(split_folder):
    """train.py --check printed such a name raw, splitting its list entry across two lines."""
    _, _, report = _report(split_folder)
    report["skipped"] = [{"path": "train/cat/two\nlines.png", "reason": "truncated"}]
    text = format_data_report(report)
    assert "    train/cat/two\\nlines.png: truncated" in text.splitlines()
