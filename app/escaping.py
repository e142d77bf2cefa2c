"""Names from the file system (and class names, texts) shown safely: in plain-text lines, in Markdown
table cells and in the names of files metatune writes.

A file name may hold any character but '/' and NUL: a newline would split a printed line or a Markdown
table row in two, a '|' would add a table column, a right-to-left override would reorder what is shown.
Only those characters are escaped; letters of every script stay as they are.
"""

from __future__ import annotations

import re
import unicodedata

# Line breaks and other controls (Cc), the line and paragraph separators, lone surrogates (the bytes of a
# name that is not UTF-8, which a UTF-8 terminal cannot print) and the bidirectional embeddings,
# overrides and isolates. Other format characters (zero-width joiners, ...) belong to words of some scripts.
_INVISIBLE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that a file name on some system cannot hold, or that shells and URLs read specially.
_PATH_HOSTILE = set('/\\:*?"<>|')
MAX_STEM_BYTES = 150  # a file name holds 255 bytes; room for metatune's prefix and suffix


def _invisible(character: str) -> bool:
    return unicodedata.category(character) in _INVISIBLE_CATEGORIES or character in _BIDI_CONTROLS


def visible(text: str) -> str:
    """`text` with control characters written as Python escapes, as `repr` writes them (a newline as
    \\n, a tab as \\t, U+202E as \\u202e); everything else, non-ASCII letters included, unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if _invisible(c) else c for c in text)


def markdown_cell(value) -> str:
    """`value` for one Markdown table cell: backslashes and '|' escaped (a '|' would start another
    column), control characters written visibly (a newline would end the row)."""
    return visible(str(value).replace("\\", "\\\\").replace("|", "\\|"))


# What Markdown reads as markup inside running text: emphasis, code, links, HTML, headings, tables.
_MARKDOWN_SPECIAL = set("\\`*_[]<>#|~&")


def markdown_text(value) -> str:
    """`value` as running Markdown text that renders as itself (no accidental emphasis, links or HTML: every
    markup character backslash-escaped; control characters, as in a class name holding a newline, written
    visibly). markdown_cell escapes less: only what would break a table row."""
    return visible("".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in str(value)))


def markdown_code(value) -> str:
    """`value` as Markdown inline code that shows it whole, whatever backticks it holds (a path with one ended
    the code span early and turned the rest into Markdown): fenced by one backtick more than its longest run of
    them, padded with a space where it starts or ends with one (CommonMark strips one such space on each side);
    control characters written visibly."""
    text = visible(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def safe_file_stem(stem: str, max_bytes: int = MAX_STEM_BYTES) -> str:
    """`stem` fit to be part of a file name: control characters and path-hostile characters
    (/ \\ : * ? " < > |) replaced with '_', cut to `max_bytes` of UTF-8."""
    cleaned = "".join("_" if _invisible(c) or c in _PATH_HOSTILE else c for c in str(stem))
    encoded = cleaned.encode("utf-8")
    if len(encoded) > max_bytes:
        cleaned = encoded[:max_bytes].decode("utf-8", errors="ignore")
    return cleaned or "_"
