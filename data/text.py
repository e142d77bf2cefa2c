"""Text files (one example per file): encoding checks and reading.

Encoding detection uses charset-normalizer (already installed as a dependency of
requests) instead of guessing by hand.
"""

from __future__ import annotations

import codecs
import unicodedata
from dataclasses import dataclass

from data.file_kinds import open_regular

UTF8 = "utf-8"


@dataclass(frozen=True)
class TextInspection:
    usable: bool
    encoding: str  # codec to read the file with ("" when unusable)
    notes: tuple[str, ...]
    reason: str = ""


def inspect_text_bytes(raw: bytes) -> TextInspection:
    """Decide how to decode a text file: UTF-8 (with or without BOM), a detected encoding, or unusable.
    Whether it is UTF-8 is judged on its first MAX_TEXT_BYTES, all that read_text_prefix reads: a stray byte past
    them (a UTF-8 file with one Latin-1 byte at its end) had the whole prefix decoded as cp1252, "café" read as
    "cafÃ©" in training and prediction alike."""
    if not raw:
        return TextInspection(False, "", (), "empty file (0 bytes)")
    cut, head = len(raw) > MAX_TEXT_BYTES, raw[:MAX_TEXT_BYTES]
    if raw.startswith(codecs.BOM_UTF8):
        encoding, notes = "utf-8-sig", ("UTF-8 with BOM (BOM removed)",)
    else:
        encoding, notes = UTF8, ()
    try:
        text = _decoded(head, encoding, cut)
    except UnicodeDecodeError:
        encoding = _legacy_encoding(raw)  # all of it: a detector given bytes cut inside a character misjudges them
        if encoding is None:
            return TextInspection(False, "", (), "not valid UTF-8 and no text encoding could be detected (binary file?)")
        notes = (f"not UTF-8: decoded as {encoding} (detected)",)
        text = _decoded(head, encoding, cut)
    if "\x00" in text:  # valid UTF-8 never holds NUL in text: UTF-16 without its byte-order mark, or binary
        encoding = _bomless_utf16(raw)
        if encoding is None:
            return TextInspection(False, "", (), "holds NUL characters (a binary file, or UTF-16 without a "
                                                 "byte-order mark that does not read as text)")
        notes = (f"UTF-16 without a byte-order mark: decoded as {encoding} (detected)",)
        text = _decoded(head, encoding, cut)
    if not text.strip():
        return TextInspection(False, "", (), "empty text (whitespace only)")
    if not holds_words(text):
        return TextInspection(False, "", (), f"empty text ({INVISIBLE_ONLY})")
    if cut:  # said here too, so `train.py --check` lists it before any training reads it
        notes += (f"over {MAX_TEXT_BYTES // 1024} KiB: read up to its first {MAX_TEXT_BYTES // 1024} KiB",)
    return TextInspection(True, encoding, notes)


INVISIBLE_ONLY = "only control or invisible format characters, such as zero-width spaces, which the tokenizer drops"


def holds_words(text: str) -> bool:
    """Whether `text` holds a character the model reads: keras-hub's WordPiece splits on, and drops, whitespace,
    control (Cc) and format (Cf) characters, so a text of only those (zero-width spaces, \\x01) reached the
    model as no token at all, as an empty file would, and was trained on or predicted as such."""
    return any(not char.isspace() and unicodedata.category(char) not in ("Cc", "Cf") for char in text)


def _decoded(raw: bytes, encoding: str, cut: bool) -> str:
    """`raw` decoded as read_text_prefix decodes it: a multi-byte character split by the cut is dropped, not an
    error."""
    return codecs.getincrementaldecoder(encoding)().decode(raw, final=not cut)


def _bomless_utf16(raw: bytes) -> str | None:
    """utf-16-le / utf-16-be when the bytes are that without a byte-order mark: mostly-Latin text puts a NUL in
    every other byte (the high byte of each character), on the odd positions for little-endian."""
    if len(raw) % 2:
        return None
    odd, even = raw[1::2].count(0), raw[0::2].count(0)
    half = len(raw) // 2
    # Mostly on one side; a few on the other are characters whose low byte is 0 (U+4E00, U+0100, ...).
    encoding = ("utf-16-le" if odd >= 0.3 * half and even <= 0.05 * half else
                "utf-16-be" if even >= 0.3 * half and odd <= 0.05 * half else None)
    if encoding is None:
        return None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        return None
    return encoding if "\x00" not in text and _looks_like_text(text) else None


def _looks_like_text(text: str) -> bool:
    return not any(ord(ch) < 32 and ch not in "\t\n\r\f" for ch in text)


def _looks_like_western_text(text: str) -> bool:
    """Real cp1252 text is mostly ASCII with isolated accented letters and no control characters;
    other legacy encodings (CJK, Cyrillic) read as cp1252 give long runs of accented gibberish."""
    if not _looks_like_text(text):
        return False
    letters = [ch for ch in text if ch.isalpha()]
    non_ascii = sum(1 for ch in letters if ord(ch) > 127)
    return bool(letters) and non_ascii / len(letters) < 0.3


def _legacy_encoding(raw: bytes) -> str | None:
    """cp1252 when the bytes read as plausible Western text (charset detectors often mistake
    short cp1252 text for Central European or CJK codecs), else charset-normalizer's guess."""
    try:
        if _looks_like_western_text(raw.decode("cp1252")):
            return "cp1252"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    return best.encoding if best is not None else None


# Texts are cut to the model's sequence length (at most 512 tokens for BERT-style backbones)
# anyway; reading more only costs memory and tokenizer time: one 50 MB file among short texts
# took 5.2 GB and 7x the time. 256 KiB is 500 bytes per token at 512 tokens.
MAX_TEXT_BYTES = 256 * 1024


def read_text(path: str, encoding: str = UTF8) -> str:
    """The text of `path` (its first MAX_TEXT_BYTES)."""
    return read_text_prefix(path, encoding)[0]


def read_text_prefix(path: str, encoding: str = UTF8) -> tuple[str, bool]:
    """The text of `path` (its first MAX_TEXT_BYTES), and whether it was cut there. A file the data doctor
    accepted that became a FIFO or device since raises NotRegularFileError rather than blocking."""
    with open_regular(path) as handle:
        raw = handle.read(MAX_TEXT_BYTES + 1)
    cut = len(raw) > MAX_TEXT_BYTES
    # An incremental decoder drops a multi-byte character split by the cut instead of failing on it.
    return codecs.getincrementaldecoder(encoding or UTF8)().decode(raw[:MAX_TEXT_BYTES], final=not cut), cut
