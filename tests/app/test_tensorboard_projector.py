"""The projector's metadata.tsv keeps one row per point and two columns whatever the class and file names hold."""

from types import SimpleNamespace

import numpy as np

from app.tensorboard_logging import write_projector

CLASSES = ["tab\there", "new\nline", "plain"]
FILES = ["a\tb.txt", "c\nd.txt", "carriage\rreturn.txt"]


def test_tabs_and_line_breaks_in_names_do_not_shift_rows_or_columns(tmp_path):
    examples = [SimpleNamespace(label=i, path=str(tmp_path / name)) for i, name in enumerate(FILES)]
    write_projector(tmp_path, np.zeros((3, 4), np.float32), examples, CLASSES, "text", 16, "stretch")
    rows = [line.split("\t") for line in (tmp_path / "metadata.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows == [["label", "file"], ["tab\\there", "a\\tb.txt"], ["new\\nline", "c\\nd.txt"],
                    ["plain", "carriage\\rreturn.txt"]]
