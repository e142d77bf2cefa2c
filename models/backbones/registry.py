"""One name -> factory registry for backbones (timm style).

The registry imports none of the backbone modules: each registers itself (and, for names
it builds on demand, a resolver) when imported; `models/backbones/catalog.py` imports the
built-in families and is what callers use (`models.backbones.get_backbone`).

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


# Names that are not registered entries but that a backbone family can still build (a local
# Hugging Face folder, a keras-hub preset): (resolve(name) -> spec or None, hint for the error).
RESOLVERS: list[tuple[Callable[[str], "BackboneSpec | None"], str]] = []


def register_resolver(resolve: Callable[[str], "BackboneSpec | None"], hint: str) -> None:
    """Let a backbone module build specs for names it recognises; `hint` says what such names look like."""
    RESOLVERS.append((resolve, hint))


def lookup(name: str) -> BackboneSpec:
    """The spec of `name` among what has been registered so far (models.backbones.get_backbone loads the
    built-in families first)."""
    if name in BACKBONES:
        return BACKBONES[name]
    for resolve, _ in RESOLVERS:
        spec = resolve(name)
        if spec is not None:
            return spec
    available = sorted(n for n, s in BACKBONES.items() if not s.tests_only)
    hints = "".join(f", {hint}" for _, hint in RESOLVERS)
    raise ModelError(f"Unknown backbone. Received: backbone={name!r}. Available: {available}{hints}.")


def registered() -> list[BackboneSpec]:
    return [spec for spec in BACKBONES.values() if not spec.tests_only]
