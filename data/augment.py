"""Training-time image augmentation from Keras preprocessing layers (never applied to features
or evaluation data)."""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True  # horizontal flip
    rotation: float = 0.05  # fraction of a full turn, both directions
    zoom: float = 0.1  # fraction, in and out
    contrast: float = 0.1  # factor

    def validate(self) -> "AugmentConfig":
        for name in ("rotation", "zoom", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"augmentation {name} must be in [0, 1). Received: {name}={value}")
        return self

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.rotation == 0 and self.zoom == 0 and self.contrast == 0


def build_augmenter(config: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """A Sequential of Keras random layers; expects and returns float pixels in [0, 255]."""
    config.validate()
    layers = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed))
    return keras.Sequential(layers, name="augmentation")
