"""Decode one image file into the RGB uint8 array every other stage expects.

Pillow rather than `tf.io.decode_image`: TensorFlow cannot read TIFF or WebP,
ignores EXIF orientation and drops alpha instead of compositing it. Training,
evaluation and prediction all go through this one function, so a picture is
seen exactly the same way at every stage (no training/serving skew).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent areas are composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits instead of letting Pillow clip at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 0 else 1.0
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_image(path: str, image_size: tuple[int, int]) -> np.ndarray:
    """Read `path` and return a (height, width, 3) uint8 array resized to `image_size`."""
    height, width = image_size
    with Image.open(path) as image:
        image.draft("RGB", (width, height))  # JPEG: decode at reduced scale when much larger
        rgb = to_rgb(image)
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def check_image(path: str) -> tuple[bool, str]:
    """Fully decode `path`; return (usable, reason why not)."""
    try:
        with Image.open(path) as image:
            image.load()
            to_rgb(image)
    except Image.DecompressionBombError as error:
        return False, f"decompression bomb: {error}"
    except Exception as error:  # Pillow raises many types for corrupt files
        return False, f"not a readable image ({type(error).__name__}: {error})"
    return True, ""
