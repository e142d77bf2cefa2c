"""tf.data pipelines (data/pipeline.py), resize modes (data/images.py) and augmentation (data/augment.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras

from data.augment import AugmentConfig, ImageAugmentation, RandomAffine, build_augmenter
from data.images import load_image
from data.resize import fit_array
from data.pipeline import balanced_dataset, image_dataset, should_cache, text_dataset, without_autotune_thread

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (40, 80, 120)]


@pytest.fixture
def coloured_files(tmp_path, make_image):
    """Seven PNGs, each one solid distinct colour; odd sizes so resizing is exercised."""
    return [
        str(make_image(tmp_path / f"{i}.png", size=(8 + i, 10), color=colour))
        for i, colour in enumerate(COLOURS)
    ]


def _batches(dataset):
    return [tuple(np.asarray(t) for t in batch) if isinstance(batch, tuple) else np.asarray(batch) for batch in dataset]


def test_batches_shapes_dtypes_and_order(coloured_files):
    labels = [3, 1, 4, 1, 5, 9, 2]
    dataset = image_dataset(coloured_files, labels, image_size=(6, 12), batch_size=3)

    batches = _batches(dataset)

    assert [images.shape for images, _ in batches] == [(3, 6, 12, 3), (3, 6, 12, 3), (1, 6, 12, 3)]
    for images, batch_labels in batches:
        assert images.dtype == np.uint8
        assert batch_labels.dtype == np.int32
    images = np.concatenate([b[0] for b in batches])
    seen_labels = np.concatenate([b[1] for b in batches])
    assert seen_labels.tolist() == labels
    for image, colour in zip(images, COLOURS):
        assert (image == colour).all()  # solid colours survive resizing exactly


def test_last_partial_batch_is_present(coloured_files):
    dataset = image_dataset(coloured_files, list(range(7)), image_size=(8, 8), batch_size=4)
    sizes = [len(labels) for _, labels in _batches(dataset)]
    assert sizes == [4, 3]


def test_without_labels_yields_images_only(coloured_files):
    dataset = image_dataset(coloured_files, None, image_size=(8, 8), batch_size=5)
    batches = _batches(dataset)
    assert [b.shape for b in batches] == [(5, 8, 8, 3), (2, 8, 8, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    first_pixels = [tuple(int(v) for v in image[0, 0]) for b in batches for image in b]
    assert first_pixels == COLOURS


def test_shuffle_is_a_seeded_permutation_keeping_image_label_pairs(coloured_files):
    labels = list(range(7))

    def run(seed):
        images, ys = zip(*_batches(image_dataset(coloured_files, labels, (8, 8), 7, shuffle=True, seed=seed)))
        return images[0], ys[0]

    images, ys = run(seed=3)
    assert sorted(ys.tolist()) == labels
    for image, label in zip(images, ys):
        assert (image == COLOURS[label]).all()  # each image stays with its label
    np.testing.assert_array_equal(run(seed=3)[1], ys)  # same seed, same first-epoch order


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_shuffled_epochs_differ_and_keep_pairs_with_or_without_cache(coloured_files, cache):
    labels = list(range(7))
    dataset = image_dataset(coloured_files, labels, (8, 8), 7, shuffle=True, seed=5, cache=cache)
    # Known batch count, cached or not: finetune phase 2 sizes its learning-rate schedule from it.
    assert int(dataset.cardinality().numpy()) == 1
    assert int(image_dataset(coloured_files, labels, (8, 8), 3, cache=cache).cardinality().numpy()) == 3
    orders = []
    for _ in range(4):
        (images, ys), = _batches(dataset)
        assert sorted(ys.tolist()) == labels
        assert all((image == COLOURS[label]).all() for image, label in zip(images, ys))
        orders.append(tuple(ys.tolist()))
    assert len(set(orders)) > 1  # reshuffled every epoch, cached or not


def test_non_ascii_paths_are_read(tmp_path, make_image):
    paths = [
        str(make_image(tmp_path / "chat_été" / "café.png", color=(1, 2, 3))),
        str(make_image(tmp_path / "猫" / "写真.png", color=(4, 5, 6))),
    ]
    (images, labels), = _batches(image_dataset(paths, [0, 1], (8, 8), 2))
    assert (images[0] == (1, 2, 3)).all() and (images[1] == (4, 5, 6)).all()
    assert labels.tolist() == [0, 1]


# --------------------------------------------------------------------------- resize modes

BANDS = {"green": (0, 255, 0), "red": (255, 0, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
PALETTE = {**BANDS, "black": (0, 0, 0)}


def _nearest(pixel) -> str:
    return min(PALETTE, key=lambda name: sum((int(a) - b) ** 2 for a, b in zip(pixel, PALETTE[name])))


@pytest.fixture
def banded(tmp_path):
    """40 wide x 20 high: four vertical bands, green | red || blue | yellow (left half red-ish, right blue-ish)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    for i, colour in enumerate(BANDS.values()):
        pixels[:, 10 * i:10 * (i + 1)] = colour
    path = tmp_path / "banded.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def test_resize_stretch_keeps_everything(banded):
    image = load_image(banded, (16, 16), resize="stretch")
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    names = [[_nearest(p) for p in row] for row in image]
    assert all(row == names[0] for row in names)  # no bars: every row alike
    assert "black" not in names[0]
    assert names[0][:3] == ["green"] * 3 and names[0][-3:] == ["yellow"] * 3
    assert names[0][5:7] == ["red"] * 2 and names[0][9:11] == ["blue"] * 2


