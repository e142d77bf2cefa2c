"""What a run writes for people, with awkward inputs: report.md renders every name as itself (parsed with a real
Markdown parser), its PNGs and TensorBoard's images stay bounded however many classes, captions keep their order
whatever script a name starts with, and a damaged logs/ folder gives one ERROR line instead of a traceback."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image, ImageDraw

from app import fonts
from app.errors import UserError
from app.escaping import visible
from app.report import MAX_PANEL_INCHES, NO_VALUE, confusion_figure, plot_confusion_matrix, render_report
from error_lines import one_error_line
from tensorboard_events import _events, tensor_steps

AWKWARD = ["__background__", "**bold**", "<unk>", "[x](http://e)", "`tick`", "a|b", "# head", "- dash", "1. first",
           "amp & co", "new\nline", "עברית", "🐱 cat", "x" * 300]
MARKUP_TOKENS = {"strong_open", "em_open", "html_inline", "html_block", "link_open", "code_inline", "heading_open",
                 "s_open", "image"}


def _metrics(names, matrix=None):
    n = len(names)
    matrix = np.asarray(matrix if matrix is not None else np.ones((n, n), int) + np.eye(n, dtype=int))
    support = matrix.sum(axis=1)
    return {"ci95": {"accuracy": [0.1, 0.9], "macro_f1": [0.1, 0.9]},
            "calibration": {"fitted_temperature": None, "temperature_applied": False},
            "num_examples": int(matrix.sum()), "class_names": names, "accuracy": 0.5, "k": 2, "top_k_accuracy": 1.0,
            "macro_f1": 0.5, "weighted_f1": 0.5, "ece": 0.1,
            "per_class": {name: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": int(support[i])}
                          for i, name in enumerate(names)},
            "confusion_matrix": matrix.tolist()}


def _parse(report: str):
    return MarkdownIt("commonmark").enable("table").parse(report)


def _tables(tokens) -> list[list[list[str]]]:
    """Each table's rows (header first) as the plain text of their cells."""
    tables, row = [], None
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            tables[-1].append(row)
            row = None
        elif token.type == "inline" and row is not None:
            row.append("".join(child.content for child in token.children))
    return tables


def _section(report: str, heading: str) -> str:
    return report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _markup(tokens) -> set[str]:
    found = set()
    for token in tokens:
        found |= {token.type} & MARKUP_TOKENS
        found |= {child.type for child in token.children or ()} & MARKUP_TOKENS
    return found


# ------------------------------------------------------------------------------------------------ report.md

def test_every_name_renders_as_itself_in_tables_and_lists():
    matrix = np.eye(len(AWKWARD), dtype=int) + np.roll(np.eye(len(AWKWARD), dtype=int), 1, axis=1) * 3
    worst = [{"file": f"/data/{name}/_draft_ *1*.png", "true": name, "predicted": AWKWARD[0], "confidence": 0.9}
             for name in AWKWARD]
    report = render_report(_metrics(AWKWARD, matrix), {"run_dir": "/runs/__x__", "data_dir": "/data",
                                                       "split_description": "all"}, worst)
    tokens = _parse(report)
    per_class, mistakes = _tables(tokens)
    assert [row[0] for row in per_class[1:]] == [visible(name) for name in AWKWARD]  # one row each, no extra column
    assert all(len(row) == 5 for row in per_class)
    assert [row[:3] for row in mistakes[1:]] == [[visible(w["file"]), visible(w["true"]), visible(w["predicted"])]
                                                 for w in worst]
    # No name turned into bold, a link, HTML, code, a heading or a nested list, in the tables or the pairs' list.
    assert not _markup(_parse(_section(report, "Per class")))
    assert not _markup(_parse(_section(report, "Most confident mistakes").split("All mistakes")[0]))
    pairs = _parse(_section(report, "Most confused pairs"))
    assert not _markup(pairs)
    items = [token for token in pairs if token.type == "list_item_open"]
    assert len(items) == 5 and not [t for t in pairs if t.type in ("ordered_list_open", "heading_open")]
    assert [t.type for t in pairs].count("bullet_list_open") == 1
    heading = _parse(report)[1]
    assert "".join(child.content for child in heading.children) == "Evaluation: /runs/__x__"  # not /runs/<b>x</b>


