"""TensorBoard's pictures are readable: full class names, captions wrapped instead of cut, bounded size."""

import numpy as np
from PIL import Image

from app.tensorboard_logging import GRID_TILE, _captioned_tile, _font, _wrap, confusion_image

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
