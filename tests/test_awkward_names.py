"""File and class names holding '|', a newline or non-ASCII letters, through the real CLIs: report.md's
tables keep their rows and columns, predict.py prints one line per file (JSON unchanged), --explain
writes file names without control characters, and no matplotlib glyph warning reaches stderr."""

import json

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from app import fonts

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

CLASSES = {"red": (220, 30, 30), "gr|een": (30, 200, 40), "blüe": (30, 40, 220)}
PIPE, NEWLINE = "a|b.png", "new\nline.png"


def _image(path, colour, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


def _folder(root, per_class, seed):
    for k, (name, colour) in enumerate(CLASSES.items()):
        for i in range(per_class):
            _image(root / name / f"{i}.png", colour, seed * 100 + k * 10 + i)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("awkward")
    data = _folder(root / "data", 10, 0)
    _image(data / "red" / PIPE, CLASSES["red"], 901)  # awkward names among the training files too
    _image(data / "red" / NEWLINE, CLASSES["red"], 902)
    run = root / "run"
    # A high learning rate: the head on tiny_image's random features is confident after a few epochs.
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "40", "--learning-rate", "0.1",
                       "--seed", "1", "--output", str(run)]) == 0
    # An evaluation folder whose awkward files are labelled red but are blue: confident mistakes.
    fresh = _folder(root / "fresh", 2, 5)
    _image(fresh / "red" / PIPE, CLASSES["blüe"], 903)
    _image(fresh / "red" / NEWLINE, CLASSES["blüe"], 904)
    return root, run, fresh


def _cells(row):
    """A Markdown table row's cells, split on the '|' that no backslash escapes."""
    cells, current, i = [], "", 1
    while i < len(row) - 1:
        if row[i] == "\\":
            current, i = current + row[i:i + 2], i + 2
            continue
        if row[i] == "|":
            cells, current = cells + [current.strip()], ""
        else:
            current += row[i]
        i += 1
    return cells + [current.strip()]


def test_report_tables_keep_their_shape(trained, capfd, monkeypatch):
    monkeypatch.setattr(fonts, "_reported", {})
    _, run, fresh = trained
    assert evaluate.main([str(run), str(fresh), "--name", "awkward"]) == 0
    assert "Glyph" not in capfd.readouterr().err
    report = (run / "eval" / "awkward" / "report.md").read_text(encoding="utf-8")
    lines = report.split("\n")
    start = lines.index("| file | true | predicted | confidence |")
    rows = []
    for line in lines[start + 2:]:
        if not line:
            break
        assert line.startswith("| ") and line.endswith(" |"), line  # a newline in a name would cut the row
        rows.append(_cells(line))
    assert all(len(row) == 4 for row in rows), rows
    files = [row[0] for row in rows]
    assert any(f.endswith("/red/a\\|b.png") for f in files) and any(f.endswith("/red/new\\nline.png") for f in files)
    assert {row[1] for row in rows if row[0].endswith(("a\\|b.png", "new\\nline.png"))} == {"red"}
    per_class = lines[lines.index("| class | precision | recall | F1 | support |") + 2:][:3]
    assert [_cells(row)[0] for row in per_class] == ["blüe", "gr\\|een", "red"]
    # The CSV keeps the real names (csv quotes them).
    assert (run / "eval" / "awkward" / "misclassified.csv").read_text(encoding="utf-8").count("new\nline.png") == 1


def test_predict_prints_one_line_per_file_and_json_keeps_the_names(trained, capsys):
    _, run, fresh = trained
    capsys.readouterr()
    assert predict.main([str(run), str(fresh / "red"), "--reject", "none"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4  # 2 plain files and the two awkward ones, one line each
    printed = {line.split(": ", 1)[0] for line in out}
    assert str(fresh / "red" / "new\\nline.png") in printed and str(fresh / "red" / PIPE) in printed
    assert all(": " in line and line.split(": ", 1)[1] for line in out)
    assert predict.main([str(run), str(fresh / "red"), "--reject", "none", "--json"]) == 0
    files = {p["file"] for p in json.loads(capsys.readouterr().out)["predictions"]}
    assert str(fresh / "red" / NEWLINE) in files and str(fresh / "red" / PIPE) in files
    assert str(fresh / "red" / "0.png") in files  # ordinary names exactly as before


def test_predict_explain_names_its_files_without_control_characters(trained, tmp_path):
    _, run, fresh = trained
    out = tmp_path / "explain"
    files = [fresh / "red" / NEWLINE, fresh / "red" / PIPE, fresh / "red" / "0.png"]
    assert predict.main([str(run), *map(str, files), "--explain", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000-new_line-gradcam.png", "0001-a_b-gradcam.png",
                                                     "0002-0-gradcam.png"]
