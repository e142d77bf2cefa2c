"""The text extractor cut below its top transformer blocks: bottom then top is the whole extractor,
the task model's top gives the task model's output, and the cut refuses what it cannot do."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.backbones import get_backbone
from models.errors import ModelError
from models.heads import ClassificationHead
from models.task_model import build_task_model
from models.text_split import split_text_extractor, top_task_model

TEXTS = tf.constant(["the good movie was great", "awful food and bad service", "x", ""])


def _extractor():
    spec = get_backbone("tiny_text")  # two transformer blocks
    return spec, spec.build_features(16, "none")


def test_bottom_then_top_is_the_whole_extractor():
    spec, extractor = _extractor()
    split = split_text_extractor(extractor, spec, 1)
    hidden, mask = split.bottom(TEXTS)
    assert hidden.shape == (4, 16, 16) and mask.dtype == tf.bool
    assert split.activation_bytes_per_text == 16 * 16 * 4 + 16
    np.testing.assert_array_equal(split.top([hidden, mask]).numpy(), extractor(TEXTS).numpy())
    # The top holds the extractor's own top block: its weights are the extractor's variables.
    top_block = spec.blocks(extractor)[-1][0]
    assert any(layer is top_block for layer in split.top.layers)


@pytest.mark.parametrize("with_embedding", [False, True])
def test_top_task_model_gives_the_task_models_output_with_the_same_layers(with_embedding):
    spec, extractor = _extractor()
    head = ClassificationHead(3, 0.2, seed=0, hidden_units=8)
    embedding = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)], name="embedding") if with_embedding else None
    task = build_task_model(extractor, head, embedding)
    head.features_model(8 if with_embedding else 16)  # the head's layers now belong to a second model too
    split = split_text_extractor(extractor, spec, 1)
    top = top_task_model(split, task, extractor)
    np.testing.assert_allclose(top(split.bottom(TEXTS)).numpy(), task(TEXTS).numpy(), rtol=0, atol=1e-6)
    task_variables = {id(v) for v in task.weights}
    assert all(id(v) in task_variables for v in top.weights)


def test_the_cut_refuses_what_it_cannot_do():
    spec, extractor = _extractor()
    for blocks in (0, 2, 3):  # the top needs at least one block and leaves at least one below
        with pytest.raises(ModelError, match="1 to 1 top blocks"):
            split_text_extractor(extractor, spec, blocks)
    image_spec = get_backbone("tiny_image")
    with pytest.raises(ModelError, match="not laid out as text"):
        split_text_extractor(image_spec.build_features(16, "none"), image_spec, 1)
