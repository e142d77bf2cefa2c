import logging
import os
from pathlib import Path

from app.input_files import collect_inputs
from data.scan import MAX_SKIP_WARNINGS


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_many_skipped_files_are_named_up_to_a_limit_then_counted(tmp_path):
    for i in range(MAX_SKIP_WARNINGS + 5):
        (tmp_path / f"{i:02d}.txt").write_text("not an image")
    (tmp_path / "notes.md").write_text("x")
    handler = _Records()
    logger = logging.getLogger("data.scan")  # warn_skipped: the scan and the inputs warn alike
    logger.addHandler(handler)
    try:
        usable, skipped = collect_inputs([str(tmp_path), str(tmp_path / "gone.png")], "image")
    finally:
        logger.removeHandler(handler)
    assert usable == [] and len(skipped) == MAX_SKIP_WARNINGS + 7  # every one is still returned
    named = [m for m in handler.messages if not m.startswith("Skipped 7 more")]
    assert len(named) == MAX_SKIP_WARNINGS and len(handler.messages) == MAX_SKIP_WARNINGS + 1
    summary = handler.messages[-1]
    assert "gone.png: no such file or folder" in handler.messages[0]
    assert summary == "Skipped 7 more files: 6 x not an image file (extension '.txt'); 1 x not an image file (extension '.md')"


def test_a_file_name_that_is_not_utf8_is_skipped_with_the_remedy(tmp_path, make_image):
    """TensorFlow cannot open a path that is not UTF-8 (Latin-1 names from an old archive): predict.py stopped with a
    traceback; the file is now skipped, named with its odd bytes escaped (printable, JSON- and log-safe)."""
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.png")
    make_image(latin1)
    make_image(tmp_path / "fine.png")
    usable, skipped = collect_inputs([str(tmp_path)], "image")
    assert [Path(e.path).name for e in usable] == ["fine.png"]
    assert [s.path for s in skipped] == [str(tmp_path / "caf\\xe9.png")]
    assert "not valid UTF-8" in skipped[0].reason and "convmv" in skipped[0].reason
    skipped[0].path.encode("utf-8")  # safe to log, to write as JSON and into report.md


def test_a_file_given_twice_is_collected_once_in_the_order_given(tmp_path, make_image):
    """A file named on its own and inside a folder given too was predicted twice (two rows of one file)."""
    for name in ("b.png", "a.png"):
        make_image(tmp_path / "folder" / name)
    usable, skipped = collect_inputs([str(tmp_path / "folder" / "b.png"), str(tmp_path / "folder"),
                                      str(tmp_path / "folder" / "." / "a.png")], "image")
    assert [Path(e.path).name for e in usable] == ["b.png", "a.png"] and skipped == []
    assert all(len(e.sha256) == 64 for e in usable)
