"""The one resize every stage uses (data/resize.py): what it keeps, what it averages, and that the
tf.data graph, a tf.function and the numpy entry point give the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data.resize import RESIZE_MODES, fit_array, fit_to_size, resize


def _noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_an_image_of_the_target_size_comes_back_untouched(mode):
    pixels = _noise(9, 13)
    np.testing.assert_array_equal(fit_array(pixels, (9, 13), mode), pixels)
    np.testing.assert_array_equal(fit_to_size(tf.constant(pixels), (9, 13), mode).numpy(), pixels)


def test_shrinking_by_an_integer_factor_of_two_or_more_averages_whole_blocks():
    pixels = _noise(24, 36)
    blocks = pixels.reshape(8, 3, 12, 3, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(fit_array(pixels, (8, 12)), np.floor(blocks + 0.5).astype(np.uint8))  # halves up


def test_a_fine_pattern_shrunk_a_lot_turns_grey_instead_of_aliasing():
    """One-pixel checkerboard, 96 -> 32 px: every output pixel covers 3x3 input pixels, 4 or 5 of them white."""
    board = ((np.indices((96, 96)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = fit_array(np.repeat(board[..., None], 3, axis=-1), (32, 32)).astype(int)
    assert set(np.unique(out)) == {113, 142}  # 4 / 9 * 255 and 5 / 9 * 255, rounded
    # TensorFlow's bilinear resize alone (what image_dataset_from_directory uses) samples one pixel of
    # each block and keeps the full-contrast pattern.
    aliased = tf.image.resize(board[..., None], (32, 32), "bilinear").numpy()
    assert aliased.max() - aliased.min() > 200


def test_enlarging_interpolates_between_neighbours():
    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[:, 1] = 200
    out = fit_array(pixels, (2, 8)).astype(int)
    assert (np.diff(out[0, :, 0]) >= 0).all()  # a ramp from the dark column to the bright one
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 200
    constant = np.full((5, 3, 3), 77, np.uint8)
    assert (fit_array(constant, (31, 17)) == 77).all()


def test_each_side_takes_its_own_method():
    """Width shrunk 4x (area), height enlarged 2x (bilinear): each column is its block's mean."""
    pixels = np.zeros((3, 16, 3), np.uint8)
    pixels[:, 4:8] = 100  # the second block of four columns
    out = fit_array(pixels, (6, 4)).astype(int)
    assert out.shape == (6, 4, 3)
    assert (out[:, 1] == 100).all() and (out[:, [0, 2, 3]] == 0).all()


def test_pad_letterboxes_on_black_and_crop_keeps_the_centre():
    wide = np.full((10, 40, 3), 200, np.uint8)
    wide[:, :10] = 50
    wide[:, 30:] = 50  # outer quarters darker
    padded = fit_array(wide, (16, 16), "pad")
    rows_with_content = np.flatnonzero(padded.max(axis=(1, 2)) > 0)
    assert rows_with_content.tolist() == list(range(6, 10))  # 40x10 -> 16x4, centred
    cropped = fit_array(wide, (16, 16), "crop")
    assert (cropped == 200).all()  # the centre 10x10 only: the darker quarters are cut away
    tall = np.full((40, 10, 3), 90, np.uint8)
    padded = fit_array(tall, (16, 16), "pad")
    assert np.flatnonzero(padded.max(axis=(0, 2)) > 0).tolist() == list(range(6, 10))


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_the_graph_and_numpy_give_the_same_pixels(mode):
    images = [_noise(h, w, seed) for seed, (h, w) in enumerate([(7, 5), (50, 31), (100, 130), (33, 200)])]
    expected = [fit_array(image, (24, 20), mode) for image in images]
    dataset = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    got = list(dataset.map(lambda x: fit_to_size(x, (24, 20), mode)).as_numpy_iterator())
    for a, b in zip(got, expected):
        assert a.dtype == np.uint8 and a.shape == (24, 20, 3)
        np.testing.assert_array_equal(a, b)


def test_resize_accepts_tensor_sizes_and_unknown_modes_are_refused():
    out = resize(tf.constant(_noise(10, 10)), (tf.constant(4), tf.constant(7)))
    assert out.shape == (4, 7, 3) and out.dtype == tf.uint8
    with pytest.raises(ValueError, match="resize mode must be one of .*'zoom'"):
        fit_to_size(tf.constant(_noise(4, 4)), (2, 2), "zoom")
