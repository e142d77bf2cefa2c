"""Resize a decoded image to the model's input size: the one resize every stage uses.

Training batches (tf.data), evaluation, prediction, the exported SavedModel's graph and every
helper that shows a picture (`data.images.load_image`) call `fit_to_size`, so a file's pixels
are the same wherever it is seen (no training/serving skew), whichever decoder read it
(TensorFlow's for plain files, Pillow's for the rest: data/decode_route.py).

Why TensorFlow's resize ops and not Pillow's: TensorFlow's run inside the tf.data graph, in
parallel and without the GIL; Pillow's antialiased bilinear resampling cost about 0.45 ms of
CPU per 224x224 image, which held decoding epochs to about half the speed of
`keras.utils.image_dataset_from_directory` (BENCHMARKS.md, pipeline section). Why not
TensorFlow's bilinear resize alone (what `image_dataset_from_directory` does): it samples two
pixels per output pixel, so shrinking a picture to less than half its size skips pixels and
aliases. And why not `antialias=True`: that op (ScaleAndTranslate) halved the pipeline's speed.
So, per side:

- shrinking by 2x or more: area averaging (`ResizeArea`, a box filter over exactly the input
  pixels each output pixel covers) straight to the output size;
- otherwise (shrinking by less than 2x, or enlarging): bilinear with half-pixel centres.

The result is rounded (halves up) to uint8 once, at the end. A side already of the target size
keeps its pixels' values; an image of the target size comes back untouched.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

RESIZE_MODES = ("stretch", "pad", "crop")
# Recorded in every run's metadata (input_spec.resampling): runs trained before this resize
# (Pillow's antialiased bilinear) have none, and opening one says so (app/run_integrity.py).
RESAMPLING = "area+bilinear"


def fit_to_size(rgb: tf.Tensor, image_size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """uint8 [h, w, 3] -> uint8 [height, width, 3]: stretch, pad (letterbox on black) or crop (centre)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {mode!r}")
    height, width = image_size
    rgb = tf.convert_to_tensor(rgb, tf.uint8)
    shape = tf.shape(rgb)
    h, w = shape[0], shape[1]
    if mode == "stretch":
        fitted = resize(rgb, (height, width))
    elif mode == "crop":
        fitted = resize(_centre_crop(rgb, h, w, height, width), (height, width))
    else:
        fitted = _letterbox(rgb, h, w, height, width)
    return tf.ensure_shape(fitted, (height, width, 3))


def resize(rgb: tf.Tensor, size) -> tf.Tensor:
    """uint8 [h, w, 3] -> uint8 [*size, 3] (the module docstring says how)."""
    out_h, out_w = (tf.cast(s, tf.int32) for s in size)
    shape = tf.shape(rgb)
    in_h, in_w = shape[0], shape[1]
    mid_h = tf.where(in_h >= 2 * out_h, out_h, in_h)
    mid_w = tf.where(in_w >= 2 * out_w, out_w, in_w)
    reduced = tf.cond(tf.logical_or(mid_h < in_h, mid_w < in_w),
                      lambda: tf.image.resize(rgb, tf.stack([mid_h, mid_w]), method="area"),
                      lambda: tf.cast(rgb, tf.float32))
    # No branch for a side already of its size: bilinear with half-pixel centres then samples exactly
    # on the input pixels (weight 1), so the values come back unchanged, and a branch costs more to
    # set up (in every new tf.data iterator) than the copy it saves.
    resampled = tf.image.resize(reduced, tf.stack([out_h, out_w]), method="bilinear")
    # Bilinear and area weights are non-negative and sum to 1, so values stay in [0, 255]: adding 0.5 and
    # truncating rounds (halves up) in one pass instead of round + clip.
    return tf.cast(resampled + 0.5, tf.uint8)


def _centre_crop(rgb, h, w, height, width):
    """The largest centred box of the output's aspect ratio (whole pixels)."""
    wider = w * height > h * width  # compared in integers: no rounding decides which side is cut
    crop_w = tf.where(wider, tf.maximum(1, _round_div(h * width, height)), w)
    crop_h = tf.where(wider, h, tf.maximum(1, _round_div(w * height, width)))
    return tf.image.crop_to_bounding_box(rgb, (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w)


def _letterbox(rgb, h, w, height, width):
    """Resize to fit inside (height, width), keeping the aspect ratio, centred on black."""
    wider = w * height > h * width
    new_h = tf.where(wider, tf.maximum(1, _round_div(h * width, w)), height)
    new_w = tf.where(wider, width, tf.maximum(1, _round_div(w * height, h)))
    resized = resize(rgb, (new_h, new_w))
    return tf.image.pad_to_bounding_box(resized, (height - new_h) // 2, (width - new_w) // 2, height, width)


def _round_div(numerator, denominator):
    """round(numerator / denominator) for positive int32 tensors, halves up, in integers."""
    return (2 * numerator + denominator) // (2 * denominator)


@functools.lru_cache(maxsize=16)
def _fitter(image_size: tuple[int, int], mode: str):
    return tf.function(lambda rgb: fit_to_size(rgb, image_size, mode),
                       input_signature=[tf.TensorSpec((None, None, 3), tf.uint8)])


def fit_array(rgb: np.ndarray, image_size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """`fit_to_size` for a numpy uint8 [h, w, 3] array (the same ops, so the same pixels)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}. Received: {mode!r}")
    image_size = (int(image_size[0]), int(image_size[1]))
    if rgb.shape[:2] == image_size:
        return np.asarray(rgb, np.uint8)
    return _fitter(image_size, mode)(tf.constant(rgb, tf.uint8)).numpy()
