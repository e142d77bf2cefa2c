"""The user-facing contract for bad input, checked the same way everywhere: exactly one ERROR line, no
traceback, and the ERROR line naming what it must."""

from __future__ import annotations


def one_error_line(stderr: str, *fragments: str, marker: str = " ERROR ") -> str:
    """The only line of `stderr` holding `marker`, after checking there is exactly one, no traceback, and that it
    holds every fragment."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if marker in line]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
