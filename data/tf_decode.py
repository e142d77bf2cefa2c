"""Decode and resize encoded image files with TensorFlow ops only, as `data.images.load_image` does.

Why: an exported SavedModel must take the bytes of an image file and decode them inside its
graph (a server has no Pillow and no metatune), and a later training fast path can decode in
tf.data without `tf.numpy_function`. Either way the pixels must be the ones training saw, or
the model meets pictures it was never trained on (training/serving skew). So this module
re-implements, op for op, what the Pillow path does:

- JPEG: the reduced-scale decode `Image.draft` picks (libjpeg's 1/2, 1/4, 1/8 DCT scaling,
  when the file is at least twice the target size), the accurate integer IDCT Pillow uses,
  then the EXIF orientation (APP1 "Exif" block, tag 0x0112) as `ImageOps.exif_transpose`.
- PNG: palette, grey, 1/2/4/16-bit expansion by libpng; transparency (alpha channel, or a
  palette with a tRNS chunk) composited on white; 16-bit grey scaled to 8 bits by the same
  rule as `data.images.to_rgb`; the orientation of an eXIf chunk.
- GIF: the first frame. BMP: 24/32-bit, and 8-bit through its palette (grey or colour).
- Resizing: `data.resize.fit_to_size`, the resize every path uses.

Measured against `load_image` (tests/data/test_tf_decode.py: photos and synthetic files,
every resize mode, upscaling and downscaling, EXIF orientations 2..8, progressive JPEG,
palette / alpha / transparent-palette / grey / 16-bit grey PNG, grey and palette BMP, GIF): identical,
`MAX_PIXEL_DIFFERENCE` = 0 per channel value. The match follows libjpeg-turbo's integer IDCT
in both libraries. Not reproduced
(the graph decodes these files, but the pixels differ from training): transparent GIFs
(TensorFlow fills transparent pixels with black, Pillow composites them on white), CMYK JPEGs.
WebP and TIFF cannot be decoded by TensorFlow:
`graph_decodable` tells them apart before a file is sent.
"""

from __future__ import annotations

import tensorflow as tf

from data.resize import RESIZE_MODES, fit_to_size

# Largest per-channel difference to `data.images.load_image` on the formats above (see the
# module docstring); tests/data/test_tf_decode.py asserts it for every resize mode.
MAX_PIXEL_DIFFERENCE = 0
GRAPH_FORMATS = ("jpeg", "png", "gif", "bmp")
_MAGIC = (("jpeg", b"\xff\xd8\xff"), ("png", b"\x89PNG\r\n\x1a\n"), ("gif", b"GIF8"), ("bmp", b"BM"))
BMP_BITS = (8, 24, 32)  # the BMP bit depths TensorFlow's decode_bmp reads
_BMP_BIT_COUNT = 28  # BITMAPINFOHEADER biBitCount (uint16, little-endian)
_EXIF_BLOCK = 1 << 16  # an APP1 segment holds at most 64 KiB
_ORIENTATION_TAG = 0x0112


def graph_decodable(raw: bytes) -> str | None:
    """The format name when the graph can decode these file bytes (by their magic number), else None."""
    for name, magic in _MAGIC:
        if raw[:len(magic)] == magic:
            if name == "bmp" and int.from_bytes(raw[_BMP_BIT_COUNT:_BMP_BIT_COUNT + 2], "little") not in BMP_BITS:
                return None  # 1, 4 or 16-bit: TensorFlow's decode_bmp refuses them ("Number of channels ... 0")
            return name
    return None


def decode_images(contents: tf.Tensor, image_size: tuple[int, int], resize: str = "stretch") -> tf.Tensor:
    """A batch of encoded files (tf.string [batch]) -> uint8 [batch, height, width, 3]."""
    height, width = image_size
    return tf.map_fn(lambda one: decode_image(one, image_size, resize), contents,
                     fn_output_signature=tf.TensorSpec((height, width, 3), tf.uint8))


