"""Fonts for the pictures metatune draws: Pillow's TensorBoard images and matplotlib's report figures.

Pillow's bundled default font (Aileron) has unaccented Latin letters only: 'Ü', 'Ω' or 'Ж' came out as
boxes. Text is drawn with DejaVu Sans instead, which matplotlib ships (a dependency, so no system font
is needed) and which covers Latin, Greek and Cyrillic. For characters it lacks (Chinese, Japanese,
Korean, Thai, ...), the system's fonts are searched, once per process and only when such a character
is met, known broad fonts (Noto Sans CJK, Source Han Sans, WenQuanYi, ...) first, and each character is
drawn with the first font that has it (Pillow: `FallbackFont`; matplotlib: the fonts as its font family
list). A character that no font has is still drawn as a box, and one warning per output names the
texts it spoils (matplotlib's own "Glyph ... missing from font(s)" warnings are kept off stderr).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import unicodedata
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

# System fonts tried first when DejaVu Sans lacks a character, in this order (file-name fragments,
# lower case): broad CJK fonts of Linux, macOS and Windows, then GNU Unifont (most of the BMP).
PREFERRED_FALLBACKS = ("notosanscjk", "sourcehansans", "notosanssc", "notosansjp", "notosanstc", "notosanskr",
                       "wqy-zenhei", "wqy-microhei", "droidsansfallback", "pingfang", "hiragino", "msyh", "simhei",
                       "malgun", "yugoth", "arialuni", "unifont")
# Not fallbacks: other weights and styles of a family, monospaced and symbol fonts, colour emoji (bitmap
# strikes Pillow cannot scale) and "Last Resort" fonts, whose every glyph is a placeholder box.
_NOT_FALLBACK = re.compile(r"bold|italic|oblique|light|thin|black|heavy|medium|semi|demi|extra|ultra|condensed|"
                           r"narrow|mono|math|symbol|emoji|color|lastresort", re.IGNORECASE)
_GLYPH_WARNINGS = (r"Glyph \d+ .*missing from font", r"Matplotlib currently does not support .* natively")

_lock = threading.RLock()
_fallbacks: list[tuple[str, frozenset[int]]] = []  # (path, codepoints) of the system fonts added so far
_searched: set[str] = set()  # characters the system fonts were already searched for
_reported: dict[str, set[str]] = {}  # output -> characters a warning already named


@functools.lru_cache(maxsize=None)
def primary_font_path() -> str | None:
    """DejaVu Sans as matplotlib ships it (None if that file is missing)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=None)
def _codepoints(path: str) -> frozenset[int]:
    """Every character the font (its first face, for a collection) has a glyph for."""
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(path, fontNumber=0, lazy=True)
        try:
            return frozenset(font.getBestCmap() or ())
        finally:
            font.close()
    except Exception:  # an unreadable font file is no fallback
        return frozenset()


def _needs_glyph(character: str) -> bool:
    """Not a space, control, format character or lone surrogate (none of which a font draws)."""
    return not character.isspace() and unicodedata.category(character) not in ("Cc", "Cf", "Cs")


def _characters(text: str) -> set[str]:
    return {c for c in str(text) if _needs_glyph(c)}


def _system_font_files() -> list[str]:
    """The system's regular-style font files, known broad fallbacks first."""
    from matplotlib import font_manager

    files = [path for path in font_manager.findSystemFonts() if not _NOT_FALLBACK.search(Path(path).stem)]

    def rank(path: str) -> tuple[int, str]:
        name = Path(path).name.lower()
        return next((i for i, fragment in enumerate(PREFERRED_FALLBACKS) if fragment in name),
                    len(PREFERRED_FALLBACKS)), name

    return sorted(files, key=rank)


def _chain(text: str = "") -> list[tuple[str, frozenset[int]]]:
    """(path, codepoints) of DejaVu Sans, then of the system fonts that have characters of `text` (and
    of earlier texts) it lacks. The system fonts are searched once per character not yet met."""
    primary = primary_font_path()
    chain = [(primary, _codepoints(primary))] if primary else []
    with _lock:
        wanted = {c for c in _characters(text) if c not in _searched and not any(ord(c) in codes for _, codes in
                                                                                 chain + _fallbacks)}
        if wanted:
            _searched.update(wanted)
            known = {path for path, _ in _fallbacks} | ({primary} if primary else set())
            try:
                candidates = _system_font_files()
            except Exception as error:  # no font listing on this system: DejaVu Sans alone
                logger.debug("No system fonts listed: %s", error)
                candidates = []
            for path in candidates:
                if path in known:
                    continue
                codes = _codepoints(path)
                if any(ord(c) in codes for c in wanted):
                    _fallbacks.append((path, codes))
                    wanted = {c for c in wanted if ord(c) not in codes}
                    if not wanted:
                        break
        return chain + list(_fallbacks)


@functools.lru_cache(maxsize=64)
def _truetype(path: str | None, size: int):
    from PIL import ImageFont

    if path is None:  # matplotlib's DejaVu Sans missing: Pillow's bundled font, unaccented Latin only
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def pil_font(size: int):
    """DejaVu Sans at `size` px as a Pillow font (the font of every character it has)."""
    return _truetype(primary_font_path(), size)


