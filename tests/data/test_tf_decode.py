"""In-graph decoding (data/tf_decode.py) gives the pixels of the Pillow path (data/images.load_image)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from data.images import load_image
from data.resize import RESIZE_MODES
from data.tf_decode import MAX_PIXEL_DIFFERENCE, decode_image, decode_images, graph_decodable

ORIENTATION = 0x0112


def _photo() -> Image.Image:
    """A real photo (scikit-image's cat, 451x300), cropped so no side is a multiple of the other."""
    return Image.fromarray(skimage.data.chelsea()[:237, :331])


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def plain_files(tmp_path_factory):
    """One file per plain format and mode that training accepts and the graph must decode the same way."""
    folder = tmp_path_factory.mktemp("plain")
    photo = _photo()
    rgba = np.asarray(photo.convert("RGBA")).copy()
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1]).astype(np.uint8)[None]
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    grey16 = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    files = {
        "jpeg": _save(photo, folder / "photo.jpg", quality=90),
        "progressive jpeg": _save(photo, folder / "progressive.jpg", progressive=True),
        "grey jpeg": _save(photo.convert("L"), folder / "grey.jpg"),
        "png": _save(photo, folder / "photo.png"),
        "rgba png": _save(Image.fromarray(rgba), folder / "rgba.png"),
        "palette png": _save(palette, folder / "palette.png"),
        "transparent palette png": _save(palette, folder / "transparent.png", transparency=5),
        "grey png": _save(photo.convert("L"), folder / "grey.png"),
        "16-bit grey png": _save(grey16, folder / "grey16.png"),
        "bmp": _save(photo, folder / "photo.bmp"),
        "grey bmp": _save(photo.convert("L"), folder / "grey.bmp"),
        "palette bmp": _save(palette, folder / "palette.bmp"),  # was served as its palette indices, in grey
        "gif": _save(photo, folder / "photo.gif"),
    }
    for orientation in range(2, 9):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        files[f"jpeg exif {orientation}"] = _save(photo, folder / f"exif{orientation}.jpg", exif=exif)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    files["png exif 6"] = _save(photo, folder / "exif6.png", exif=exif)
    return files


@functools.lru_cache(maxsize=None)
def _compiled(size, mode):
    """Traced as a SavedModel traces it (graph mode: dtypes of Python scalars are fixed at tracing)."""
    return tf.function(lambda contents: decode_image(contents, (size, size), mode),
                       input_signature=[tf.TensorSpec((), tf.string)])


def _graph(path, size, mode):
    with open(path, "rb") as handle:
        return _compiled(size, mode)(tf.constant(handle.read())).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_graph_decoding_matches_pillow_on_every_plain_format(plain_files, mode):
    # 96: shrinking (JPEG drafts at 1/2 scale), 400: enlarging; both are not the file's size.
    for size in (96, 400):
        for name, path in plain_files.items():
            expected = load_image(str(path), (size, size), mode).astype(int)
            got = _graph(path, size, mode)
            assert got.shape == (size, size, 3) and got.dtype == np.uint8
            difference = np.abs(expected - got.astype(int)).max()
            assert difference <= MAX_PIXEL_DIFFERENCE, (name, size, mode, difference)


@pytest.mark.slow
def test_exif_rotation_is_applied_not_ignored(plain_files):
    upright = _graph(plain_files["jpeg"], 64, "stretch").astype(int)
    rotated = _graph(plain_files["jpeg exif 6"], 64, "stretch").astype(int)
    assert np.abs(upright - rotated).mean() > 10  # a rotated picture, not the same one


def test_real_sample_files_decode_identically():
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "data" / "samples" / "fashion_mnist" / "test"
    paths = sorted(sample.rglob("*.png"))[::20]
    contents = tf.constant([p.read_bytes() for p in paths])
    batch = decode_images(contents, (224, 224), "stretch").numpy()
    expected = np.stack([load_image(str(p), (224, 224)) for p in paths])
    assert batch.shape == (len(paths), 224, 224, 3)
    assert np.array_equal(batch, expected)


@pytest.mark.slow
def test_file_already_at_target_size_is_returned_untouched(tmp_path, make_image):
    path = make_image(tmp_path / "exact.png", size=(16, 16))
    for mode in RESIZE_MODES:
        assert np.array_equal(_graph(path, 16, mode), load_image(str(path), (16, 16), mode))


def test_formats_the_graph_cannot_decode_are_recognised(tmp_path, make_image):
    webp = make_image(tmp_path / "a.webp", size=(8, 8)).read_bytes()
    png = make_image(tmp_path / "a.png", size=(8, 8)).read_bytes()
    assert graph_decodable(png) == "png"
    assert graph_decodable(webp) is None
    with pytest.raises(tf.errors.InvalidArgumentError, match="Not a JPEG, PNG, GIF or BMP"):
        decode_image(tf.constant(webp), (8, 8), "stretch")
    # A 1-bit BMP: decode_bmp refused it with "Number of channels ... was 0", and since graph_decodable took it for
    # a BMP, evaluate.py --artifact and the export's parity check failed on it instead of using `pixels`.
    one_bit = make_image(tmp_path / "a.bmp", mode="1", size=(8, 8)).read_bytes()
    assert graph_decodable(one_bit) is None
    with pytest.raises(tf.errors.InvalidArgumentError, match="BMPs of 8, 24 or 32 bits.*pixels signature"):
        decode_image(tf.constant(one_bit), (8, 8), "stretch")


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="Received: 'zoom'"):
        decode_image(tf.constant(b""), (8, 8), "zoom")


@pytest.mark.slow
def test_transparent_gif_is_the_documented_exception(tmp_path):
    """Pillow composites a GIF's transparent pixels on white; TensorFlow's decoder leaves them black."""
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, 4:] = (10, 200, 10)
    image = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    path = _save(image, tmp_path / "transparent.gif", transparency=image.getpixel((6, 0)))
    assert load_image(str(path), (8, 8))[0, 6].tolist() == [255, 255, 255]
    assert _graph(path, 8, "stretch")[0, 6].tolist() == [0, 0, 0]