def test_resize_pad_letterboxes_on_black(banded):
    image = load_image(banded, (16, 16), resize="pad")
    assert image.shape == (16, 16, 3)
    # 40x20 -> 16x8 content, centred: 4 black rows above and below
    assert (image[:4] == 0).all() and (image[12:] == 0).all()
    content = [[_nearest(p) for p in row] for row in image[4:12]]
    assert all("black" not in row for row in content)
    assert all(row[0] == "green" and row[-1] == "yellow" for row in content)
    assert all(row[5] == "red" and row[10] == "blue" for row in content)


def test_resize_crop_keeps_the_centre(banded):
    image = load_image(banded, (16, 16), resize="crop")
    assert image.shape == (16, 16, 3)
    names = [[_nearest(p) for p in row] for row in image]
    seen = {name for row in names for name in row}
    assert seen == {"red", "blue"}  # the outer green / yellow quarters are cut away, no bars
    assert all(row[1:7] == ["red"] * 6 and row[9:15] == ["blue"] * 6 for row in names)


def test_resize_modes_agree_when_the_size_already_matches(tmp_path, make_image):
    path = str(make_image(tmp_path / "exact.png", size=(12, 6)))
    results = [load_image(path, (6, 12), resize=mode) for mode in ("stretch", "pad", "crop")]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_unknown_resize_mode_is_an_error(banded):
    with pytest.raises(ValueError, match="resize mode must be one of") as info:
        load_image(banded, (16, 16), resize="zoom")
    assert "'zoom'" in str(info.value)
    with pytest.raises(ValueError, match="resize mode"):
        fit_array(np.zeros((2, 4, 3), np.uint8), (3, 3), "squash")


def test_image_dataset_resize_mode_matches_load_image(banded):
    for mode in ("stretch", "pad", "crop"):
        (batch,) = _batches(image_dataset([banded], None, (16, 16), 1, resize=mode))
        np.testing.assert_array_equal(batch[0], load_image(banded, (16, 16), resize=mode))


# --------------------------------------------------------------------------- augmentation

FLIP_ONLY = AugmentConfig(flip=True, rotation=0, zoom=0, contrast=0)