def test_classes_without_files_show_no_score_instead_of_zero():
    names = ["present", "absent", "predicted only"]
    matrix = [[2, 0, 1], [0, 0, 0], [0, 0, 0]]
    report = render_report(_metrics(names, matrix), {"run_dir": "/r", "data_dir": "/d", "split_description": "all"},
                           [])
    rows = {row[0]: row[1:] for row in _tables(_parse(report))[0][1:]}
    assert rows["present"][:2] == ["0.000", "0.000"]  # scores it has (zeros from _metrics) stay numbers
    assert rows["absent"][:3] == [NO_VALUE, NO_VALUE, f"{NO_VALUE} (no files, never predicted: not in macro F1)"]
    assert rows["predicted only"][:3] == ["0.000", NO_VALUE, "0.000"]  # in macro F1, with F1 0: it was predicted


def test_all_predictions_correct_leaves_no_empty_table():
    names = ["a", "b"]
    report = render_report(_metrics(names, np.eye(2, dtype=int) * 3), {"run_dir": "/r", "data_dir": "/d",
                                                                         "split_description": "all"}, [])
    assert len(_tables(_parse(report))) == 1  # the per-class table only
    assert _section(report, "Most confident mistakes").strip().startswith("- none")
    assert _section(report, "Most confused pairs").strip() == "- none"


# ------------------------------------------------------------------------------------------ confusion matrix

def test_a_very_long_class_name_keeps_the_figure_laid_out(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion_matrix(np.eye(3, dtype=int), ["short", "y" * 300, "other"], tmp_path / "cm.png")
    assert not [w for w in caught if "constrained_layout" in str(w.message)]
    width, height = Image.open(tmp_path / "cm.png").size
    assert width <= 2000 and height <= 1200


@pytest.mark.parametrize("classes", [60, 400])
def test_confusion_matrix_figure_is_bounded_for_many_classes(classes):
    import matplotlib.pyplot as plt

    names = [f"class {i} with a longish name" for i in range(classes)]
    figure = confusion_figure(np.ones((classes, classes), int), names)
    try:
        width, height = figure.get_size_inches()
        assert width <= 2 * MAX_PANEL_INCHES + 1.5 + 1e-6 and height <= MAX_PANEL_INCHES + 1.0 + 1e-6
        labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
        assert labels[0] == names[0]
        if classes == 60:
            assert labels == names  # every class named while cells hold a label each
        else:
            assert 100 <= len(labels) < classes  # every k-th class named, and said so in the title
            assert "named" in figure.axes[0].get_title()
    finally:
        plt.close(figure)


def test_tensorboard_confusion_image_is_bounded_and_quick_for_many_classes():
    from app.tensorboard_logging import MAX_MATRIX_SIDE, confusion_image

    started = time.monotonic()
    image = confusion_image(np.eye(500, dtype=int) * 3, [f"class {i}" for i in range(500)])
    assert time.monotonic() - started < 5  # drawn every epoch: 10 s and a gigabyte before
    assert max(image.shape[:2]) <= MAX_MATRIX_SIDE + 400 and image.dtype == np.uint8
    small = confusion_image(np.eye(10, dtype=int), [f"c{i}" for i in range(10)])
    assert 300 <= small.shape[1] <= 800  # few classes: the large, counted cells as before


# ----------------------------------------------------------------------------------------------- captions

def test_a_caption_starting_with_a_right_to_left_name_keeps_its_order():
    font = fonts.text_font(14)
    name = "שלום"
    if fonts.missing(name):
        pytest.skip("no font with Hebrew letters")

    def drawn(text: str) -> np.ndarray:
        image = Image.new("L", (300, 24), 255)
        font.draw(ImageDraw.Draw(image), (2, 2), text)
        return np.asarray(image)

    width = int(font.getlength(name)) + 2
    # The caption's left part is the Hebrew name, drawn as on its own; mirrored, "cat 0.89" came first.
    assert np.array_equal(drawn(f"{name} -> cat 0.89")[:, :width], drawn(name)[:, :width])


# ---------------------------------------------------------------------------------------- TensorBoard text

def test_worst_mistake_texts_keep_the_table_and_say_when_cut(tmp_path):
    import tensorflow as tf

    from app.tensorboard_logging import excerpt, log_worst_mistakes

    texts = ["pipe | `code` ```fence``` \x07bell\x1b[31m\r\nnext\tline <b>x</b> **b**", "long " * 2000, "plain"]
    examples = [SimpleNamespace(label=i % 2, path=f"/d/{i}.txt") for i in range(3)]
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2], [0.9, 0.1]])  # the first two wrong
    names = ["<b>tag</b>", "a|b"]
    assert log_worst_mistakes(tmp_path / "logs", examples, probabilities, names, "text", 16, "stretch", texts) == 2
    (event,) = _events(tmp_path, "validation", "worst_mistakes")
    table = tf.make_ndarray(event.tensor_proto).item().decode()
    tokens = _parse(table)
    (rows,) = _tables(tokens)
    assert len(rows) == 3 and all(len(row) == 2 for row in rows)
    assert rows[1] == [visible("true <b>tag</b> / pred a|b 0.90"), visible(texts[0])]
    assert rows[2][1] == excerpt(texts[1]) and rows[2][1].endswith("…") and len(rows[2][1]) == 200
    assert not _markup(tokens)


