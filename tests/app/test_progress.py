"""Progress bars: drawn on a terminal only, and predict.py's only where its lines do not show the progress."""

from __future__ import annotations

import io
import sys

import pytest

from app.progress import input_progress


class _Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("stdout_terminal, stderr_terminal, drawn", [
    (False, True, True),  # predict.py RUN_DIR DIR > out.txt: the bar is all the terminal shows
    (True, True, False),  # the lines themselves show the progress (a bar would break them up)
    (False, False, False),  # a log file or a pipe: no bar
    (True, False, False),
])
def test_the_input_bar_is_drawn_only_where_nothing_else_shows_progress(monkeypatch, stdout_terminal,
                                                                       stderr_terminal, drawn):
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_terminal))
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_terminal))
    bar = input_progress(10, "Predicting")
    assert bar.disable is not drawn
    bar.update(10)
    bar.close()
    assert ("Predicting" in sys.stderr.getvalue()) is drawn