@pytest.fixture
def halves(tmp_path):
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:] = (0, 0, 255)
    path = tmp_path / "halves.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def test_flip_augmentation_flips_some_images_and_keeps_uint8(halves):
    path, original = halves
    labels = list(range(16))
    dataset = image_dataset([path] * 16, labels, (16, 16), batch_size=4, augment=FLIP_ONLY, seed=0)

    flipped = unflipped = 0
    seen_labels = []
    for images, batch_labels in _batches(dataset):
        assert images.dtype == np.uint8
        assert images.min() >= 0 and images.max() <= 255
        seen_labels += batch_labels.tolist()
        for image in images:
            if np.array_equal(image, original):
                unflipped += 1
            elif np.array_equal(image, original[:, ::-1]):
                flipped += 1
            else:
                pytest.fail("a flip-only augmentation produced something other than the image or its mirror")
    assert seen_labels == labels
    assert flipped > 0 and unflipped > 0, (flipped, unflipped)


def test_no_augmentation_gives_exactly_load_image(tmp_path, make_image):
    paths = [str(make_image(tmp_path / f"{i}.png", size=(9 + i, 7))) for i in range(5)]
    expected = np.stack([load_image(p, (8, 8), "pad") for p in paths])
    for augment in (None, AugmentConfig(flip=False, rotation=0, zoom=0, contrast=0)):
        images = np.concatenate(_batches(image_dataset(paths, None, (8, 8), 2, resize="pad", augment=augment)))
        np.testing.assert_array_equal(images, expected)


def test_invalid_augmentation_is_an_error():
    with pytest.raises(ValueError, match="rotation"):
        build_augmenter(AugmentConfig(rotation=1.0))
    with pytest.raises(ValueError, match="zoom=1.5"):
        RandomAffine(zoom=1.5)


def _sampled_points(transforms, x, y):
    a0, a1, a2, b0, b1, b2 = (transforms[:, i] for i in range(6))
    return a0 * x + a1 * y + a2, b0 * x + b1 * y + b2


def test_random_affine_transforms_stay_in_their_ranges_and_keep_the_centre():
    layer = RandomAffine(flip=True, rotation=0.05, zoom=0.1, seed=3)
    transforms = np.asarray(layer.transforms(2000, 9, 13))

    assert transforms.shape == (2000, 8)
    np.testing.assert_array_equal(transforms[:, 6:], 0)  # affine, not projective
    centre_x, centre_y = _sampled_points(transforms, 6.0, 4.0)  # centre of a 13 x 9 image
    np.testing.assert_allclose(centre_x, 6.0, atol=1e-4)
    np.testing.assert_allclose(centre_y, 4.0, atol=1e-4)
    linear = transforms[:, [0, 1, 3, 4]].reshape(-1, 2, 2)
    determinant = np.linalg.det(linear)
    scale = np.sqrt(np.abs(determinant))
    assert scale.min() >= 0.9 - 1e-5 and scale.max() <= 1.1 + 1e-5
    assert scale.min() < 0.92 and scale.max() > 1.08  # the whole zoom range is used
    mirrored = determinant < 0
    assert 0.4 < mirrored.mean() < 0.6
    # Undo scale and mirror: what is left is a rotation within +-0.05 of a turn.
    angle = np.arctan2(linear[:, 1, 0] * np.where(mirrored, -1, 1), linear[:, 1, 1])
    assert np.abs(angle).max() <= 0.05 * 2 * np.pi + 1e-5
    assert np.abs(angle).max() > 0.9 * 0.05 * 2 * np.pi


def test_random_affine_without_rotation_or_zoom_only_mirrors():
    layer = RandomAffine(flip=True, rotation=0.0, zoom=0.0, seed=0)
    transforms = np.asarray(layer.transforms(200, 16, 16))
    x, y = _sampled_points(transforms, 3.0, 5.0)
    np.testing.assert_allclose(y, 5.0, atol=1e-5)
    assert set(np.round(x, 4)) == {3.0, 12.0}


def test_random_affine_keeps_shape_dtype_and_is_identity_outside_training():
    layer = RandomAffine(seed=1)
    batch = np.random.default_rng(0).integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    for images in (batch, batch.astype("float32"), batch[0]):
        out = np.asarray(layer(images, training=True))
        assert out.shape == images.shape and out.dtype == images.dtype
        np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    first, second = (np.asarray(layer(batch.astype("float32"))) for _ in range(2))
    assert not np.array_equal(first, second)  # every call draws fresh transforms


