"""Which decoder an image file takes: TensorFlow's native ops (fast, in the tf.data graph) or Pillow.

Why: Pillow inside `tf.numpy_function` holds the GIL and pays a Python call per file, so a
decoding epoch ran at a third of `image_dataset_from_directory`'s speed. Plain files (the bulk
of real folders) need none of what only Pillow does well, so they decode in the graph with
`data.tf_decode`, pixel-identical to `data.images.load_image` (tests/data/test_decode_parity.py).
A file is plain when its header (read by Pillow without decoding the pixels) shows:

- JPEG: baseline (not progressive), RGB or grey, no EXIF orientation other than 1;
- PNG: 8 bits per sample, RGB, grey or palette, no transparency (tRNS) and no alpha channel;
- GIF: one frame, no transparency (TensorFlow leaves transparent pixels black, Pillow white);
- BMP: uncompressed, 24/32-bit RGB or 8-bit grey.

Everything else (progressive JPEG, CMYK, EXIF rotation, alpha, 16-bit, WebP, TIFF, damaged
files) keeps the Pillow path.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from data.file_kinds import kind_reason
from data.images import EXIF_ORIENTATION_TAG, report_large_image

PILLOW = 0
PLAIN_KINDS = ("pillow", "jpeg", "png", "gif", "bmp")  # index = the route code data.tf_decode expects
_PNG_BIT_DEPTH_OFFSET = 24  # IHDR: 8-byte signature, chunk length and type, width, height, then bit depth
_BMP_BIT_COUNT_OFFSET = 28  # BITMAPINFOHEADER biBitCount
_routes: dict[tuple, int] = {}  # (path, size, mtime) -> route, so rebuilt pipelines do not reread headers


def decode_route(path: str) -> int:
    """PLAIN_KINDS index of the graph decoder for `path`, or PILLOW (0)."""
    try:
        stat = os.stat(path)
    except OSError:
        return PILLOW  # the Pillow path reports the problem as before
    if kind_reason(stat.st_mode) is not None:
        return PILLOW  # not opened to read its header: a FIFO's open() blocks (the Pillow path raises instead)
    key = (path, stat.st_size, stat.st_mtime_ns)
    route = _routes.get(key)
    if route is None:
        route = _routes[key] = _classify(path)
    return route


def decode_routes(paths: list[str]) -> np.ndarray:
    """decode_route for every path (header reads in threads: Pillow's file reads release the GIL)."""
    if len(paths) < 64:
        return np.asarray([decode_route(p) for p in paths], np.int32)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return np.fromiter(pool.map(decode_route, paths, chunksize=64), np.int32, count=len(paths))


def _classify(path: str) -> int:
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            report_large_image(path, image.size)
            return _plain_kind(image, handle)
    except Exception:  # noqa: BLE001  (Pillow raises many types for damaged files: they keep its path)
        return PILLOW


def _plain_kind(image: Image.Image, handle) -> int:
    if "transparency" in image.info:
        return PILLOW
    if image.format == "JPEG":
        plain = (image.mode in ("RGB", "L") and not image.info.get("progressive")
                 and not image.info.get("progression") and image.getexif().get(EXIF_ORIENTATION_TAG, 1) in (0, 1))
    elif image.format == "PNG":
        # Any eXIf chunk sends the file to Pillow: Pillow's PNG getexif() decodes the whole image
        # to find one stored after the pixel data, which would cost more than the decode it saves.
        plain = (image.mode in ("RGB", "L", "P") and _header_byte(handle, _PNG_BIT_DEPTH_OFFSET) == 8
                 and b"eXIf" not in handle.read())
    elif image.format == "GIF":
        plain = image.mode in ("P", "L") and not getattr(image, "is_animated", False)
    elif image.format == "BMP":
        bits = _header_byte(handle, _BMP_BIT_COUNT_OFFSET)
        plain = image.info.get("compression", 0) == 0 and (
            (image.mode == "RGB" and bits in (24, 32)) or (image.mode == "L" and bits == 8))
    else:
        return PILLOW
    return PLAIN_KINDS.index(image.format.lower()) if plain else PILLOW


def _header_byte(handle, offset: int) -> int:
    handle.seek(offset)
    value = handle.read(1)
    return value[0] if value else -1
