"""Decode one image file into the RGB uint8 array every other stage expects.

Pillow rather than `tf.io.decode_image`: TensorFlow cannot read TIFF or WebP,
ignores EXIF orientation and drops alpha instead of compositing it. Training,
evaluation and prediction all go through `load_image`, so a picture is seen
exactly the same way at every stage (no training/serving skew).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
WHITE = (255, 255, 255)
RESIZE_MODES = ("stretch", "pad", "crop")
EXIF_ORIENTATION_TAG = 0x0112
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, EXIF orientation applied; transparent areas composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in SIXTEEN_BIT_MODES:
        # 16/32-bit grey: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 0 else 1.0
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


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
    elif mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"animated ({image.n_frames} frames): first frame used")
    return notes


def inspect_image_bytes(raw: bytes) -> tuple[bool, list[str], str]:
    """Fully decode an image file's bytes: (usable, conversion notes, reason it is unusable)."""
    if not raw:
        return False, [], "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(raw)) as image:
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
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        return False, f"cannot read file ({error.strerror or error})"
    ok, _, reason = inspect_image_bytes(raw)
    return ok, reason


def fit_to_size(rgb: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """Resize to (height, width): stretch, pad (letterbox on black) or crop (centre)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {mode!r}")
    height, width = size
    if rgb.size == (width, height):
        return rgb
    if mode == "stretch":
        return rgb.resize((width, height), Image.Resampling.BILINEAR)
    if mode == "pad":
        return ImageOps.pad(rgb, (width, height), Image.Resampling.BILINEAR, color=0 if rgb.mode == "L" else (0, 0, 0))
    return ImageOps.fit(rgb, (width, height), Image.Resampling.BILINEAR)


def load_image(path: str, image_size: tuple[int, int], resize: str = "stretch") -> np.ndarray:
    """Read `path` and return a (height, width, 3) uint8 array of `image_size`."""
    height, width = image_size
    with Image.open(path) as image:
        image.draft("RGB", (width, height))  # JPEG: decode at a reduced scale when much larger
        return np.asarray(fit_to_size(to_rgb(image), image_size, resize), dtype=np.uint8)


def fit_decoded_batch(images: np.ndarray, sizes: np.ndarray, image_size: tuple[int, int],
                      resize: str = "stretch") -> np.ndarray:
    """`fit_to_size` for a padded batch of decoded RGB images: uint8 [batch, h_max, w_max, 3] whose
    image i fills its top-left sizes[i] = (h, w) -> uint8 [batch, height, width, 3].

    Why per batch: the pipeline decodes plain files with TensorFlow (no GIL, no Python per file)
    and resizes here with the very Pillow call `load_image` makes, so the pixels are the same;
    one Python call per batch instead of one per file (Pillow's resampling releases the GIL).
    An image already of the target size is returned untouched, as `load_image` returns it."""
    height, width = image_size
    out = np.empty((len(images), height, width, 3), np.uint8)
    for i, (image, (h, w)) in enumerate(zip(images, sizes)):
        pixels = image[:h, :w]
        if _is_grey(pixels):
            # Pillow resamples every band with the same weights and rounding, so one band of a grey
            # image resized alone gives each RGB band's pixels exactly, for a third of the work.
            out[i] = np.asarray(fit_to_size(Image.fromarray(pixels[..., 0]), image_size, resize))[..., np.newaxis]
        else:
            out[i] = np.asarray(fit_to_size(Image.fromarray(pixels), image_size, resize))
    return out


def _is_grey(pixels: np.ndarray) -> bool:
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]))
