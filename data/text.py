"""Text files (one example per file): encoding checks and reading.

Encoding detection uses charset-normalizer (already installed as a dependency of
requests) instead of guessing by hand.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

UTF8 = "utf-8"


@dataclass(frozen=True)
class TextInspection:
    usable: bool
    encoding: str  # codec to read the file with ("" when unusable)
    notes: tuple[str, ...]
    reason: str = ""


def inspect_text_bytes(raw: bytes) -> TextInspection:
    """Decide how to decode a text file: UTF-8 (with or without BOM), a detected encoding, or unusable."""
    if not raw:
        return TextInspection(False, "", (), "empty file (0 bytes)")
    if raw.startswith(codecs.BOM_UTF8):
        encoding, notes = "utf-8-sig", ("UTF-8 with BOM (BOM removed)",)
    else:
        encoding, notes = UTF8, ()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(raw).best()
        if best is None:
            return TextInspection(False, "", (), "not valid UTF-8 and no text encoding could be detected (binary file?)")
        encoding, notes = best.encoding, (f"not UTF-8: decoded as {best.encoding} (detected)",)
        text = raw.decode(encoding)
    if not text.strip():
        return TextInspection(False, "", (), "empty text (whitespace only)")
    return TextInspection(True, encoding, notes)


def read_text(path: str, encoding: str = UTF8) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode(encoding or UTF8)
