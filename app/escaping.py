"""Names from the file system (and class names, texts) shown safely: in plain-text lines, in Markdown
table cells and in the names of files metatune writes.

A file name may hold any character but '/' and NUL: a newline would split a printed line or a Markdown
table row in two, a '|' would add a table column, a right-to-left override would reorder what is shown.
Only those characters are escaped; letters of every script stay as they are.
"""

from __future__ import annotations

import re

from data.shown_text import invisible, visible

# Characters that a file name on some system cannot hold, or that shells and URLs read specially.
_PATH_HOSTILE = set('/\\:*?"<>|')
MAX_STEM_BYTES = 150  # a file name holds 255 bytes; room for metatune's prefix and suffix


# What Markdown reads as markup inside running text: emphasis, code, links, HTML, headings, tables.
_MARKDOWN_SPECIAL = set("\\`*_[]<>#|~&")


def markdown_text(value) -> str:
    """`value` as running Markdown text that renders as itself (no accidental emphasis, links or HTML: every
    markup character backslash-escaped; control characters, as in a class name holding a newline, written
    visibly). A leading list marker (`- `, `+ `, `1. `, `1) `) is escaped too: after a list item's "- " it
    started a nested list."""
    escaped = "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in str(value))
    return visible(_LIST_MARKER.sub(lambda m: m[1] + "\\" + m[2], escaped, count=1))


_LIST_MARKER = re.compile(r"^(\d{0,9})([-+.)])(?=\s|$)")  # "- ", "+ ", "12. ", "3) ", or only the marker


def markdown_cell(value) -> str:
    """`value` for one Markdown table cell, rendered as itself: a '|' escaped (it would start another column),
    control characters written visibly (a newline would end the row), and the other markup characters escaped
    as markdown_text does. Escaping only the first two showed a class named `__background__` in bold, one named
    `<unk>` not at all (an HTML tag) and `[x](y)` as a link."""
    return markdown_text(value)


def terminal_cell(value) -> str:
    """`value` for one cell of a Markdown table printed to a terminal (evaluate.py --compare), which is read as
    it is more often than rendered: only what would break the row is escaped (backslashes, '|', control
    characters), so a backbone `tiny_image` does not print as `tiny\\_image`."""
    return visible(str(value).replace("\\", "\\\\").replace("|", "\\|"))


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
    cleaned = "".join("_" if invisible(c) or c in _PATH_HOSTILE else c for c in str(stem))
    encoded = cleaned.encode("utf-8")
    if len(encoded) > max_bytes:
        cleaned = encoded[:max_bytes].decode("utf-8", errors="ignore")
    return cleaned or "_"
