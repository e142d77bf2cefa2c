"""Which backbone layers train in fine-tuning, and at which relative learning rate.

BatchNormalization layers are always frozen. In Keras 3, calling a trainable
backbone with `training=False` is not enough: `fit()` still updates the moving
statistics (keras-team/keras#20285), and on the small batches of a small dataset
those statistics drift away from the ones the pretrained weights expect (measured:
EfficientNet-Lite0 on Fashion-MNIST fell from 0.78 to 0.63 test accuracy). A Keras 3
BatchNormalization layer with `trainable = False` runs in inference mode, so freezing
the layer itself keeps both its statistics and its scale/offset fixed.
"""

from __future__ import annotations

import keras

from models.layer_walk import flat_layers

# keras-hub's BertBackbone computes a [CLS] "pooler" Dense whose output our features never
# use (they pool the sequence output): training it would only draw "no gradient" warnings.
UNUSED_OUTPUT_LAYERS = frozenset({"pooled_dense"})


def _is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def unfreeze_top_blocks(spec, feature_extractor: keras.Model, unfreeze: str | int) -> list[list[keras.layers.Layer]]:
    """Make the top `unfreeze` blocks (or "all") trainable, everything else frozen.

    Returns the trainable layer groups, top block first; with "all" the layers
    before the first block (the stem) form the last group. BatchNorm stays frozen.
    """
    groups = spec.blocks(feature_extractor)
    if unfreeze == "all":
        chosen = list(reversed(groups))
        in_blocks = {id(layer) for group in groups for layer in group}
        stem = [layer for layer in flat_layers(feature_extractor) if id(layer) not in in_blocks]
        if stem:
            chosen.append(stem)
    else:
        count = int(unfreeze)
        if count < 1:
            raise ValueError(f"unfreeze must be a positive number of blocks or 'all'. Received: {unfreeze!r}")
        chosen = list(reversed(groups[len(groups) - min(count, len(groups)):]))
    feature_extractor.trainable = True
    selected = {id(layer) for group in chosen for layer in group}
    for layer in flat_layers(feature_extractor):
        layer.trainable = (id(layer) in selected and not _is_batch_norm(layer)
                           and layer.name not in UNUSED_OUTPUT_LAYERS)
    return [[layer for layer in group if layer.trainable] for group in chosen]


def learning_rate_multipliers(head_layers, block_groups, decay: float) -> dict[str, float]:
    """Variable path -> multiplier: the head and the top block at 1, then `decay`, `decay**2`, ...

    Discriminative learning rates (ULMFiT): lower blocks hold more general features
    and should move less than the layers closest to the new task.
    """
    multipliers: dict[str, float] = {}
    groups = [list(head_layers) + list(block_groups[0] if block_groups else [])] + list(block_groups[1:])
    for depth, group in enumerate(groups):
        for layer in group:
            for variable in layer.trainable_variables:
                if variable.path in multipliers:
                    raise ValueError(f"Two trainable variables share the path {variable.path!r}; "
                                     "per-variable learning rates need unique layer names.")
                multipliers[variable.path] = decay ** depth
    return multipliers