def decode_image(contents: tf.Tensor, image_size: tuple[int, int], resize: str = "stretch") -> tf.Tensor:
    """One encoded file (scalar tf.string) -> uint8 [height, width, 3], as `load_image` returns it."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {resize!r}")
    rgb = decode_rgb(contents, image_size)
    return fit_to_size(rgb, image_size, resize)


def decode_rgb(contents: tf.Tensor, draft_size: tuple[int, int]) -> tf.Tensor:
    """Encoded file -> uint8 [h, w, 3] before resizing (JPEG reduced as Pillow's draft for `draft_size`)."""
    def starts_with(magic: bytes):
        return tf.equal(tf.strings.substr(contents, 0, len(magic)), magic)

    def unsupported():
        check = tf.debugging.Assert(False, ["Not a JPEG, PNG, GIF or BMP file (the graph decodes only these; BMPs of "
                                            "8, 24 or 32 bits): decode it and send it to the pixels signature."])
        with tf.control_dependencies([check]):
            return tf.zeros((1, 1, 3), tf.uint8)

    def bmp_bits_supported():
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, _BMP_BIT_COUNT, 2), tf.uint8), tf.int32)
        bits = tf.reduce_sum(tf.pad(raw, [[0, 2 - tf.size(raw)]]) * tf.constant([1, 256]))
        return tf.reduce_any(tf.equal(bits, BMP_BITS))

    branches = {"jpeg": lambda: _decode_jpeg(contents, draft_size), "png": lambda: _decode_png(contents),
                "gif": lambda: tf.io.decode_gif(contents)[0], "bmp": lambda: _decode_bmp(contents)}
    # A 1, 4 or 16-bit BMP goes to `unsupported` (decode_bmp's own error named 0 channels, no remedy).
    cases = [(tf.logical_and(starts_with(magic), bmp_bits_supported()) if name == "bmp" else starts_with(magic),
              branches[name]) for name, magic in _MAGIC]
    image = tf.case(cases, default=unsupported, exclusive=False)
    image.set_shape((None, None, 3))
    return image


def decode_plain_rgb(contents: tf.Tensor, kind: tf.Tensor, draft_size: tuple[int, int],
                     kinds_present: tuple[int, ...] = (1, 2, 3, 4)) -> tf.Tensor:
    """A file `data.decode_route` found plain -> uint8 [h, w, 3] before resizing, as Pillow decodes it.

    `kind` is its `data.decode_route.PLAIN_KINDS` index (1: JPEG, 2: PNG, 3: GIF, 4: BMP). The file
    needs no EXIF rotation and has no transparency, so the checks `decode_rgb` makes in the graph
    for any file (the EXIF search alone costs more than decoding a small JPEG) are skipped.
    `kinds_present`: the kinds the caller can send (those of its files); the graph holds only their
    decoders, which makes it cheaper to instantiate (every new tf.data iterator does it: tens of
    milliseconds with every branch, a noticeable share of a small folder's epoch)."""
    decoders = {1: lambda: _decode_jpeg_drafted(contents, draft_size),
                2: lambda: tf.io.decode_png(contents, channels=3),
                3: lambda: tf.io.decode_gif(contents)[0],
                4: lambda: _decode_bmp(contents)}
    present = sorted(set(kinds_present))
    if len(present) == 1:
        image = decoders[present[0]]()
    else:
        branch = tf.searchsorted(tf.constant(present, tf.int32), tf.reshape(tf.cast(kind, tf.int32), (1,)))[0]
        image = tf.switch_case(branch, [decoders[k] for k in present])
    image.set_shape((None, None, 3))
    return image


def _decode_jpeg(contents, draft_size):
    image = _decode_jpeg_drafted(contents, draft_size)
    parts = tf.strings.split(contents, sep=b"Exif\x00\x00", maxsplit=1)
    return _apply_orientation(image, _tiff_orientation(parts[-1], found=tf.size(parts) > 1))


