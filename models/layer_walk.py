"""Walking a model's layer tree: the one rule every part of metatune uses."""

from __future__ import annotations

import keras


def _children(layer) -> list:
    layers = getattr(layer, "layers", None)  # keras.Model (Functional, Sequential, keras-hub backbones)
    return list(layers) if isinstance(layers, (list, tuple)) else []


def flat_layers(model) -> list[keras.layers.Layer]:
    """The leaf layers of `model` in network order, descending into nested models.

    Freezing, block grouping, checkpoint digests and meta-learning all need the layers
    that own weights, wherever a backbone nests them; a nested model with no layers of
    its own counts as a leaf.
    """
    leaves = []
    for layer in _children(model):
        leaves.extend(flat_layers(layer) if _children(layer) else [layer])
    return leaves
