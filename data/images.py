"""Decode one image file into the RGB uint8 array every other stage expects.

Pillow rather than `tf.io.decode_image`: TensorFlow cannot read TIFF or WebP,
ignores EXIF orientation and drops alpha instead of compositing it. The plain files
TensorFlow does decode like Pillow take its faster path in the pipeline
(data/decode_route.py, data/tf_decode.py); every path resizes with `data.resize`, so a
picture is seen exactly the same way at every stage (no training/serving skew).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data.file_kinds import open_regular, read_regular_bytes

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
WHITE = (255, 255, 255)
EXIF_ORIENTATION_TAG = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


# Pillow warns (DecompressionBombWarning) when it opens an image over Image.MAX_IMAGE_PIXELS (about 89 million
# pixels) and refuses one over twice that (DecompressionBombError: the data doctor skips the file with that reason).
# The warning reached stderr raw, a line of Pillow's source after it, naming no file, from whichever thread opened
# it; report_large_image says it once per file through logging instead. Ignored by category once, here: a filter
# set around each open (warnings.catch_warnings) is not thread-safe, and the doctor and tf.data open in threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_reported_large: set[str] = set()
_reported_large_lock = threading.Lock()


def report_large_image(path: str, size: tuple[int, int]) -> None:
    """One warning per file and process for an image whose `size` (width, height) Pillow would warn about (the
    doctor, the decoder choice and the decode all open it)."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, size[0]) * max(1, size[1])  # as Pillow counts them
    if not path or limit is None or pixels <= limit:
        return
    with _reported_large_lock:
        if path in _reported_large:
            return
        _reported_large.add(path)
    logger.warning("Large image %s: %s pixels (%dx%d), over Pillow's decompression-bomb warning limit of %s "
                   "pixels; decoded anyway, which takes time and memory (an image over %s pixels is skipped).",
                   path, f"{pixels:,}", size[0], size[1], f"{limit:,}", f"{2 * limit:,}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, EXIF orientation applied; transparent areas composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "F":
        image = _float_to_grey(image)
    if image.mode in SIXTEEN_BIT_MODES:
        # 16/32-bit grey: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 0 else 1.0
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def _float_to_grey(image: Image.Image) -> Image.Image:
    """A 32-bit float image (TIFF mode F) as 8-bit grey: values in 0-1 scaled by 255, values in 0-255 kept.
    Pillow's own conversion clips (0-1 data became black); other ranges have no meaning to guess, so the
    file is refused (the data doctor lists it as unusable, with this reason)."""
    array = np.asarray(image, dtype=np.float64)
    if array.size == 0:
        return Image.fromarray(array.astype(np.uint8), mode="L")
    if not np.isfinite(array).all():
        raise ValueError("a floating-point image holding NaN or infinite values; convert it to 8-bit")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 255.0:
        raise ValueError(f"a floating-point image with values from {low:g} to {high:g}, neither 0-1 nor 0-255; "
                         "convert it to 8-bit")
    scale = 255.0 if high <= 1.0 else 1.0
    return Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8), mode="L")


def conversion_notes(image: Image.Image) -> list[str]:
    """What `to_rgb` will do to this (opened, not yet converted) image, for the data report."""
    notes = []
    orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    if orientation not in (0, 1):
        notes.append(f"rotated by EXIF orientation {orientation}")
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        notes.append("palette with transparency composited on white")
    elif mode == "P":
        notes.append("palette converted to RGB")
    elif mode in ("RGBA", "LA", "PA"):
        notes.append(f"{mode} transparency composited on white")
    elif mode in ("L", "1"):
        notes.append(f"grayscale ({mode}) converted to RGB")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode in SIXTEEN_BIT_MODES:
        notes.append(f"{mode} (16/32-bit) scaled to 8-bit RGB")
    elif mode == "F":
        notes.append("F (32-bit float) scaled to 8-bit RGB (0-1 times 255; 0-255 kept)")
    elif mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"animated ({image.n_frames} frames): first frame used")
    return notes


def inspect_image_bytes(raw: bytes, path: str = "") -> tuple[bool, list[str], str]:
    """Fully decode an image file's bytes: (usable, conversion notes, reason it is unusable). `path`: the file's
    name for the large-image warning (report_large_image)."""
    if not raw:
        return False, [], "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            report_large_image(path, image.size)
            notes = conversion_notes(image)
            image.load()
            to_rgb(image)
    except Image.DecompressionBombError as error:
        return False, [], f"decompression bomb: {error}"
    except UnidentifiedImageError:
        return False, [], "not a readable image (content is not a recognised image format)"
    except Exception as error:  # Pillow raises many types for corrupt files
        return False, [], f"not a readable image ({type(error).__name__}: {error})"
    return True, notes, ""


def check_image(path: str) -> tuple[bool, str]:
    """Fully decode `path`; return (usable, reason why not)."""
    raw, reason = read_regular_bytes(path)  # a FIFO's open() would block forever (data/file_kinds.py)
    if raw is None:
        return False, reason
    ok, _, reason = inspect_image_bytes(raw, path)
    return ok, reason


def decode_rgb(path: str, draft_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read `path` with Pillow: uint8 [h, w, 3] before resizing. With `draft_size` (height, width), a
    JPEG much larger than it is decoded at a reduced scale (libjpeg's 1/2, 1/4, 1/8 DCT scaling),
    as `data.tf_decode` does for the files TensorFlow decodes. A file the data doctor accepted that became a FIFO
    or device since raises NotRegularFileError rather than blocking."""
    with open_regular(path) as handle, Image.open(handle) as image:
        report_large_image(path, image.size)
        if draft_size is not None:
            image.draft("RGB", (draft_size[1], draft_size[0]))
        return np.asarray(to_rgb(image), dtype=np.uint8)


def load_image(path: str, image_size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """Read `path` and return a (height, width, 3) uint8 array of `image_size` (data/resize.py)."""
    # Imported here, not at the top: the resize is TensorFlow ops, and listing a folder and the data
    # doctor use this module's Pillow checks alone (a scan's process: about 110 MiB without
    # TensorFlow, 700 MiB with it).
    from data.resize import RESIZE_MODES, fit_array

    if resize not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {resize!r}")
    return fit_array(decode_rgb(path, image_size), image_size, resize)
