"""EfficientNet-Lite0 as a plain Keras functional model.

Why not keras-hub's `EfficientNetBackbone`: it can be configured for ReLU6, no
squeeze-excite, epsilon 1e-3 and a TF-"same" stem, but its MBConv block pads
every depthwise convolution symmetrically (`ZeroPadding2D(k // 2)` + "valid").
For stride-2 layers on even inputs TF/PyTorch "same" padding is asymmetric
(0 before, 1 after for k=3), so its outputs differ from the checkpoint's. The
reference checkpoint (EfficientNet-PyTorch's lite0) uses static TF-style "same"
padding, which Keras `padding="same"` reproduces exactly.

Lite variant: EfficientNet-B0 block table, no squeeze-excite, ReLU6, stem (32)
and head (1280) not scaled, BatchNorm epsilon 1e-3. Input is already normalised
to (x - 127) / 128 (see `efficientnet_lite_preprocessing`).

Only built-in Keras layers are used, so the model serialises without custom
objects and loads with `safe_mode=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

BATCH_NORM_EPSILON = 1e-3
NUM_FEATURES = 1280
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    expand_ratio: int
    kernel_size: int
    strides: int
    filters_out: int
    repeats: int


# EfficientNet-B0's stage table (width and depth multipliers of lite0 are 1.0).
LITE0_STAGES = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
)
STEM_FILTERS = 32


def _conv_bn_relu6(x, filters, kernel_size, strides, name, activation=True):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _mbconv_block(x, filters_in, spec: StageSpec, strides, name):
    inputs = x
    if spec.expand_ratio != 1:
        x = _conv_bn_relu6(x, filters_in * spec.expand_ratio, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        spec.kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=f"{name}_dwconv_relu6")(x)
    x = _conv_bn_relu6(x, spec.filters_out, 1, 1, f"{name}_project", activation=False)
    if strides == 1 and filters_in == spec.filters_out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def block_names() -> list[str]:
    """Names of the 16 MBConv blocks in order; index i matches `_blocks.i` in torch."""
    return [f"block{i}" for i in range(sum(stage.repeats for stage in LITE0_STAGES))]


def build_efficientnet_lite0(
    input_shape=(224, 224, 3),
    include_top: bool = False,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Build the network with random weights.

    include_top=False returns the pooled 1280-d feature vector;
    include_top=True adds the 1000-way ImageNet logits layer (`classifier`).
    """
    inputs = keras.Input(shape=input_shape, name="normalized_pixels")
    x = _conv_bn_relu6(inputs, STEM_FILTERS, 3, 2, "stem")
    filters_in = STEM_FILTERS
    block_index = 0
    for stage in LITE0_STAGES:
        for repeat in range(stage.repeats):
            strides = stage.strides if repeat == 0 else 1
            x = _mbconv_block(x, filters_in, stage, strides, f"block{block_index}")
            filters_in = stage.filters_out
            block_index += 1
    x = _conv_bn_relu6(x, NUM_FEATURES, 1, 1, "head")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(IMAGENET_CLASSES, name="classifier")(x)
    return keras.Model(inputs, x, name=name)
