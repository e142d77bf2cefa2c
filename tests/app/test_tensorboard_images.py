"""TensorBoard's pictures are readable: full class names, captions wrapped instead of cut, bounded size."""

import numpy as np
import pytest
from PIL import Image

from app.fonts import pil_font as _font
from app.fonts import wrap as _wrap
from app.tensorboard_logging import GRID_TILE, _captioned_tile, confusion_image

FASHION = ["T-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def _ink_columns(band: np.ndarray) -> np.ndarray:
    return np.flatnonzero((band < 128).any(axis=(0, 2)))


def test_confusion_matrix_writes_every_class_name_in_full():
    matrix = np.diag(np.arange(1, 11)) + 1
    image = confusion_image(matrix, FASHION)
    font = _font(14)
    label_width = int(max(font.getlength(name) for name in FASHION)) + 12
    top = label_width + 8
    cell = (image.shape[0] - top - 28) // len(FASHION)
    for i, name in enumerate(FASHION):
        band = image[top + i * cell + 2: top + (i + 1) * cell - 2, :label_width]
        ink = _ink_columns(band)
        # The drawn row label is as wide as the whole name (a name cut to 4 letters would be far shorter).
        assert ink.size and ink[-1] - ink[0] >= 0.85 * font.getlength(name), name


def test_fifty_classes_stay_a_readable_size():
    names = [f"class {i:02d} with a long descriptive name" for i in range(50)]
    image = confusion_image(np.ones((50, 50), int), names)
    assert 800 <= image.shape[1] <= 1800 and 800 <= image.shape[0] <= 1800
    assert image.dtype == np.uint8 and image.shape[2] == 3


def test_captions_wrap_instead_of_being_cut():
    font = _font(14)
    caption = "true trouser / pred ankle_boot 0.93"
    lines = _wrap(caption, font, GRID_TILE - 6, 3)
    assert " ".join(lines) == caption  # every word kept
    assert all(font.getlength(line) <= GRID_TILE - 6 for line in lines)
    assert _wrap("trouser", font, GRID_TILE - 6, 3) == ["trouser"]
    squeezed = _wrap("a " * 200, font, 50, 2)
    assert len(squeezed) == 2 and squeezed[-1].endswith("…")
    tile = np.asarray(_captioned_tile(Image.new("RGB", (20, 20), "gray"), caption))
    assert tile.shape[1] == GRID_TILE and tile.shape[0] > GRID_TILE


# ------------------------------------------------------------------------- non-ASCII class names

ACCENTED = ["Ünïcødé", "Ωmega", "Жук", "café crème", "Ærøskøbing"]
NO_GLYPH = "\U0010fffd"  # a private-use character no font has: its glyph is the font's box


@pytest.fixture(autouse=True)
def fresh_font_warnings(monkeypatch):
    """Each test sees the warnings about undrawable characters that its own drawing gives."""
    from app import fonts

    monkeypatch.setattr(fonts, "_reported", {})


def _ink(image: np.ndarray) -> np.ndarray:
    return (image < 128).any(axis=2)


def test_the_font_has_accented_greek_and_cyrillic_letters():
    # Pillow's bundled font (what was drawn before) gives all of these the box of a missing glyph.
    font = _font(14)
    box = np.asarray(font.getmask(NO_GLYPH))
    for character in "ÜïøéΩЖæçñßŁ":
        mask = np.asarray(font.getmask(character))
        assert mask.shape != box.shape or not np.array_equal(mask, box), character


def test_confusion_matrix_draws_accented_names_not_boxes(caplog):
    from app import fonts

    def row_labels(names):
        image = confusion_image(np.eye(len(names), dtype=int), names)
        font = fonts.text_font(14)
        top = int(max(font.getlength(name) for name in names)) + 12 + 8
        return _ink(image[top:, :top - 8])

    drawn = row_labels(ACCENTED)
    # Every accented letter is in the font: no warning about characters drawn as boxes.
    assert not any("drawn as boxes" in r.getMessage() for r in caplog.records)
    boxes = row_labels([NO_GLYPH * len(name) for name in ACCENTED])
    assert drawn.any() and not np.array_equal(drawn, boxes)


def test_a_name_no_font_can_draw_is_named_once_in_a_warning(caplog, capfd):
    from app import fonts

    name = f"odd {NO_GLYPH} class"
    with caplog.at_level("WARNING", logger="app.fonts"):
        confusion_image(np.eye(2, dtype=int), [name, "plain"])
        confusion_image(np.eye(2, dtype=int), [name, "plain"])  # the next epoch: not warned again
    warned = [r.getMessage() for r in caplog.records if "drawn as boxes" in r.getMessage()]
    assert len(warned) == 1 and f"'{name}'" in warned[0] and "U+10FFFD" in warned[0] and "plain" not in warned[0]
    assert fonts.missing(name) == {NO_GLYPH} and fonts.missing("Ünïcødé Ωmega Жук") == set()
    assert "Glyph" not in capfd.readouterr().err


def test_a_system_font_draws_what_dejavu_lacks():
    from app import fonts

    thai = "ภาษาไทย"  # not in DejaVu Sans; in Noto Sans Thai where fonts-noto-core is installed
    if fonts.missing(thai):
        pytest.skip("no font with Thai letters on this system")
    font = fonts.text_font(14)
    assert {f for f, _ in font.runs(f"{thai} name")} != {font.primary}  # the Thai letters come from another font
    image = confusion_image(np.eye(2, dtype=int), [f"{thai} name", "plain"])
    assert image.shape[2] == 3


def test_a_newline_in_a_name_or_caption_is_drawn_as_an_escape():
    # Drawn as is, a newline would put the rest of the name on the next row's line.
    assert np.array_equal(confusion_image(np.eye(2, dtype=int), ["new\nline", "x"]),
                          confusion_image(np.eye(2, dtype=int), ["new\\nline", "x"]))
    blank = Image.new("RGB", (20, 20), "white")
    assert np.array_equal(np.asarray(_captioned_tile(blank, "true a\tb / pred new\nline 0.90")),
                          np.asarray(_captioned_tile(blank, "true a\\tb / pred new\\nline 0.90")))