def test_random_affine_round_trips_through_a_saved_model(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, RandomAffine(flip=False, rotation=0.1, zoom=0.2, fill_mode="nearest",
                                             interpolation="nearest", seed=7)(inputs))
    path = tmp_path / "affine.keras"
    model.save(path)

    loaded = keras.saving.load_model(path, safe_mode=True)

    layer = loaded.layers[-1]
    assert isinstance(layer, RandomAffine)
    assert (layer.flip, layer.rotation, layer.zoom, layer.fill_mode, layer.interpolation, layer.seed) == (
        False, 0.1, 0.2, "nearest", "nearest", 7)


def test_image_augmentation_takes_and_returns_uint8_and_round_trips(tmp_path):
    batch = np.random.default_rng(0).integers(0, 256, (4, 12, 12, 3), dtype=np.uint8)
    augmenter = build_augmenter(AugmentConfig(), seed=0)
    out = np.asarray(augmenter(batch, training=True))
    assert out.dtype == np.uint8 and out.shape == batch.shape and not np.array_equal(out, batch)
    np.testing.assert_array_equal(np.asarray(augmenter(batch, training=False)), batch)
    contrast_only = build_augmenter(AugmentConfig(flip=False, rotation=0, zoom=0, contrast=0.5), seed=0)
    assert contrast_only.geometric_layer is None
    adjusted = np.asarray(contrast_only(batch, training=True)).astype(float)
    # Contrast scales every image about its own mean: the per-image mean barely moves (rounding, clipping).
    assert np.abs(adjusted.mean(axis=(1, 2)) - batch.astype(float).mean(axis=(1, 2))).max() < 8

    inputs = keras.Input((12, 12, 3), dtype="uint8")
    path = tmp_path / "augmentation.keras"
    keras.Model(inputs, ImageAugmentation(rotation=0.2, contrast=0.3, seed=5)(inputs)).save(path)
    layer = keras.saving.load_model(path, safe_mode=True).layers[-1]
    assert isinstance(layer, ImageAugmentation)
    assert (layer.settings, layer.interpolation, layer.seed) == (AugmentConfig(True, 0.2, 0.1, 0.3), "nearest", 5)


def test_default_augmentation_in_the_pipeline_changes_images_every_epoch(tmp_path):
    original = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = str(tmp_path / "noise.png")
    Image.fromarray(original).save(path)
    dataset = image_dataset([path] * 5, list(range(5)), (16, 16), batch_size=2, augment=AugmentConfig(), seed=0)

    epochs = [np.concatenate([images for images, _ in _batches(dataset)]) for _ in range(2)]

    for images in epochs:
        assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8  # the last batch is partial
        assert not any(np.array_equal(image, original) for image in images)
    assert not np.array_equal(epochs[0], epochs[1])


# --------------------------------------------------------------------------- in-memory cache


def test_memory_cache_serves_the_second_epoch_without_the_files(coloured_files):
    labels = list(range(7))
    dataset = image_dataset(coloured_files, labels, (8, 8), batch_size=3, cache="memory")
    first = _batches(dataset)
    for path in coloured_files:
        os.remove(path)

    second = _batches(dataset)

    assert len(second) == len(first) == 3
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(labels_a, labels_b)


def test_without_cache_the_second_epoch_reads_the_files_again(coloured_files):
    dataset = image_dataset(coloured_files, None, (8, 8), batch_size=3, cache="none")
    _batches(dataset)
    for path in coloured_files:
        os.remove(path)
    with pytest.raises(tf.errors.OpError):
        _batches(dataset)


