"""`conv4`: the classic few-shot backbone (Vinyals et al. 2016, Snell et al. 2017, Finn et al. 2017).

4 x [Conv2D 64 3x3 same, BatchNormalization, ReLU, MaxPool 2], trained from scratch
(there are no pretrained weights), then global average pooling to a 64-d vector.

- Global average pooling, not flatten: the feature size stays 64 at every image
  size, so `feature_dim` is a constant and heads need no size arithmetic. At 28 px
  (Omniglot) the last map is 1x1 and this *is* the classic 64-d flatten; at 84 px
  (miniImageNet) the classic flatten gives 1600-d (5x5x64) and GAP averages it.
- BatchNormalization momentum 0.9, not Keras' 0.99: a from-scratch run of a few
  hundred steps leaves 0.99 moving statistics far from the data, and inference-mode
  evaluation falls to chance (docs/ARCHITECTURE.md, "Decisions and the pitfalls behind them").
- Pixels come in as uint8 RGB like every image backbone; Rescaling(1/255) puts them
  in [0, 1] inside the model. `conv4_gray` converts to one luma channel first
  (Omniglot-like data).
- Any image size from 16 px: four 2x2 poolings need at least 16 px for a 1x1 map.
"""

from __future__ import annotations

from pathlib import Path

import keras

from models.backbones.registry import BackboneSpec, register_backbone
from models.errors import ModelError
from models.layers import RGBToGrayscale

FILTERS = 64
NUM_BLOCKS = 4
MIN_SIZE = 2 ** NUM_BLOCKS
BN_MOMENTUM = 0.9
WEIGHT_HELP = "none (random initialisation, the default: conv4 is trained from scratch) or the path of a Keras weights file"


def _check_size(name: str, image_size: int) -> None:
    if image_size < MIN_SIZE:
        raise ModelError(f"{name} needs images of at least {MIN_SIZE} px (its {NUM_BLOCKS} max-poolings halve the "
                         f"size each). Received: image_size={image_size}")


def _conv_block(x, index: int):
    # One name prefix per block so block_pattern groups conv, BN, ReLU and pool together.
    prefix = f"block{index}"
    x = keras.layers.Conv2D(FILTERS, 3, padding="same", name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    return keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)


def _load_weights(model: keras.Model, name: str, weights: str) -> None:
    if weights in ("imagenet", "pretrained"):
        raise ModelError(f"{name} has no pretrained weights: it is trained from scratch. Received: weights={weights!r}. "
                         f"Use --weights {WEIGHT_HELP}.")
    if weights == "none":
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(f"--weights for {name} must be {WEIGHT_HELP}. Received: weights={weights!r} (no such file).")
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError/KeyError/OSError for mismatched files
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ModelError(f"Could not load {str(path)!r} into {name} ({first_line}). The file must be a Keras weights "
                         f"file saved from a {name} feature extractor.") from None


def _builder(name: str, grayscale: bool):
    def build(image_size: int, weights: str, pooling: str | None = None) -> keras.Model:
        _check_size(name, image_size)
        pixels = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="pixels")
        x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(pixels)  # also casts uint8 -> float
        if grayscale:
            x = RGBToGrayscale(name="grayscale")(x)
        for index in range(1, NUM_BLOCKS + 1):
            x = _conv_block(x, index)
        features = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
        model = keras.Model(pixels, features, name=f"{name}_features")
        _load_weights(model, name, weights)
        return model

    return build


register_backbone(BackboneSpec(
    name="conv4", modality="image", default_size=84, feature_dim=FILTERS,
    weights_source="trained from scratch (no pretrained weights)",
    block_pattern=r"^(block\d+)_", build_features=_builder("conv4", grayscale=False), default_weights="none",
))
register_backbone(BackboneSpec(
    name="conv4_gray", modality="image", default_size=28, feature_dim=FILTERS,
    weights_source="trained from scratch (no pretrained weights); RGB converted to grayscale inside the model",
    block_pattern=r"^(block\d+)_", build_features=_builder("conv4_gray", grayscale=True), default_weights="none",
))
