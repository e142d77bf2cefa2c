"""A reader that goes away (`predict.py RUN_DIR DIR | head`) ends a command quietly, not with a traceback."""

import os
import sys

import pytest

from app.cli import SIGPIPE_STATUS, run_safely


def _closed_pipe_as_stdout(monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: writes fail with EPIPE (Python ignores SIGPIPE)
    stream = open(write_end, "w", encoding="utf-8")  # block-buffered, as a piped stdout is
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


@pytest.mark.parametrize("lines", [5000, 3])  # more than a pipe holds (the print fails); a few (the flush at exit)
def test_a_closed_stdout_ends_the_command_quietly_with_sigpipes_status(monkeypatch, lines):
    stream = _closed_pipe_as_stdout(monkeypatch)

    def command() -> int:
        for i in range(lines):
            print(f"/data/file{i}.png: cat 0.900, dog 0.100")
        return 0

    try:
        assert run_safely(command) == SIGPIPE_STATUS
        print("after", flush=True)  # stdout now goes to /dev/null: Python's flush at exit cannot fail again
    finally:
        stream.close()


def test_another_pipes_error_is_not_taken_for_a_closed_stdout(monkeypatch, capsys):
    def command() -> int:
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a child process's pipe; stdout is fine

    with pytest.raises(BrokenPipeError):
        run_safely(command)
