"""Training-time image augmentation (never applied to features or evaluation data).

`ImageAugmentation` takes and returns uint8 batches: flip, rotation and zoom as one random
affine resampling per image (`RandomAffine`, nearest-neighbour on the uint8 pixels), then
Keras' `RandomContrast` on floats. Why not Keras' `RandomFlip` + `RandomRotation` +
`RandomZoom`: each resamples the whole batch in float32, and on a CPU the augmentation's
time comes out of the model's training step (tf.data shares the cores). Per batch of 32 at
224 px on 2 cores, inside tf.data: the three Keras layers + contrast 62 ms, one bilinear
affine + contrast 31 ms, one nearest-neighbour affine on uint8 + contrast 21 ms, against a
222 ms training step of `efficientnet_lite0` (`bench/notes.md`). Nearest neighbour is also
torchvision's default for its RandomAffine / RandomRotation; `interpolation="bilinear"`
is available. The transform is built from Keras ops (`keras.random` with a
`SeedGenerator`, `keras.ops.image.affine_transform`), so every batch and every epoch
draws fresh transforms, as the Keras layers do.

Where it runs: `finetune` phase 2 makes it the first layer of the model it trains
(`app.phases.phase2_training_model`), so it runs on the accelerator where there is one, and
inside the training step on a CPU; `data.pipeline.image_dataset(augment=...)` can also apply
it inside tf.data (the from-scratch baseline in `bench/` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import ops


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

    @property
    def is_geometric(self) -> bool:
        return self.flip or self.rotation > 0 or self.zoom > 0


@keras.saving.register_keras_serializable(package="metatune")
class RandomAffine(keras.layers.Layer):
    """Random horizontal flip, rotation and zoom as one affine resampling per image.

    `rotation` is a fraction of a full turn (0.05: up to ±18°, like `RandomRotation(0.05)`);
    `zoom` a fraction in and out (0.1: the sampled area is 0.9x to 1.1x the image's, the
    aspect ratio kept). All three are about the image centre; pixels sampled from outside
    the image are filled by `fill_mode` ("reflect" by default). Takes a batch (or one
    image), channels last, any numeric dtype (uint8 stays uint8: no float copy of the
    batch); returns the same shape and dtype. Identity when called with `training=False`.
    """

    def __init__(self, flip: bool = True, rotation: float = 0.05, zoom: float = 0.1, fill_mode: str = "reflect",
                 interpolation: str = "nearest", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("rotation", rotation), ("zoom", zoom)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"RandomAffine {name} must be in [0, 1). Received: {name}={value}")
        self.flip, self.rotation, self.zoom = bool(flip), float(rotation), float(zoom)
        self.fill_mode, self.interpolation, self.seed = fill_mode, interpolation, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Like Keras' RandomRotation, which resamples through the same op (ImageProjectiveTransform),
        # opt out of XLA: a model holding this layer then trains without jit_compile on a GPU too.
        self.supports_jit = False

    def transforms(self, batch_size, height, width):
        """The batch's transforms as Keras' 8-number rows: output pixel (x, y) samples input
        ((a0·x + a1·y + a2), (b0·x + b1·y + b2)). Input = centre + R(angle)·scale·mirror·(output − centre)."""
        shape = (batch_size,)
        limit = self.rotation * 2 * math.pi
        angle = keras.random.uniform(shape, -limit, limit, seed=self.seed_generator)
        scale = keras.random.uniform(shape, 1.0 - self.zoom, 1.0 + self.zoom, seed=self.seed_generator)
        if self.flip:
            mirror = ops.where(keras.random.uniform(shape, seed=self.seed_generator) < 0.5, -1.0, 1.0)
        else:
            mirror = ops.ones(shape)
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
        centre_x = (ops.cast(width, "float32") - 1.0) / 2.0
        centre_y = (ops.cast(height, "float32") - 1.0) / 2.0
        a2 = centre_x - a0 * centre_x - a1 * centre_y
        b2 = centre_y - b0 * centre_x - b1 * centre_y
        zeros = ops.zeros(shape)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=True):
        if not training:
            return images
        single = len(images.shape) == 3
        batch = ops.expand_dims(images, 0) if single else images
        dims = ops.shape(batch)
        transformed = ops.image.affine_transform(batch, self.transforms(dims[0], dims[1], dims[2]),
                                                 interpolation=self.interpolation, fill_mode=self.fill_mode,
                                                 data_format="channels_last")
        return transformed[0] if single else transformed

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "fill_mode": self.fill_mode, "interpolation": self.interpolation, "seed": self.seed}


@keras.saving.register_keras_serializable(package="metatune")
class ImageAugmentation(keras.layers.Layer):
    """The training augmentation: uint8 images in, uint8 images out (see the module docstring)."""

    def __init__(self, flip: bool = True, rotation: float = 0.05, zoom: float = 0.1, contrast: float = 0.1,
                 interpolation: str = "nearest", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.settings = AugmentConfig(flip, rotation, zoom, contrast).validate()
        self.interpolation, self.seed = interpolation, seed
        self.supports_jit = False  # see RandomAffine
        self.geometric_layer = (RandomAffine(flip, rotation, zoom, interpolation=interpolation, seed=seed)
                          if self.settings.is_geometric else None)
        self.contrast_layer = (keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed)
                         if contrast else None)

    def build(self, input_shape):
        for layer in (self.geometric_layer, self.contrast_layer):
            if layer is not None:
                layer.build(input_shape)

    def call(self, images, training=True):
        if not training:
            return images
        if self.geometric_layer is not None:
            images = self.geometric_layer(images, training=True)
        if self.contrast_layer is not None:  # RandomContrast needs floats
            adjusted = self.contrast_layer(ops.cast(images, "float32"), training=True)
            images = ops.cast(ops.clip(ops.round(adjusted), 0, 255), "uint8")
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        c = self.settings
        return {**super().get_config(), "flip": c.flip, "rotation": c.rotation, "zoom": c.zoom,
                "contrast": c.contrast, "interpolation": self.interpolation, "seed": self.seed}


def build_augmenter(config: AugmentConfig, seed: int | None = None) -> ImageAugmentation:
    """The training augmentation for `config`: takes and returns uint8 image batches."""
    config.validate()
    return ImageAugmentation(config.flip, config.rotation, config.zoom, config.contrast, seed=seed,
                             name="augmentation")
