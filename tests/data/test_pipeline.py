"""tf.data pipelines from file lists (data/pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest

from data.pipeline import image_dataset

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


def test_non_ascii_paths_are_read(tmp_path, make_image):
    paths = [
        str(make_image(tmp_path / "chat_été" / "café.png", color=(1, 2, 3))),
        str(make_image(tmp_path / "猫" / "写真.png", color=(4, 5, 6))),
    ]
    (images, labels), = _batches(image_dataset(paths, [0, 1], (8, 8), 2))
    assert (images[0] == (1, 2, 3)).all() and (images[1] == (4, 5, 6)).all()
    assert labels.tolist() == [0, 1]
