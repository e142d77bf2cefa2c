"""Which backbone a run uses, with which weights and input size, and what its model takes."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import TrainConfig
from app.errors import UserError
from models.backbones import BackboneSpec, get_backbone

DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}


def input_spec(modality: str, size: int, resize: str) -> dict:
    """What model.keras takes, recorded so evaluate/predict never ask for it."""
    if modality == "image":
        return {"kind": "image", "image_size": [size, size], "channels": 3, "dtype": "uint8", "resize": resize}
    return {"kind": "text", "dtype": "string", "sequence_length": size}


@dataclass
class ResolvedBackbone:
    spec: BackboneSpec
    name: str
    weights: str
    size: int  # image side or sequence length
    pooling: str | None


def resolve_backbone(config: TrainConfig, modality: str) -> ResolvedBackbone:
    """The backbone for this data: the one asked for (checked against the modality) or the default."""
    name = config.backbone or DEFAULT_BACKBONES[modality]
    spec = get_backbone(name)
    if spec.modality != modality:
        raise UserError(
            f"The folder holds {modality} files but backbone {name!r} is an {spec.modality} backbone. "
            f"Received: --backbone {name}. Use a {modality} backbone (default: {DEFAULT_BACKBONES[modality]})."
        )
    if modality == "image" and (config.sequence_length or config.pooling != "auto"):
        raise UserError("--sequence-length and --pooling apply to text backbones only. Received them for an image folder.")
    if modality == "text" and (config.image_size or config.resize != "stretch"):
        raise UserError("--image-size and --resize apply to image backbones only. Received them for a text folder.")
    size = (config.image_size if modality == "image" else config.sequence_length) or spec.default_size
    pooling = None if config.pooling == "auto" else config.pooling
    return ResolvedBackbone(spec, name, config.weights or spec.default_weights, size, pooling)
