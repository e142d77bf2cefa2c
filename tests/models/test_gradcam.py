"""Grad-CAM points at what defines the class: a coloured patch."""

import pytest
import keras
import numpy as np

from models.gradcam import GradCam
from models.heads import ClassificationHead
from models.task_model import build_task_model

SIZE = 32


def patch_images(rng, count, with_patch):
    """Grey noise; the positive class has a red 8x8 patch at a random place. Returns images, patch boxes."""
    images = np.clip(128 + rng.normal(0, 20, (count, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    boxes = []
    for image in images:
        y, x = rng.integers(0, SIZE - 8, 2)
        if with_patch:
            image[y:y + 8, x:x + 8] = (230, 20, 20)
        boxes.append((y, x))
    return images, boxes


def colour_extractor() -> keras.Model:
    """A frozen backbone whose 16x16 feature map has one "redness" channel among random ones, like a
    pretrained backbone that has a unit for the colour that matters."""
    pixels = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(pixels)
    conv = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="block_conv")
    x = keras.layers.ReLU()(conv(x))
    kernel, bias = conv.get_weights()
    kernel[..., 0] = 0.0
    kernel[1, 1, :, 0] = (1.0, -1.0, -1.0)  # red minus green minus blue at the centre tap
    bias[0] = 0.0
    conv.set_weights([kernel, bias])
    extractor = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(x), name="colour_features")
    extractor.trainable = False
    return extractor


@pytest.mark.slow
def test_heatmap_mass_lies_on_the_patch():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    extractor = colour_extractor()
    positive, boxes = patch_images(rng, 40, True)
    negative, _ = patch_images(rng, 40, False)
    images = np.concatenate([positive, negative])
    labels = np.r_[np.ones(40), np.zeros(40)].astype(int)
    head = ClassificationHead(2, dropout=0.0, seed=0)
    model = build_task_model(extractor, head)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=60, batch_size=16, verbose=0)
    assert np.mean(model.predict(images, verbose=0).argmax(axis=1) == labels) > 0.9

    heatmaps = GradCam(model).heatmaps(positive[:10], np.ones(10, int))
    assert heatmaps.shape == (10, SIZE, SIZE) and heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6
    on_patch = []
    for heatmap, (y, x) in zip(heatmaps, boxes[:10]):
        mask = np.zeros((SIZE, SIZE), bool)
        mask[max(0, y - 2):y + 10, max(0, x - 2):x + 10] = True  # the patch and the blur of a 8x8 feature map
        on_patch.append(heatmap[mask].sum() / max(heatmap.sum(), 1e-9))
    # The region is ~14% of the image; most of the heat must lie there.
    assert np.median(on_patch) > 0.5, on_patch


def test_the_feature_map_is_found_inside_nested_backbones():
    """Real extractors nest models (pixels -> normalize -> backbone model; a reused run wraps that again): the
    heatmap must come from the backbone's last feature map, not from the input normalisation before it."""
    keras.utils.set_random_seed(0)
    inner_input = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="inner_conv")(inner_input)
    backbone = keras.Model(inner_input, keras.layers.GlobalAveragePooling2D()(x), name="backbone")
    pixels = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    features = keras.Model(pixels, backbone(keras.layers.Rescaling(1 / 255, name="normalize")(pixels)),
                           name="features")
    wrapped_input = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    wrapped = keras.Model(wrapped_input, features(wrapped_input), name="reused_backbone")
    model = build_task_model(wrapped, ClassificationHead(3, dropout=0.0, seed=0))
    cam = GradCam(model)
    assert cam.layer.name == "inner_conv"
    images = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 3)).astype(np.uint8)
    heatmaps = cam.heatmaps(images, np.array([0, 1, 2, 0]))
    assert heatmaps.shape == (4, SIZE, SIZE) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1 + 1e-6
