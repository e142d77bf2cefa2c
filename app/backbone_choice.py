"""Which backbone a run uses, with which weights and input size, and what its model takes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.backbone_reuse import REUSED_WEIGHTS_PREFIX, is_run_dir, open_backbone_run
from app.config import META_STRATEGIES, TrainConfig, is_count
from app.errors import UserError
from data.resize import RESAMPLING
from data.scan import with_article
from models.backbones import BackboneSpec, get_backbone

logger = logging.getLogger(__name__)
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}


def input_spec(modality: str, size: int, resize: str) -> dict:
    """What model.keras takes, recorded so evaluate/predict never ask for it."""
    if modality == "image":
        return {"kind": "image", "image_size": [size, size], "channels": 3, "dtype": "uint8", "resize": resize,
                "resampling": RESAMPLING}
    return {"kind": "text", "dtype": "string", "sequence_length": size}


@dataclass
class ResolvedBackbone:
    spec: BackboneSpec
    name: str
    weights: str
    size: int  # image side or sequence length
    pooling: str | None
    reused: object = None  # app/backbone_reuse.ReusedBackbone when --backbone is a run directory
    resize: str | None = None  # the source run's resize mode when reused


def resolve_backbone(config: TrainConfig, modality: str) -> ResolvedBackbone:
    """The backbone for this data: the one asked for (checked against the modality), a finished run's
    (--backbone RUN_DIR, app/backbone_reuse.py) or the default."""
    if modality == "image" and (config.sequence_length or config.pooling != "auto"):
        raise UserError("--sequence-length and --pooling apply to text backbones only. Received them for an image folder.")
    if modality == "text" and (config.image_size or config.resize != "stretch"):
        raise UserError("--image-size and --resize apply to image backbones only. Received them for a text folder.")
    if is_run_dir(config.backbone):
        if config.weights and not config.weights.startswith(REUSED_WEIGHTS_PREFIX):
            # (A "run:..." value is config.json's record of the reused weights, which a resume checks.)
            raise UserError(f"--weights does not apply to --backbone RUN_DIR (the run's weights are the backbone's). "
                            f"Received: --weights {config.weights} --backbone {config.backbone}. Leave --weights out.")
        unfreeze_matters = config.strategy == "finetune" or (config.strategy in META_STRATEGIES
                                                             and config.meta_input == "raw")
        reused = open_backbone_run(config.backbone, modality, config.image_size, config.sequence_length,
                                   config.resize, config.strategy, unfreeze_matters)
        return ResolvedBackbone(reused.spec, reused.spec.name, reused.weights, reused.size, None, reused,
                                reused.resize)
    name = config.backbone or DEFAULT_BACKBONES[modality]
    spec = get_backbone(name)
    if spec.modality != modality:
        raise UserError(
            f"The folder holds {modality} files but backbone {name!r} is {with_article(spec.modality)} backbone. "
            f"Received: --backbone {name}. Use {with_article(modality)} backbone (default: "
            f"{DEFAULT_BACKBONES[modality]})."
        )
    size = (config.image_size if modality == "image" else config.sequence_length) or spec.default_size
    pooling = None if config.pooling == "auto" else config.pooling
    return ResolvedBackbone(spec, name, config.weights or spec.default_weights, size, pooling)


def cap_unfreeze(config: TrainConfig, spec: BackboneSpec, feature_extractor, backbone_name: str) -> None:
    """`--unfreeze N` above the number of blocks the backbone has: every block trains (as it did), but the run now
    says so once, before any work, and `config.unfreeze` becomes the number that trains, which config.json, the
    phase descriptions (history, TensorBoard) and a resume then record. It was capped with no more than phase 2's
    INFO line, and config.json kept the N no block count matches. Call it where the blocks are unfrozen."""
    if config.unfreeze is None or not is_count(config.unfreeze):
        return
    available = len(spec.blocks(feature_extractor))
    if not available or int(config.unfreeze) <= available:
        return  # a backbone without blocks is refused or left whole where its blocks are needed
    logger.warning("--unfreeze %s asks for more blocks than backbone %s has (%d): all %d are unfrozen, and "
                   "config.json records --unfreeze %d. (The layers below its first block stay frozen; --unfreeze all "
                   "trains them too.)", config.unfreeze, backbone_name, available, available, available)
    config.unfreeze = str(available)