# ------------------------------------------------------------------------------- a damaged logs/ folder

def test_an_events_folder_that_is_a_file_is_one_user_error(tmp_path):
    from app.tensorboard_logging import _writer, check_events_folders

    logs = tmp_path / "logs"
    logs.write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_events_folders(logs)
    with pytest.raises(UserError, match="logs"):  # TensorFlow's FailedPreconditionError before
        _writer(logs, "train")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="does not exist"):
        check_events_folders(tmp_path / "link")
    check_events_folders(tmp_path / "absent", tmp_path)  # missing (made by the writer) or a folder: fine


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import train
    from colour_folders import write_colour_folder

    root = tmp_path_factory.mktemp("report-bugbash")
    data = write_colour_folder(root / "data", per_class=6, size=16, seed=0)
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "2",
                       "--refit", "no", "--output", str(run)]) == 0
    return run, data


def _one_error(captured: str) -> None:
    one_error_line(captured, "TensorBoard", "a file, not a folder")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_evaluating_twice_keeps_one_set_of_events_and_hides_the_earlier_from_tensorboard(trained, monkeypatch):
    import evaluate
    from app import report_staging

    run, data = trained
    seen = []
    swap = report_staging._swap_in

    def swap_and_look(staging, out_dir):  # while the new evaluation is written, before it goes in place
        seen.extend(p.name for p in (run / "logs").rglob("*") if p.name.startswith(".tmp-"))
        return swap(staging, out_dir)

    monkeypatch.setattr(report_staging, "_swap_in", swap_and_look)
    for _ in range(2):
        assert evaluate.main([str(run), str(data), "--name", "twice", "--bootstrap", "10"]) == 0
    assert seen == []  # TensorBoard listed a hidden .tmp-PID-eval_twice folder as a run of its own
    events = list((run / "logs" / "eval_twice").glob("*tfevents*"))
    assert len(events) == 1
    assert tensor_steps(run, "eval_twice", "explanations/gradcam") == [0]  # once, not once per evaluation
    assert not list((run / "eval").glob(".tmp-*"))


def test_a_logs_file_stops_evaluate_and_resume_with_one_error_line(trained, tmp_path, capfd):
    import evaluate
    import train
    from app import run_dir as rd

    run, data = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    shutil.rmtree(damaged / "logs")
    (damaged / "logs").write_text("someone's notes")
    before = _files(damaged)
    capfd.readouterr()
    assert evaluate.main([str(damaged), str(data), "--name", "x", "--bootstrap", "10"]) == 2
    _one_error(capfd.readouterr().err)
    assert _files(damaged) == before and not (damaged / "eval" / "x").exists()

    (damaged / rd.INCOMPLETE_MARKER).write_text("")
    before = _files(damaged)
    assert train.main(["--resume", str(damaged)]) == 2
    _one_error(capfd.readouterr().err)
    assert _files(damaged) == before
