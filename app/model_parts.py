"""Parts of a saved task model (raw input -> feature extractor -> [layers] -> head_dense), found by
name and type rather than by position: the extractor, the layers between it and the head, and
their replay on cached features."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from app.errors import UserError
from models.task_model import layers_after_features

HEAD_LAYER = "head_dense"  # the final layer's name (models/heads.py): its input is the run's embedding


def feature_extractor_of(task_model: keras.Model) -> keras.Model:
    """The frozen backbone inside model.keras: its first nested keras.Model (raw input -> features -> head)."""
    for layer in task_model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise UserError(f"model.keras ({task_model.name!r}) has no nested feature extractor; was it written by train.py?")


def layers_between(task_model: keras.Model) -> list:
    """The layers between the feature extractor and the final Dense layer: they turn cached features
    into the run's embedding (the final layer's input)."""
    after = layers_after_features(task_model, feature_extractor_of(task_model))
    names = [layer.name for layer in after]
    if HEAD_LAYER not in names:
        raise UserError(f"model.keras ({task_model.name!r}) has no {HEAD_LAYER!r} layer after its feature extractor; "
                        "was it written by train.py?")
    return after[:names.index(HEAD_LAYER)]


def apply_chain(layers: list, features: np.ndarray, batch_size: int) -> np.ndarray:
    """Apply the layers between the extractor and the head, in inference mode, to cached features."""
    outputs = []
    for start in range(0, len(features), batch_size):
        x = tf.convert_to_tensor(features[start:start + batch_size])
        for layer in layers:
            x = layer(x, training=False)
        outputs.append(keras.ops.convert_to_numpy(x))
    return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, 0), np.float32)
