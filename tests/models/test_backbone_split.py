"""The backbone cut at its top blocks: bottom then top is the whole backbone, and the top trains the backbone's own layers."""

import keras
import numpy as np
import pytest

from models.backbone_split import split_backbone
from models.backbones import get_backbone
from models.errors import ModelError


def _nested_tiny(size, weights="none", pooling=None):
    """tiny_image's network nested in an outer model behind a normalisation, as EfficientNet-Lite0 nests its own."""
    inner = get_backbone("tiny_image").build_features(size, weights)
    pixels = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    return keras.Model(pixels, inner(keras.layers.Identity(name="normalize")(pixels)), name="nested_features")


@pytest.mark.parametrize("nested", [False, True])
def test_bottom_then_top_is_the_whole_backbone(nested):
    spec = get_backbone("tiny_image")
    size, blocks = 16, 1
    extractor = _nested_tiny(size) if nested else spec.build_features(size, "none")
    split = split_backbone(extractor, spec, blocks)
    cut = "block1_conv"
    assert split.cut_layer == cut and split.top_blocks == blocks
    pixels = np.random.default_rng(0).integers(0, 256, (3, size, size, 3)).astype(np.uint8)
    activations = split.bottom.predict(pixels, verbose=0)
    assert activations.shape[1:] == split.activation_shape
    np.testing.assert_allclose(split.top.predict(activations, verbose=0), extractor.predict(pixels, verbose=0),
                               rtol=1e-5, atol=1e-5)
    # The top is the backbone's own layers, not copies: changing one changes the other.
    top_variable = split.top.trainable_variables[0]
    assert any(top_variable is variable for variable in extractor.weights)
    assert not {id(v) for v in split.top.weights} & {id(v) for v in split.bottom.weights}


def test_a_nested_network_followed_by_more_layers_is_refused():
    spec = get_backbone("tiny_image")
    inner = spec.build_features(16, "none")
    pixels = keras.Input((16, 16, 3), dtype="uint8", name="pixels")
    extractor = keras.Model(pixels, keras.layers.Dense(2, name="after")(inner(pixels)))
    with pytest.raises(ModelError, match="layers follow its nested model"):
        split_backbone(extractor, spec, 1)


def test_the_bottom_keeps_at_least_one_block_and_a_blockless_backbone_is_refused():
    spec = get_backbone("tiny_image")
    assert split_backbone(spec.build_features(16, "none"), spec, 5).top_blocks == 1  # of its 2 blocks
    with pytest.raises(ModelError, match="top part needs at least one block"):
        split_backbone(spec.build_features(16, "none"), spec, 0)
    conv4 = get_backbone("conv4")
    blockless = type(spec)(**{**vars(spec), "block_pattern": r"^(nothing)_"})
    with pytest.raises(ModelError, match="nothing to cut"):
        split_backbone(conv4.build_features(28, "none"), blockless, 1)