class FallbackFont:
    """Pillow text of `size` px, each character drawn with the first font of the chain that has it
    (DejaVu Sans, then the system fonts found for characters it lacks), on one baseline. Has the
    `getlength` of a Pillow font (so text can be fitted and wrapped) and draws with `draw`."""

    def __init__(self, size: int):
        self.size = size
        self.primary = pil_font(size)

    def runs(self, text: str) -> list[tuple[object, str]]:
        """`text` cut into (Pillow font, characters) runs."""
        text = str(text)
        if text.isascii():
            return [(self.primary, text)] if text else []
        chain = _chain(text)
        runs: list[tuple[object, str]] = []
        for character in text:
            if _needs_glyph(character):
                path = next((path for path, codes in chain if ord(character) in codes), None)
                font = _truetype(path, self.size) if path is not None else self.primary  # no font: a box
            else:  # spaces go with the run they are in
                font = runs[-1][0] if runs else self.primary
            if runs and runs[-1][0] is font:
                runs[-1] = (font, runs[-1][1] + character)
            else:
                runs.append((font, character))
        return runs

    def getlength(self, text: str) -> float:
        return sum(font.getlength(part) for font, part in self.runs(text))

    def draw(self, draw, xy: tuple[float, float], text: str, fill="black") -> None:
        """Draw `text` with its top left at `xy`, as `ImageDraw.text` does with its default anchor."""
        x, y = xy
        baseline = y + self.primary.getmetrics()[0]
        for font, part in self.runs(text):
            draw.text((x, baseline), part, fill=fill, font=font, anchor="ls", **_left_to_right(font))
            x += font.getlength(part)


def _left_to_right(font) -> dict:
    """draw.text's arguments that lay a line out left to right whatever script it starts with. Pillow's Raqm layout
    otherwise takes the direction from the first letter: a caption starting with a Hebrew or Arabic class name
    ("שלום -> cat 0.89") was drawn mirrored ("cat 0.89 <- שלום"). Right-to-left words within stay right to left."""
    from PIL import ImageFont

    return {"direction": "ltr"} if getattr(font, "layout_engine", None) == ImageFont.Layout.RAQM else {}


@functools.lru_cache(maxsize=16)
def text_font(size: int) -> FallbackFont:
    """The FallbackFont of `size` px."""
    return FallbackFont(size)


def matplotlib_families(texts=()) -> list[str]:
    """A `font.family` list for matplotlib: the configured families, then the system fonts that have
    characters of `texts` those lack (added to matplotlib's font list, whose cache may predate them)."""
    import matplotlib
    from matplotlib import font_manager, ft2font

    chain = _chain("".join(str(t) for t in texts))
    families = list(matplotlib.rcParams["font.family"])
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    primary = primary_font_path()
    for path, _ in chain:
        if path == primary:
            continue
        try:
            if path not in known:
                font_manager.fontManager.addfont(path)
            name = font_manager.ttfFontProperty(ft2font.FT2Font(path)).name
        except Exception as error:  # a font matplotlib cannot read: not a fallback for it
            logger.debug("matplotlib cannot use %s: %s", path, error)
            continue
        if name not in families:
            families.append(name)
    return families


def missing(text: str) -> set[str]:
    """The characters of `text` that no font has (drawn as boxes by Pillow and matplotlib alike)."""
    if str(text).isascii():  # every font here has ASCII
        return set()
    chain = _chain(text)
    return {c for c in _characters(text) if not any(ord(c) in codes for _, codes in chain)}


def report_undrawable(texts, where: str, what: str = "class name") -> None:
    """One warning naming the `texts` with characters that no available font has (so `where` shows them
    as boxes); characters already named for `where` are not named again (per-epoch images stay quiet)."""
    spoiled, characters = [], set()
    with _lock:
        seen = _reported.setdefault(where, set())
        for text in dict.fromkeys(str(t) for t in texts):
            new = missing(text) - seen
            if new:
                spoiled.append(text)
                characters |= new
        seen |= characters
    if not spoiled:
        return
    from app.escaping import visible

    shown = ", ".join(f"'{visible(t)}'" for t in spoiled[:5])
    shown += f" and {len(spoiled) - 5} more" if len(spoiled) > 5 else ""
    glyphs = " ".join(f"{c} (U+{ord(c):04X})" for c in sorted(characters)[:8]) + (" ..." if len(characters) > 8 else "")
    logger.warning("No installed font has the characters %s of the %s(s) %s: they are drawn as boxes in %s. "
                   "A font that has them (e.g. Noto Sans CJK for Chinese, Japanese and Korean) draws them.",
                   glyphs, what, shown, where)


@contextlib.contextmanager
def matplotlib_text(texts, where: str, what: str = "class name"):
    """Draw a figure whose text includes `texts` (create and save it inside): the fallback fonts they need
    as matplotlib's font family list, matplotlib's missing-glyph warnings kept off stderr, and one
    warning of ours naming the texts with characters no font has."""
    import matplotlib

    texts = [str(t) for t in texts]
    with warnings.catch_warnings():
        for message in _GLYPH_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        with matplotlib.rc_context({"font.family": matplotlib_families(texts)}):
            yield
    report_undrawable(texts, where, what=what)


def fit(text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis only if it does not fit in `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap into at most `max_lines` lines of `width` pixels (the last one shortened if needed)."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [" ".join(lines[max_lines - 1:])]
    return [fit(line, font, width) for line in lines]