def _decode_jpeg_drafted(contents, draft_size):
    # Image.draft: scale = min(w // W, h // H), rounded down to 8, 4, 2 or 1 (libjpeg's DCT scaling).
    shape = tf.image.extract_jpeg_shape(contents)
    scale = tf.minimum(shape[1] // draft_size[1], shape[0] // draft_size[0])
    index = tf.reduce_sum(tf.cast(scale >= tf.constant([2, 4, 8], tf.int32), tf.int32))

    def decode(ratio):
        # INTEGER_ACCURATE: libjpeg's ISLOW IDCT, Pillow's default (TensorFlow's default is the fast one).
        return lambda: tf.io.decode_jpeg(contents, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")

    return tf.switch_case(index, [decode(1), decode(2), decode(4), decode(8)])


def _decode_png(contents):
    header = tf.io.decode_raw(tf.strings.substr(contents, 24, 2), tf.uint8)  # IHDR: bit depth, colour type
    bit_depth, colour_type = tf.cast(header[0], tf.int32), tf.cast(header[1], tf.int32)
    before_data = tf.strings.split(contents, sep=b"IDAT", maxsplit=1)[0]
    palette_transparency = tf.logical_and(tf.equal(colour_type, 3),
                                          tf.size(tf.strings.split(before_data, sep=b"tRNS", maxsplit=1)) > 1)
    # As data.images.to_rgb: only alpha channels and transparent palettes are composited; a
    # colour-key tRNS on grey or RGB images is ignored, as Pillow's convert("RGB") ignores it.
    has_alpha = tf.logical_or(tf.logical_or(tf.equal(colour_type, 4), tf.equal(colour_type, 6)), palette_transparency)
    sixteen_bit_grey = tf.logical_and(tf.equal(colour_type, 0), tf.equal(bit_depth, 16))

    def grey16():
        # to_rgb: 16-bit grey is scaled by 255/65535 when any value exceeds 255, then truncated.
        values = tf.cast(tf.io.decode_png(contents, channels=1, dtype=tf.uint16), tf.float64)
        scale = tf.where(tf.reduce_max(values) > 255.0, tf.constant(255.0 / 65535.0, tf.float64),
                         tf.constant(1.0, tf.float64))
        grey = tf.cast(tf.floor(tf.clip_by_value(values * scale, tf.constant(0.0, tf.float64), 255.0)), tf.uint8)
        return tf.image.grayscale_to_rgb(grey)

    image = tf.case([(sixteen_bit_grey, grey16),
                     (has_alpha, lambda: _composite_on_white(tf.io.decode_png(contents, channels=4)))],
                    default=lambda: tf.io.decode_png(contents, channels=3), exclusive=False)
    parts = tf.strings.split(contents, sep=b"eXIf", maxsplit=1)
    return _apply_orientation(image, _tiff_orientation(parts[-1], found=tf.size(parts) > 1))


def _decode_bmp(contents):
    image = tf.io.decode_bmp(contents)
    channels = tf.shape(image)[-1]
    return tf.cond(channels == 1, lambda: _bmp_palette_lookup(contents, image), lambda: image[..., :3])


def _bmp_palette_lookup(contents, indices):
    """An 8-bit BMP's colours: TensorFlow returns its palette indices as one grey channel, which is the picture
    only for a grey palette (entry i = (i, i, i)); a colour palette's pictures were served as grey nonsense
    (up to 178 levels off). Pillow looks each index up in the palette that follows the DIB header: B, G, R (and
    a reserved byte, except in the old 12-byte core header), as many entries as biClrUsed says (0: 256)."""
    def little_endian(offset, size):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, offset, size), tf.uint8), tf.int32)
        return tf.reduce_sum(raw * tf.constant([1, 256, 65536, 16777216][:size], tf.int32))

    header_size = little_endian(14, 4)
    entry = tf.where(tf.equal(header_size, 12), 3, 4)
    used = tf.where(tf.equal(header_size, 12), 0, little_endian(46, 4))
    count = tf.where(tf.logical_and(used > 0, used <= 256), used, 256)
    raw = tf.io.decode_raw(tf.strings.substr(contents, 14 + header_size, count * entry), tf.uint8)
    rows = tf.reshape(raw[:tf.size(raw) // entry * entry], [-1, entry])
    palette = tf.pad(tf.reverse(rows[:, :3], axis=[1]), [[0, 256 - tf.shape(rows)[0]], [0, 0]])  # BGR -> RGB
    return tf.gather(palette, tf.cast(indices[..., 0], tf.int32))


def _composite_on_white(rgba):
    """Image.alpha_composite(white, image) in integers: round(c * a / 255 + 255 * (1 - a / 255))."""
    rgba = tf.cast(rgba, tf.int32)
    colour, alpha = rgba[..., :3], rgba[..., 3:]
    blended = colour * alpha + 255 * (255 - alpha)
    return tf.cast((blended + 127) // 255, tf.uint8)


def _tiff_orientation(tiff, found):
    """The EXIF Orientation tag (1..8) of a TIFF block (the bytes after "Exif\\0\\0"); 1 when absent or invalid."""
    raw = tf.io.decode_raw(tf.strings.substr(tiff, 0, _EXIF_BLOCK), tf.uint8)
    data = tf.pad(tf.cast(raw, tf.int32), [[0, _EXIF_BLOCK + 16 - tf.size(raw)]])
    little = tf.logical_and(tf.equal(data[0], 0x49), tf.equal(data[1], 0x49))  # "II"
    big = tf.logical_and(tf.equal(data[0], 0x4D), tf.equal(data[1], 0x4D))  # "MM"

    def u16(offset):
        low, high = tf.gather(data, offset), tf.gather(data, offset + 1)
        return tf.where(little, low + 256 * high, 256 * low + high)

    def u32(offset):
        return tf.where(little, u16(offset) + 65536 * u16(offset + 2), 65536 * u16(offset) + u16(offset + 2))

    valid = tf.logical_and(tf.logical_and(found, tf.logical_or(little, big)), tf.equal(u16(2), 42))
    first_ifd = tf.clip_by_value(u32(4), 0, _EXIF_BLOCK - 2)
    count = tf.clip_by_value(u16(first_ifd), 0, (_EXIF_BLOCK - 2 - first_ifd) // 12)
    entries = first_ifd + 2 + 12 * tf.range(count)
    matches = tf.where(tf.equal(u16(entries), _ORIENTATION_TAG))[:, 0]
    value = tf.cond(tf.size(matches) > 0, lambda: u16(entries[matches[0]] + 8), lambda: tf.constant(1))
    return tf.where(tf.logical_and(valid, tf.logical_and(value >= 1, value <= 8)), value, tf.ones_like(value))


def _apply_orientation(image, orientation):
    """ImageOps.exif_transpose: orientation 2..8 -> the flip or rotation that shows the picture upright."""
    transposed = lambda: tf.transpose(image, (1, 0, 2))  # noqa: E731
    branches = [
        lambda: image, lambda: image,
        lambda: tf.image.flip_left_right(image),  # 2: FLIP_LEFT_RIGHT
        lambda: tf.image.rot90(image, 2),  # 3: ROTATE_180
        lambda: tf.image.flip_up_down(image),  # 4: FLIP_TOP_BOTTOM
        transposed,  # 5: TRANSPOSE
        lambda: tf.image.rot90(image, 3),  # 6: ROTATE_270 (Pillow turns counter-clockwise)
        lambda: tf.image.rot90(transposed(), 2),  # 7: TRANSVERSE
        lambda: tf.image.rot90(image, 1),  # 8: ROTATE_90
    ]
    return tf.switch_case(orientation, branches)
