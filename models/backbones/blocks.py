""""The top N blocks" of a backbone, the same idea across families.

`--unfreeze 2` must mean two residual/MBConv/transformer blocks whatever the
family, not two raw layers (a block is 3 to 15 layers). Each family names its
block layers with a common prefix; a regular expression per family maps a layer
name to its block key. Layers after the last block (e.g. a head convolution and
its BatchNorm) belong to the last block; layers before the first block (the
stem) belong to no block and are only unfrozen with "all".
"""

from __future__ import annotations

import re

import keras

from models.layer_walk import flat_layers


def block_groups(model: keras.Model, pattern: str) -> list[list[keras.layers.Layer]]:
    """Layers grouped into blocks, in network order."""
    regex = re.compile(pattern)
    groups: list[list[keras.layers.Layer]] = []
    keys: list[str] = []
    for layer in flat_layers(model):
        match = regex.match(layer.name)
        if match:
            key = match.group(1)
            if not keys or keys[-1] != key:
                keys.append(key)
                groups.append([])
            groups[-1].append(layer)
        elif groups:
            groups[-1].append(layer)  # trailing layers (head conv, norms) join the last block
    return groups


def top_block_layers(model: keras.Model, pattern: str, n: int) -> list[keras.layers.Layer]:
    groups = block_groups(model, pattern)
    if n < 0:
        raise ValueError(f"Number of blocks must be >= 0. Received: {n}")
    return [layer for group in groups[len(groups) - min(n, len(groups)):] for layer in group]
