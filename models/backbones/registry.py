"""One name -> factory registry for backbones (timm style).

Every entry builds a *feature extractor*: raw input (uint8 pixels of the chosen
image size, or strings) in, one pooled feature vector out, with the backbone's
own preprocessing inside the model, so a saved classifier needs nothing else.
Every entry also names its blocks (see blocks.py) for partial unfreezing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras

from models.backbones.blocks import block_groups, top_block_layers
from models.errors import ModelError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str  # "image" or "text"
    default_size: int  # image side in pixels, or sequence length in tokens
    feature_dim: int
    weights_source: str
    block_pattern: str  # regex whose group 1 is the block key of a layer name
    # (size, weights, pooling) -> keras.Model mapping raw input to features; weights
    # is "imagenet"/"pretrained", "none" or a file path; pooling (text only) is
    # "mean", "cls" or None for the checkpoint's own default.
    build_features: Callable[..., keras.Model]
    default_weights: str = "imagenet"
    tests_only: bool = False

    def blocks(self, model: keras.Model) -> list[list[keras.layers.Layer]]:
        return block_groups(model, self.block_pattern)

    def top_blocks(self, model: keras.Model, n: int) -> list[keras.layers.Layer]:
        return top_block_layers(model, self.block_pattern, n)


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONES[spec.name] = spec
    return spec


def _ensure_builtin_backbones() -> None:
    # Imported lazily: the modules register themselves, and keeping them out of
    # module import time keeps `train.py --help` fast.
    from models.backbones import keras_apps, text_bert  # noqa: F401
    from models.backbones import conv4  # noqa: F401  (after the pretrained ones, so listings show those first)


def get_backbone(name: str) -> BackboneSpec:
    _ensure_builtin_backbones()
    if name in BACKBONES:
        return BACKBONES[name]
    from models.backbones.text_bert import hf_folder_spec, is_hf_bert_dir, is_keras_hub_bert_preset, keras_hub_preset_spec

    if is_hf_bert_dir(name):
        return hf_folder_spec(name)
    if is_keras_hub_bert_preset(name):
        return keras_hub_preset_spec(name)
    available = sorted(n for n, s in BACKBONES.items() if not s.tests_only)
    raise ModelError(
        f"Unknown backbone. Received: backbone={name!r}. Available: {available}, a keras-hub BERT preset "
        "name (e.g. bert_tiny_en_uncased), or the path of a local Hugging Face BERT folder."
    )


def list_backbones() -> list[BackboneSpec]:
    _ensure_builtin_backbones()
    return [spec for spec in BACKBONES.values() if not spec.tests_only]
