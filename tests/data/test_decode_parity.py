"""The decode fast path: which files TensorFlow decodes (data/decode_route.py), and that every file
gives the pixels of `data.images.load_image` through the pipeline training, evaluation and
prediction share (data/pipeline.image_dataset, app/inputs.example_dataset)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.inputs import example_dataset
from data.decode_route import PILLOW, PLAIN_KINDS, decode_route, decode_routes
from data.images import load_image
from data.resize import RESIZE_MODES
from data.pipeline import image_dataset
from data.records import Example

SIZE = 24  # the target side: the 80x60 files shrink (JPEG: 1/2-scale draft), the 20x15 ones grow
ORIENTATION = 0x0112


def _picture(width=80, height=60) -> Image.Image:
    """A smooth colour picture with detail (so resampling and JPEG decoding differences would show)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1)
    noise = np.random.default_rng(0).integers(0, 40, rgb.shape)
    return Image.fromarray(np.clip(rgb + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: (path, expected route)} for every kind of file the data doctor accepts."""
    folder = tmp_path_factory.mktemp("kinds")
    picture, small = _picture(), _picture(20, 15)
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright_exif = Image.Exif()
    upright_exif[ORIENTATION] = 1
    big = _picture(SIZE * 5 + 8, 70)
    jpeg, png, gif, bmp = (PLAIN_KINDS.index(k) for k in ("jpeg", "png", "gif", "bmp"))
    made = {
        "baseline jpeg": (picture, "a.jpg", {"quality": 90}, jpeg),
        "small jpeg (enlarged)": (small, "small.jpg", {}, jpeg),
        "grey jpeg": (picture.convert("L"), "grey.jpg", {}, jpeg),
        "jpeg, EXIF orientation 1": (picture, "upright.jpg", {"exif": upright_exif}, jpeg),
        "progressive jpeg": (picture, "progressive.jpg", {"progressive": True}, PILLOW),
        "jpeg, EXIF orientation 6": (picture, "rotated.jpg", {"exif": exif}, PILLOW),
        "cmyk jpeg": (picture.convert("CMYK"), "cmyk.jpg", {}, PILLOW),
        "png": (picture, "a.png", {}, png),
        "grey png": (picture.convert("L"), "grey.png", {}, png),
        "palette png": (palette, "palette.png", {}, png),
        "16-bit grey png": (Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257), "grey16.png",
                            {}, PILLOW),
        "transparent palette png": (palette, "transparent.png", {"transparency": 3}, PILLOW),
        "rgba png": (rgba, "rgba.png", {}, PILLOW),
        "png, eXIf orientation 6": (picture, "rotated.png", {"exif": exif}, PILLOW),
        "big png (shrunk by area averaging)": (big, "big.png", {}, png),
        "big jpeg (1/4-scale draft, then area averaging)": (big.resize((SIZE * 9, SIZE * 9)), "big.jpg", {}, jpeg),
        "bmp": (picture, "a.bmp", {}, bmp),
        "grey bmp": (picture.convert("L"), "grey.bmp", {}, bmp),
        "gif": (picture, "a.gif", {}, gif),
        "transparent gif": (palette, "transparent.gif", {"transparency": 3}, PILLOW),
        "webp": (picture, "a.webp", {}, PILLOW),
        "tiff": (picture, "a.tif", {}, PILLOW),
    }
    out = {}
    for name, (image, filename, options, route) in made.items():
        path = folder / filename
        image.save(path, **options)
        out[name] = (str(path), route)
    return out


def test_each_kind_of_file_takes_the_documented_path(files):
    got = {name: PLAIN_KINDS[decode_route(path)] for name, (path, _) in files.items()}
    expected = {name: PLAIN_KINDS[route] for name, (_, route) in files.items()}
    assert got == expected
    paths = [path for path, _ in files.values()]
    assert decode_routes(paths * 4).tolist() == [route for _, route in files.values()] * 4


@pytest.mark.parametrize("resize", RESIZE_MODES)
def test_both_paths_give_the_pixels_of_load_image(files, resize):
    names = list(files)
    paths = [files[name][0] for name in names]
    expected = np.stack([load_image(p, (SIZE, SIZE), resize) for p in paths])
    # Batches of 5 mix graph-decoded and Pillow-decoded files, as real folders do.
    got = np.concatenate(list(image_dataset(paths, None, (SIZE, SIZE), 5, resize=resize).as_numpy_iterator()))
    assert got.dtype == np.uint8 and got.shape == expected.shape
    different = [name for name, a, b in zip(names, got, expected) if not np.array_equal(a, b)]
    assert different == []


@pytest.mark.parametrize("resize", RESIZE_MODES)
def test_cached_labelled_and_prediction_inputs_match_too(files, resize):
    """Training (labelled, cached, shuffled) and evaluation/prediction (app/inputs) see the same pixels, in every
    resize mode."""
    paths = [path for path, _ in files.values()]
    expected = {i: load_image(p, (SIZE, SIZE), resize) for i, p in enumerate(paths)}
    training = image_dataset(paths, list(range(len(paths))), (SIZE, SIZE), 4, shuffle=True, seed=3,
                             resize=resize, cache="memory")
    seen = {}
    for images, labels in training.as_numpy_iterator():
        seen.update({int(label): image for image, label in zip(images, labels)})
    assert sorted(seen) == list(range(len(paths)))
    assert all(np.array_equal(seen[i], expected[i]) for i in expected)
    examples = [Example(p, -1, None) for p in paths]
    predicted = np.concatenate(list(example_dataset(examples, "image", SIZE, 6, resize).as_numpy_iterator()))
    assert all(np.array_equal(predicted[i], expected[i]) for i in expected)


def test_a_file_changed_after_routing_is_routed_again(tmp_path):
    path = tmp_path / "changing.jpg"
    _picture().save(path)
    assert decode_route(str(path)) == PLAIN_KINDS.index("jpeg")
    _picture().save(path, progressive=True, quality=70)  # new size and mtime
    assert decode_route(str(path)) == PILLOW


def test_unreadable_files_keep_the_pillow_path(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    assert decode_route(str(broken)) == PILLOW
    assert decode_route(str(tmp_path / "missing.png")) == PILLOW


@pytest.mark.parametrize("names", [
    ("baseline jpeg", "small jpeg (enlarged)", "big jpeg (1/4-scale draft, then area averaging)"),  # one decoder
    ("webp", "progressive jpeg", "rgba png"),  # Pillow only
    ("png", "gif", "tiff"),  # two graph decoders and Pillow
])
def test_a_folder_of_few_kinds_gets_a_graph_with_only_their_decoders_and_the_same_pixels(files, names):
    paths = [files[name][0] for name in names]
    expected = np.stack([load_image(p, (SIZE, SIZE)) for p in paths])
    got = np.concatenate(list(image_dataset(paths, None, (SIZE, SIZE), 2).as_numpy_iterator()))
    np.testing.assert_array_equal(got, expected)
