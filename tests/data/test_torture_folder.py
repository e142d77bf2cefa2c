"""The issue's bar: a folder of every awkward file a user really has, scanned, checked and trained on.

Every usable file must be used (none lost), every unusable one reported with a
specific reason, every conversion reported, hidden files ignored everywhere.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import train
from app import run_dir as rd
from data.pipeline import read_texts
from data.scan import scan_folder

HIDDEN_MARKERS = (".DS_Store", "._", ".ipynb_checkpoints", "__MACOSX", "Thumbs.db")
NON_ASCII = "größe_猫.png"


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _rel(root: Path, path: str) -> str:
    return Path(path).relative_to(root).as_posix()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_image_torture(root: Path, make_image) -> dict:
    """Write the torture folder; return what a correct scan must report (paths relative to root)."""
    usable: dict[str, str] = {}  # relative path -> class

    def good(rel: str, **kwargs) -> Path:
        path = make_image(root / rel, **kwargs)
        usable[rel] = rel.split("/")[0]
        return path

    # cat: plain, CMYK, RGBA, EXIF-rotated, non-ASCII name, a within-class duplicate
    for i in range(4):
        good(f"cat/plain_{i}.png")
    good("cat/cmyk.jpg", mode="CMYK")
    good("cat/rgba.png", mode="RGBA")
    good("cat/rotated.jpg", size=(8, 4), exif=_exif(6))
    good(f"cat/{NON_ASCII}")
    good("cat/dup_a.png")
    shutil.copy(root / "cat/dup_a.png", root / "cat/dup_b.png")
    usable["cat/dup_b.png"] = "cat"

    # dog: 16-bit, palette GIF, WebP, TIFF, upper-case extensions, a copy of a cat (conflicting labels)
    for i in range(3):
        good(f"dog/plain_{i}.png")
    good("dog/sixteen.png", mode="I;16")
    good("dog/palette.gif", mode="P")
    good("dog/photo.webp")
    good("dog/scan.tiff")
    good("dog/UPPER.PNG", fmt="PNG")
    good("dog/PHOTO.JPG", fmt="JPEG")
    shutil.copy(root / "cat/plain_0.png", root / "dog/conflict.png")
    usable["dog/conflict.png"] = "dog"

    # bird: grayscale, palette with transparency, animated GIF, a file in a nested folder
    for i in range(4):
        good(f"bird/plain_{i}.png")
    good("bird/gray.png", mode="L")
    good("bird/palette_t.png", mode="P", transparency=0)
    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)) for i in range(3)]
    frames[0].save(root / "bird/anim.gif", save_all=True, append_images=frames[1:])
    usable["bird/anim.gif"] = "bird"
    good("bird/sub/nested.png")

    # fish: an empty class folder
    (root / "fish").mkdir()

    # unusable files
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "cat/truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "cat/empty.jpg").write_bytes(b"")
    (root / "dog/notes.jpg").write_text("my notes about the dog pictures\n")
    (root / "dog/labels.csv").write_text("file,label\n")
    (root / "README.txt").write_text("loose file at the top level\n")
    skipped = {
        "cat/truncated.jpg": ("not a readable image", "truncated"),
        "cat/empty.jpg": ("empty file (0 bytes)",),
        "dog/notes.jpg": ("not a readable image", "not a recognised image format"),
        "dog/labels.csv": ("not an image file (extension '.csv')",),
        "README.txt": ("file outside any class folder",),
    }

    # hidden and ignored files: never counted, listed, hashed or used as classes
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cat/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "cat/._plain_0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "cat/Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "cat/.ipynb_checkpoints").mkdir()
    shutil.copy(root / "cat/plain_1.png", root / "cat/.ipynb_checkpoints/plain_1-checkpoint.png")
    make_image(root / ".ipynb_checkpoints/cat/x.png")
    make_image(root / "__MACOSX/cat/._plain_0.png")

    converted = {
        "cat/cmyk.jpg": ("CMYK converted to RGB",),
        "cat/rgba.png": ("RGBA transparency composited on white",),
        "cat/rotated.jpg": ("rotated by EXIF orientation 6",),
        "dog/sixteen.png": ("I;16 (16/32-bit) scaled to 8-bit RGB",),
        "dog/palette.gif": ("palette converted to RGB",),
        "bird/gray.png": ("grayscale (L) converted to RGB",),
        "bird/palette_t.png": ("palette with transparency composited on white",),
        "bird/anim.gif": ("palette converted to RGB", "animated (3 frames): first frame used"),
    }
    return {
        "usable": usable,
        "skipped": skipped,
        "converted": converted,
        "within_class": {"cat/dup_a.png", "cat/dup_b.png"},
        "conflicting": {("cat/plain_0.png", "cat"), ("dog/conflict.png", "dog")},
        "class_names": ["bird", "cat", "dog"],
        "empty_classes": ["fish"],
        "num_files_found": len(usable) + len(skipped),
    }


@pytest.fixture
def torture(tmp_path, make_image):
    root = tmp_path / "torture"
    return root, build_image_torture(root, make_image)


def _assert_no_hidden(paths):
    for path in paths:
        assert not any(marker in path for marker in HIDDEN_MARKERS), path


# --------------------------------------------------------------------------- (a) scan


def test_scan_uses_every_usable_file_and_reports_the_rest(torture):
    root, expected = torture
    assert Counter(expected["usable"].values()) == {"cat": 10, "dog": 10, "bird": 8}

    result = scan_folder(root)

    assert result.layout == "flat" and result.modality == "image"
    assert result.class_names == expected["class_names"]
    # no usable file lost, none counted twice, each under its folder's class
    labels = {_rel(root, e.path): result.class_names[e.label] for e in result.examples}
    assert len(result.examples) == len(expected["usable"]) == 28
    assert labels == expected["usable"]
    assert result.counts() == {"bird": 8, "cat": 10, "dog": 10}
    for example in result.examples:
        assert example.sha256 == _sha(Path(example.path))
    assert result.num_files_found == expected["num_files_found"]

    # every unusable file skipped, with a specific reason
    skipped = {_rel(root, s.path): s.reason for s in result.skipped}
    assert set(skipped) == set(expected["skipped"])
    for rel, fragments in expected["skipped"].items():
        for fragment in fragments:
            assert fragment in skipped[rel], (rel, skipped[rel])

    # every converted file with the right note(s), and only those
    converted = {_rel(root, c.path): c.notes for c in result.converted}
    assert converted == expected["converted"]
    assert not set(converted) & set(skipped)

    # hidden files absent everywhere
    _assert_no_hidden(labels)
    _assert_no_hidden(skipped)
    _assert_no_hidden(converted)
    assert not any(name.startswith((".", "__")) for name in result.class_names)

    # empty class listed, not a class
    assert result.empty_classes == expected["empty_classes"]
    assert "fish" not in result.class_names

    # duplicates: one within-class group, one conflicting-label group
    duplicates = result.duplicates
    assert duplicates["num_within_class_groups"] == 1
    (within,) = duplicates["within_class"]
    assert {_rel(root, f["path"]) for f in within["files"]} == expected["within_class"]
    assert {f["label"] for f in within["files"]} == {"cat"}
    assert duplicates["num_conflicting_label_groups"] == 1
    (conflict,) = duplicates["conflicting_labels"]
    assert {(_rel(root, f["path"]), f["label"]) for f in conflict["files"]} == expected["conflicting"]
    assert conflict["sha256"] == _sha(root / "cat/plain_0.png")


# --------------------------------------------------------------------------- (b) training


@pytest.mark.slow
def test_training_on_the_torture_folder(torture, tmp_path, monkeypatch):
    root, expected = torture
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"

    code = train.main([str(root), "--weights", "none", "--image-size", "32", "--epochs", "2", "--output", str(run)])

    assert code == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    assert (run / rd.MODEL_FILE).is_file()

    report = rd.read_json(run / rd.DATA_REPORT_FILE)
    assert report["num_examples"] == len(expected["usable"])
    assert report["num_files_found"] == expected["num_files_found"]
    assert report["class_names"] == expected["class_names"]
    assert report["empty_classes"] == expected["empty_classes"]
    skipped = {_rel(root, s["path"]): s["reason"] for s in report["skipped"]}
    assert set(skipped) == set(expected["skipped"])
    for rel, fragments in expected["skipped"].items():
        assert all(fragment in skipped[rel] for fragment in fragments), (rel, skipped[rel])
    converted = {_rel(root, c["path"]): tuple(c["notes"]) for c in report["converted"]}
    assert converted == expected["converted"]
    assert report["duplicates"]["num_conflicting_label_groups"] == 1
    assert report["duplicates"]["num_within_class_groups"] == 1

    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    files = manifest["files"]
    occurrences = Counter(f["path"] for f in files)
    assert set(occurrences) == set(expected["usable"])  # every usable file, relative to the root
    assert set(occurrences.values()) == {1}  # exactly once: the splits are disjoint
    for entry in files:
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        assert entry["sha256"] == _sha(root / entry["path"])
        assert entry["label"] == expected["usable"][entry["path"]]
        assert entry["split"] in ("train", "val", "test")
    split_of = {f["path"]: f["split"] for f in files}
    by_split = {s: {p for p, sp in split_of.items() if sp == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"] or by_split["val"] & by_split["test"])
    assert set().union(*by_split.values()) == set(expected["usable"])
    for name in expected["class_names"]:  # every class in every split
        for split in ("train", "val", "test"):
            assert any(expected["usable"][p] == name for p in by_split[split]), (name, split)
    # the report's split counts agree with the manifest
    for split, counts in report["splits"].items():
        assert sum(counts.values()) == len(by_split[split])
    # identical files within a class stay together
    assert len({split_of[p] for p in expected["within_class"]}) == 1
    # leakage is reported exactly: val/test files whose content is also in train
    train_hashes = {f["sha256"] for f in files if f["split"] == "train"}
    leaked = {f["path"] for f in files if f["split"] != "train" and f["sha256"] in train_hashes}
    assert {_rel(root, p) for p in report["duplicates"]["across_splits"]["files"]} == leaked

    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["class_names"] == expected["class_names"]
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- (c) --check


def test_check_prints_the_report_and_trains_nothing(torture, tmp_path, monkeypatch, capsys):
    root, expected = torture
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    assert train.main([str(root), "--check"]) == 0

    captured = capsys.readouterr()
    out = captured.out
    assert "Traceback" not in captured.err
    assert "modality: image" in out
    assert f"files found: {expected['num_files_found']}, usable: 28, skipped: 5, converted: 8" in out
    assert "Skipped files:" in out
    for rel, fragments in expected["skipped"].items():
        line = next(line for line in out.splitlines() if line.strip().startswith(str(root / rel) + ":"))
        assert all(fragment in line for fragment in fragments), line
    assert "WARNING: 1 group(s) of identical files under different classes" in out
    assert f"{root / 'cat/plain_0.png'} (cat)" in out and f"{root / 'dog/conflict.png'} (dog)" in out
    assert "fish" in out  # the empty class folder
    assert "CMYK converted to RGB: 1 file(s)" in out
    # the class table has train/val/test columns adding up to each class's count
    header = next(line for line in out.splitlines() if line.split()[:1] == ["class"])
    assert header.split() == ["class", "train", "val", "test"]
    for name, total in (("bird", 8), ("cat", 10), ("dog", 10)):
        row = next(line.split() for line in out.splitlines() if line.split()[:1] == [name])
        assert sum(map(int, row[1:])) == total, row
    _assert_no_hidden(out.splitlines()[1:])  # (line 0 names the data folder)

    assert not (tmp_path / "runs").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- text

ACCENTED = "Les élèves étaient très fâchés à cause de l'été"  # a sentence cp1252 detection gets right
TEXTS = {
    "pos/utf8.txt": "I loved this film — superb! ★★★★★",
    "pos/résumé_日本.txt": "素晴らしい映画でした。",
    "pos/plain.txt": "A delight from start to finish.",
    "neg/a.txt": "Terrible, boring and far too long.",
    "neg/b.txt": "I walked out after twenty minutes.",
    "neg/c.txt": "Worst film of the year.",
}


@pytest.fixture
def text_torture(tmp_path, make_image):
    root = tmp_path / "reviews"
    for rel, text in TEXTS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode("utf-8"))
    (root / "pos/bom.txt").write_bytes(codecs.BOM_UTF8 + "Great acting, great story.".encode("utf-8"))
    (root / "pos/cp1252.txt").write_bytes(ACCENTED.encode("cp1252"))
    shutil.copy(root / "pos/utf8.txt", root / "neg/same_as_pos.txt")  # conflicting labels
    (root / "pos/empty.txt").write_bytes(b"")
    (root / "pos/blank.txt").write_bytes(b" \n\t  \r\n")
    (root / "neg/junk.txt").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8)))
    (root / "pos/notes.md").write_text("# my notes\n")
    make_image(root / "neg/cover.png")
    (root / "pos/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "neg/._a.txt").write_bytes(b"\x00\x05\x16\x07")
    return root


def test_text_scan_reports_everything(text_torture):
    root = text_torture

    result = scan_folder(root)

    assert result.modality == "text"
    assert result.class_names == ["neg", "pos"]
    labels = {_rel(root, e.path): result.class_names[e.label] for e in result.examples}
    assert labels == {
        **{rel: rel.split("/")[0] for rel in TEXTS},
        "pos/bom.txt": "pos", "pos/cp1252.txt": "pos", "neg/same_as_pos.txt": "neg",
    }
    skipped = {_rel(root, s.path): s.reason for s in result.skipped}
    assert set(skipped) == {"pos/empty.txt", "pos/blank.txt", "neg/junk.txt", "pos/notes.md", "neg/cover.png"}
    assert "empty file (0 bytes)" in skipped["pos/empty.txt"]
    assert "whitespace only" in skipped["pos/blank.txt"]
    assert "no text encoding could be detected" in skipped["neg/junk.txt"]
    assert skipped["pos/notes.md"] == "not a text file (extension '.md')"
    assert skipped["neg/cover.png"] == "not a text file (extension '.png')"
    converted = {_rel(root, c.path): c.notes for c in result.converted}
    assert set(converted) == {"pos/bom.txt", "pos/cp1252.txt"}
    assert converted["pos/bom.txt"] == ("UTF-8 with BOM (BOM removed)",)
    assert converted["pos/cp1252.txt"][0].startswith("not UTF-8")
    _assert_no_hidden(list(labels) + list(skipped))

    encodings = {_rel(root, e.path): e.encoding for e in result.examples}
    assert encodings["pos/utf8.txt"] == "utf-8"
    assert encodings["pos/bom.txt"] == "utf-8-sig"
    texts = dict(zip(labels, read_texts([e.path for e in result.examples], [e.encoding for e in result.examples])))
    assert texts["pos/bom.txt"] == "Great acting, great story."
    assert texts["pos/cp1252.txt"] == ACCENTED
    assert texts["pos/résumé_日本.txt"] == TEXTS["pos/résumé_日本.txt"]

    (conflict,) = result.duplicates["conflicting_labels"]
    assert {(_rel(root, f["path"]), f["label"]) for f in conflict["files"]} == {
        ("pos/utf8.txt", "pos"), ("neg/same_as_pos.txt", "neg")
    }
    assert result.duplicates["num_within_class_groups"] == 0


def test_text_check_succeeds(text_torture, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    assert train.main([str(text_torture), "--check"]) == 0

    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "modality: text" in captured.out
    assert "usable: 9, skipped: 5" in captured.out
    assert "not a text file (extension '.md')" in captured.out
    assert "WARNING: 1 group(s) of identical files under different classes" in captured.out
    assert not (tmp_path / "runs").exists()


def test_training_text_with_an_image_backbone_is_a_clear_error(text_torture, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"

    assert train.main([str(text_torture), "--backbone", "efficientnet_lite0", "--output", str(out)]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "holds text files" in err
    assert "efficientnet_lite0" in err and "image backbone" in err
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
