"""A BERT-family text feature extractor cut below its top N transformer blocks.

Why: fine-tuning the top blocks of MiniLM on a CPU spends most of each step running the frozen
lower blocks forward, which compute the same hidden states for a text at every step (text
gets no augmentation). Cut at the input of the top blocks, the bottom runs once per text and
only the top runs per training step: about half the time of a fine-tuning epoch on R8 with
the default two unfrozen blocks (BENCHMARKS.md, few-shot text section).

This is the text counterpart of models/backbone_split.py, written apart because a transformer
block takes two tensors (the hidden states and the padding mask) where an image block takes
one, and the pooling after the blocks needs the mask too: the bottom returns both, the top
takes both. Both halves reuse the extractor's own layer objects (tokenizer, transformer
blocks, pooling), so training the top trains the extractor in place, and
`top(bottom(texts))` equals `extractor(texts)` in inference mode. One difference in training
mode: dropout inside the frozen lower blocks no longer applies (their outputs are computed
once, in inference mode), which is what a frozen feature extractor is meant to be.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from models.errors import ModelError
from models.task_model import layers_after_features


@dataclass
class TextSplit:
    bottom: keras.Model  # strings -> [hidden states at the cut, padding mask] (frozen, once per text)
    top: keras.Model  # [hidden states, padding mask] -> pooled features (the extractor's own layers)
    top_blocks: int
    cut_layer: str  # the first top block's name: where the cut is (logs, metadata.json)

    @property
    def activation_bytes_per_text(self) -> int:
        """float32 hidden states plus the boolean mask: what caching one text's bottom output costs."""
        sequence, hidden = (int(d) for d in self.bottom.outputs[0].shape[1:])
        return sequence * hidden * 4 + sequence


def split_text_extractor(feature_extractor: keras.Model, spec, top_blocks: int) -> TextSplit:
    """Cut a `bert_feature_model` (text -> tokenizer -> BERT backbone -> pooling) at the input of its
    top `top_blocks` transformer blocks. Refuses (ModelError) any other layout, and a cut that
    would leave the top with every block (nothing frozen below it is worth caching then)."""
    layers = feature_extractor.layers
    if len(layers) != 4 or not isinstance(layers[2], keras.Model):
        raise ModelError(f"{feature_extractor.name!r} is not laid out as text -> tokenizer -> backbone -> pooling: "
                         "cannot cut it below its top blocks.")
    tokenizer, backbone, pooling = layers[1], layers[2], layers[3]
    groups = spec.blocks(feature_extractor)
    blocks = [group[0] for group in groups]
    if top_blocks < 1 or top_blocks >= len(blocks):
        raise ModelError(f"The cut needs 1 to {len(blocks) - 1} top blocks of {len(blocks)}. "
                         f"Received: top_blocks={top_blocks}")
    if not all(any(block is layer for layer in backbone.layers) for block in blocks):
        raise ModelError(f"{backbone.name!r}'s transformer blocks are not layers of it: cannot cut.")
    sequence_output = backbone.output["sequence_output"] if isinstance(backbone.output, dict) else None
    history = getattr(sequence_output, "_keras_history", None)
    if history is None or history.operation is not blocks[-1]:
        raise ModelError(f"{backbone.name!r}'s sequence output is not its last transformer block's output: "
                         "cannot cut.")
    first_top = blocks[len(blocks) - top_blocks]
    cut_tensor = first_top.input[0] if isinstance(first_top.input, (list, tuple)) else first_top.input
    lower = keras.Model(backbone.inputs, cut_tensor, name=f"{backbone.name}_bottom")

    texts = keras.Input(shape=(), dtype="string", name="text")
    tokens = tokenizer(texts)
    bottom = keras.Model(texts, [lower(tokens), tokens["padding_mask"]], name=f"{feature_extractor.name}_bottom")

    hidden = keras.Input(shape=tuple(cut_tensor.shape[1:]), dtype=cut_tensor.dtype, name="hidden_states")
    mask = keras.Input(shape=tuple(tokens["padding_mask"].shape[1:]), dtype="bool", name="padding_mask")
    x = hidden
    for block in blocks[len(blocks) - top_blocks:]:
        x = block(x, padding_mask=mask)
    top = keras.Model([hidden, mask], pooling(x, mask), name=f"{feature_extractor.name}_top")
    return TextSplit(bottom, top, top_blocks, first_top.name)


def top_task_model(split: TextSplit, task_model: keras.Model, feature_extractor: keras.Model) -> keras.Model:
    """[hidden states, padding mask] -> the task model's output: `split.top`, then what the task model
    applies to its feature extractor's output (embedding, head), as a model over the same layers."""
    features = keras.Input(shape=tuple(feature_extractor.outputs[0].shape[1:]), dtype=feature_extractor.outputs[0].dtype,
                           name="features")
    x = features
    for layer in layers_after_features(task_model, feature_extractor):
        x = layer(x)
    after = keras.Model(features, x, name=f"{task_model.name}_after_features")
    return keras.Model(split.top.inputs, after(split.top(split.top.inputs)), name=f"{task_model.name}_top")
