"""Text from the file system (paths, class names, file contents) written so that one log or terminal line
shows it whole: control characters as Python escapes, undecodable bytes as \\xNN.

A file name may hold any character but '/' and NUL: a newline would split a printed line in two, a
right-to-left override would reorder what is shown, a carriage return would overwrite it. Only those
characters are escaped; letters of every script stay as they are. Here rather than in app/escaping.py (which
adds Markdown and file-name rules on top) because data/ logs paths too and never imports app/.
"""

from __future__ import annotations

import unicodedata

# Line breaks and other controls (Cc), the line and paragraph separators, lone surrogates (the bytes of a
# name that is not UTF-8, which a UTF-8 terminal cannot print) and the bidirectional embeddings,
# overrides and isolates. Other format characters (zero-width joiners, ...) belong to words of some scripts.
_INVISIBLE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def invisible(character: str) -> bool:
    return unicodedata.category(character) in _INVISIBLE_CATEGORIES or character in _BIDI_CONTROLS


def visible(text) -> str:
    """`text` with control characters written as Python escapes, as `repr` writes them (a newline as
    \\n, a tab as \\t, U+202E as \\u202e); everything else, non-ASCII letters included, unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if invisible(c) else c for c in text)


def shown_path(path) -> str:
    """`path` printable and encodable whatever its bytes: undecodable ones written as \\xNN, control
    characters (a newline in a file name) as escapes, so that the line naming it stays one line."""
    return visible(str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def first_few(items: list[str], shown: int = 10) -> str:
    """The first `shown` items, comma-separated, with "and N more" for the rest: a message names a few classes or
    files, not all of a long list."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