def test_should_cache_auto_follows_the_budget():
    needed = 10 * 8 * 8 * 3
    assert should_cache(10, (8, 8), "auto", budget_bytes=needed)
    assert not should_cache(10, (8, 8), "auto", budget_bytes=needed - 1)
    assert should_cache(10, (8, 8), "auto")  # tiny data set, default budget
    assert not should_cache(100_000, (224, 224), "auto")  # 15 GB: more than a quarter of any CI machine
    assert should_cache(100_000, (224, 224), "memory", budget_bytes=1)
    assert not should_cache(1, (8, 8), "none")
    assert not should_cache(1, (8, 8), "disk")  # kept in a file, not in memory (data/image_store.py)
    with pytest.raises(ValueError, match="cache must be one of"):
        should_cache(1, (8, 8), "ram")


# --------------------------------------------------------------------------- text


def test_text_dataset_yields_strings_and_labels_non_ascii_preserved():
    texts = ["héllo wörld", "猫が好き 🐈", "plain ascii", "Ça va?"]
    labels = [0, 1, 0, 1]

    batches = list(text_dataset(texts, labels, batch_size=3))

    assert [int(b[0].shape[0]) for b in batches] == [3, 1]
    for strings, batch_labels in batches:
        assert strings.dtype == tf.string
        assert batch_labels.dtype == tf.int32
    decoded = [s.decode("utf-8") for strings, _ in batches for s in strings.numpy()]
    assert decoded == texts
    assert [int(y) for _, ys in batches for y in ys.numpy()] == labels

    only_text = list(text_dataset(texts, None, batch_size=4))
    assert len(only_text) == 1 and only_text[0].dtype == tf.string
    assert [s.decode("utf-8") for s in only_text[0].numpy()] == texts


def test_text_dataset_shuffle_keeps_text_label_pairs():
    texts = [f"text number {i} é" for i in range(20)]
    labels = list(range(20))
    pairs = [(s.decode("utf-8"), int(y)) for strings, ys in text_dataset(texts, labels, 6, shuffle=True, seed=1)
             for s, y in zip(strings.numpy(), ys.numpy())]
    assert sorted(pairs, key=lambda p: p[1]) == list(zip(texts, labels))
    assert [y for _, y in pairs] != labels


# --------------------------------------------------------------------------- balanced sampler


def test_balanced_dataset_draws_classes_equally():
    labels = [0] * 90 + [1] * 10
    inputs = np.arange(100)

    xs, ys = next(balanced_dataset(inputs, labels, num_classes=2, seed=0).batch(2000).as_numpy_iterator())
    drawn = list(zip(xs.tolist(), ys.tolist()))

    ys = [y for _, y in drawn]
    assert abs(ys.count(1) / len(ys) - 0.5) <= 0.05
    assert all(labels[x] == y for x, y in drawn)  # inputs stay with their labels
    assert {x for x, y in drawn if y == 1} == set(range(90, 100))  # every minority example is used


def test_balanced_dataset_never_yields_an_absent_class():
    labels = [0] * 90 + [2] * 10
    paths = [f"/data/{i}.png" for i in range(100)]
    label_of = dict(zip(paths, labels))

    xs, ys = next(balanced_dataset(paths, labels, num_classes=3, seed=1).batch(2000).as_numpy_iterator())
    drawn = [(x.decode("utf-8"), int(y)) for x, y in zip(xs, ys)]

    ys = [y for _, y in drawn]
    assert set(ys) == {0, 2}
    assert abs(ys.count(2) / len(ys) - 0.5) <= 0.05
    assert all(label_of[path] == y for path, y in drawn)


# --------------------------------------------------------------------------- iterator tear-down


def test_every_pipeline_runs_without_the_autotuning_thread(coloured_files):
    """TF 2.21's autotuning thread can stall an iterator's destruction for seconds (data/pipeline.py)."""
    labels = list(range(7))
    datasets = [image_dataset(coloured_files, labels, (8, 8), 3, shuffle=True, augment=AugmentConfig()),
                image_dataset(coloured_files, None, (8, 8), 3),
                text_dataset(["a", "b"], [0, 1], 2, shuffle=True),
                without_autotune_thread(tf.data.Dataset.range(4).map(lambda x: x, num_parallel_calls=tf.data.AUTOTUNE))]
    for dataset in datasets:
        assert dataset.options().autotune.enabled is False
        assert len(_batches(dataset)) >= 1  # still iterates
