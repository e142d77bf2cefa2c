"""report.md and confusion_matrix.png with awkward names: tables keep their rows and columns whatever a
file or class name holds, and class names in any script are drawn without warnings on stderr."""

import json
import logging
import re
import warnings

import numpy as np
import pytest

from app import fonts
from app.label_issue_run import label_issues_section
from app.report import plot_confusion_matrix, render_comparison, render_report

PIPE, NEWLINE = "a|b.png", "new\nline.png"


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split on the '|' that no backslash escapes."""
    assert row.startswith("| ") and row.endswith(" |"), row
    parts, current, i = [], "", 1
    while i < len(row) - 1:
        if row[i] == "\\":
            current += row[i:i + 2]
            i += 2
            continue
        if row[i] == "|":
            parts.append(current.strip())
            current = ""
        else:
            current += row[i]
        i += 1
    return parts + [current.strip()]


def table(report: str, header: str) -> list[list[str]]:
    """The rows (as cells) of the table whose header row starts with `header`."""
    lines = report.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(cells(line))
    return rows


def _metrics(class_names):
    n = len(class_names)
    return {"ci95": {"accuracy": [0.1, 0.9], "macro_f1": [0.1, 0.9]},
            "calibration": {"fitted_temperature": None, "temperature_applied": False},
            "num_examples": 4, "class_names": class_names, "accuracy": 0.5, "k": 2, "top_k_accuracy": 1.0,
            "macro_f1": 0.5, "weighted_f1": 0.5, "ece": 0.1,
            "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for name in class_names},
            "confusion_matrix": (np.ones((n, n), int) + np.eye(n, dtype=int)).tolist()}


def test_report_tables_escape_pipes_and_newlines_in_names():
    classes = ["re|d", "gre\nen", "Ünïcødé 类"]
    worst = [{"file": f"/data/re|d/{PIPE}", "true": "re|d", "predicted": "gre\nen", "confidence": 0.9},
             {"file": f"/data/gre\nen/{NEWLINE}", "true": "gre\nen", "predicted": "Ünïcødé 类", "confidence": 0.8}]
    report = render_report(_metrics(classes), {"run_dir": "/runs/x", "data_dir": "/data", "split_description": "all"},
                           worst)
    per_class = table(report, "| class |")
    assert [row[0] for row in per_class] == ["re\\|d", "gre\\nen", "Ünïcødé 类"]
    assert all(len(row) == 5 for row in per_class)
    mistakes = table(report, "| file |")
    assert mistakes == [["/data/re\\|d/a\\|b.png", "re\\|d", "gre\\nen", "0.900"],
                        ["/data/gre\\nen/new\\nline.png", "gre\\nen", "Ünïcødé 类", "0.800"]]
    pairs = report.split("## Most confused pairs", 1)[1].split("##", 1)[0]
    assert "- gre\\nen predicted as re\\|d: 1" in pairs.split("\n")  # one line per pair

    comparison = render_comparison([{"run": "/runs/a|b", "backbone": "tiny", "strategy": "linear", "num_examples": 4,
                                     "accuracy": 0.5, "ci95": {"accuracy": [0.1, 0.9]}, "macro_f1": 0.5, "ece": 0.1}])
    assert cells(comparison.split("\n")[2])[0] == "/runs/a\\|b"


def test_label_issue_table_escapes_names(tmp_path):
    (tmp_path / "data" / "re|d").mkdir(parents=True)
    odd = [tmp_path / "data" / "re|d" / PIPE, tmp_path / "data" / "re|d" / NEWLINE]
    for path in odd:
        path.write_text("a text", encoding="utf-8")
    issues = [{"path": str(path), "given": "re|d", "suggested": "gre\nen", "score": 0.9} for path in odd]
    (tmp_path / "data_report.json").write_text(json.dumps({"label_issues": issues, "label_issues_note": "test"}))
    section = label_issues_section(tmp_path, "text", 16, "stretch", tmp_path)
    rows = table(section, "| score |")
    assert len(rows) == 2 and all(len(row) == 4 for row in rows)
    assert rows[1][1].endswith("re\\|d/new\\nline.png") and rows[1][3] == "gre\\nen"


def test_confusion_matrix_png_names_in_any_script_without_warnings_on_stderr(tmp_path, caplog, capfd, monkeypatch):
    monkeypatch.setattr(fonts, "_reported", {})
    names = ["Ünïcødé 类", "Ωmega Жук", "café|crème", "new\nline"]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="app.fonts"):
        warnings.simplefilter("always")
        plot_confusion_matrix(np.ones((4, 4), int), names, tmp_path / "confusion_matrix.png")
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert "Glyph" not in capfd.readouterr().err
    ours = [r.getMessage() for r in caplog.records if "drawn as boxes" in r.getMessage()]
    if fonts.missing("类"):  # no CJK font here: one warning of ours, naming the class, not matplotlib's per glyph
        assert len(ours) == 1 and "'Ünïcødé 类'" in ours[0] and "confusion_matrix.png" in ours[0]
        assert "Ωmega" not in ours[0] and "U+7C7B" in ours[0]
    else:  # a CJK font is installed: matplotlib falls back to it, nothing to warn about
        assert not ours
    assert fonts.missing("Ünïcødé Ωmega Жук café crème") == set()


def test_matplotlib_falls_back_to_a_system_font_that_has_the_characters():
    thai = "ภาษาไทย"
    if fonts.missing(thai):
        pytest.skip("no font with Thai letters on this system")
    families = fonts.matplotlib_families([thai])
    assert len(families) > 1  # the configured family, then the font that has Thai letters
    from matplotlib import font_manager

    paths = [font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
             for family in families[1:]]
    assert any(ord("ภ") in fonts._codepoints(path) for path in paths)
    assert re.match(r"^[\w ]+$", families[-1])


def test_label_issue_section_says_which_listed_files_were_left_out_of_training(tmp_path):
    paths = [tmp_path / f"{i}.txt" for i in range(3)]
    for path in paths:
        path.write_text("a text", encoding="utf-8")
    issues = [{"path": str(path), "given": "a", "suggested": "b", "score": 0.9 - i / 10} for i, path in enumerate(paths)]
    (tmp_path / "data_report.json").write_text(json.dumps({"label_issues": issues, "label_issues_note": "test",
                                                           "label_issues_excluded": [str(paths[0]), str(paths[1])]}))
    section = label_issues_section(tmp_path, "text", 16, "stretch", tmp_path)
    assert "2 of them were left out of training and validation" in section
    assert "| looks like | left out of training |" in section
    assert [row[-1] for row in table(section, "| score |")] == ["yes", "yes", "no"]


def test_open_set_section_writes_a_newline_in_the_unknown_folder_name_escaped():
    from app.open_set_evaluation import render_open_set

    result = {"unknown_dir": "/data/un\nknown", "num_unknown": 3, "num_known": 4, "score": "energy", "auroc": 0.9,
              "fpr_at_95_tpr": 0.2, "threshold": 1.5, "reject_recall": 0.95, "known_accepted": 1.0,
              "unknown_rejected": 0.5, "accuracy_with_rejection": 0.7, "known_accuracy": 0.75,
              "known_accuracy_when_accepted": 0.75, "auroc_by_score": {"energy": 0.9}}
    section = render_open_set(result)
    assert "- Unknown folder: `/data/un\\nknown` (3 files), against the 4 evaluation files above" in section.split("\n")


def test_no_accepted_known_file_is_null_in_metrics_json_and_n_a_in_the_report(tmp_path):
    """known_accuracy_when_accepted was NaN when the threshold accepted no known file: metrics.json then held NaN,
    which is not JSON (jq and JavaScript refuse the whole file)."""
    from app import run_dir as rd
    from app.open_set_evaluation import open_set_metrics, render_open_set

    metrics = open_set_metrics([2.0, 3.0], [4.0, 5.0], threshold=1.0, known_correct=[True, False])
    assert metrics["known_accuracy_when_accepted"] is None and metrics["known_accepted"] == 0.0
    result = {"unknown_dir": "/data/unknown", "score": "energy", "reject_recall": 0.95,
              "auroc_by_score": {"energy": metrics["auroc"], "knn": float("nan")}, **metrics}
    line = next(line for line in render_open_set(result).split("\n") if "known files only" in line)
    assert line.endswith("0.5000 (closed set), n/a on the accepted ones")
    assert "knn n/a" in render_open_set(result)

    rd.write_json(tmp_path / "metrics.json", {"open_set": result, "inf": float("inf"), "f32": np.float32("nan")})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    written = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)  # strict, as jq reads it
    assert written["open_set"]["known_accuracy_when_accepted"] is None
    assert written["open_set"]["auroc_by_score"]["knn"] is None and written["inf"] is None and written["f32"] is None
    assert written["open_set"]["auroc"] == metrics["auroc"]
