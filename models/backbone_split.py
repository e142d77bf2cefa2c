"""A feature extractor cut in two at the input of its top N blocks: bottom (frozen) and top (trains).

Why: training only the top blocks of a pretrained backbone on a CPU is dominated by the
frozen lower part, which computes the same activations for a file at every step. Cut at the
input of the top blocks, the bottom runs once per file (its activations are cached on disk,
app/top_block_stage.py) and only the top runs per training step.

Both halves are functional models over the *same layer objects* as the extractor (Keras
builds a model from an intermediate tensor by cloning the graph's nodes, not its layers):
training `top` trains the extractor's own top blocks in place, so the trained blocks end up in
whatever model holds the extractor (the run's model.keras), and `top(bottom(x))` equals
`extractor(x)`.

The block boundaries come from the family's block pattern (models/backbones/blocks.py). The
cut is the input tensor of the first layer of the first top block; a block's first layer
takes the block's whole input (the MBConv/residual input also feeds the block's Add), so
nothing in the top reaches below the cut, and a backbone where something does is refused.
A backbone that nests its network in an inner model (pixels -> normalisation -> network)
is cut inside the inner model, which must be the outer model's last step.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from models.errors import ModelError


@dataclass
class BackboneSplit:
    bottom: keras.Model  # raw input -> activations at the cut (frozen, computed once per file)
    top: keras.Model  # activations at the cut -> the extractor's features (shares the extractor's layers)
    cut_layer: str  # the first layer of the top part: where the cut is, for cache keys and the log
    top_blocks: int  # how many blocks the top part holds

    @property
    def activation_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.bottom.output_shape[1:])


def _owner(model: keras.Model, layer: keras.layers.Layer) -> list[keras.Model]:
    """The chain of models from `model` down to the one whose own layers include `layer` ([] if none)."""
    if any(child is layer for child in model.layers):
        return [model]
    for child in model.layers:
        if isinstance(child, keras.Model):
            chain = _owner(child, layer)
            if chain:
                return [model] + chain
    return []


def _cut(model: keras.Model, chain: list[keras.Model], layer: keras.layers.Layer) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of `model` cut at the input of `layer`, `chain` leading to the model that owns it."""
    if len(chain) == 1:
        tensor = layer.input
        return keras.Model(model.inputs, tensor, name=f"{model.name}_bottom"), \
            keras.Model(tensor, model.outputs[0], name=f"{model.name}_top")
    inner = chain[1]
    history = getattr(model.outputs[0], "_keras_history", None)
    if history is None or history.operation is not inner:
        raise ModelError(f"Cannot cut {model.name!r} at its top blocks: layers follow its nested model "
                         f"{inner.name!r}. Received: a backbone whose output is not {inner.name!r}'s output.")
    inner_bottom, inner_top = _cut(inner, chain[1:], layer)
    # The tensor the outer graph feeds the nested model (a Functional's own `.input` is its inner Input).
    fed = inner._inbound_nodes[history.node_index].input_tensors[0]
    bottom = keras.Model(model.inputs, inner_bottom(fed), name=f"{model.name}_bottom")
    return bottom, inner_top


def split_backbone(feature_extractor: keras.Model, spec, top_blocks: int) -> BackboneSplit:
    """Cut `feature_extractor` at the input of its top `top_blocks` blocks (the family's block pattern)."""
    groups = spec.blocks(feature_extractor)
    if top_blocks < 1:
        raise ModelError(f"The top part needs at least one block. Received: top_blocks={top_blocks}")
    if len(groups) < 2:
        raise ModelError(f"{feature_extractor.name!r} has {len(groups)} block(s) matching {spec.block_pattern!r}: "
                         "nothing to cut below its top blocks.")
    count = min(top_blocks, len(groups) - 1)  # the bottom keeps at least one block (and the stem)
    first = groups[len(groups) - count][0]
    chain = _owner(feature_extractor, first)
    if not chain:
        raise ModelError(f"Layer {first.name!r} is not inside {feature_extractor.name!r}.")
    try:
        bottom, top = _cut(feature_extractor, chain, first)
    except ModelError:
        raise
    except ValueError as error:  # the top part reaches below the cut (a disconnected graph)
        raise ModelError(f"Cannot cut {feature_extractor.name!r} at {first.name!r}: {error}") from None
    return BackboneSplit(bottom, top, first.name, count)
