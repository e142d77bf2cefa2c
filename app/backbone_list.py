"""`train.py --list-backbones`: the registry as a table."""

from __future__ import annotations

import logging

from models.backbones import list_backbones
from models.errors import ModelError

logger = logging.getLogger(__name__)


def backbone_table() -> str:
    """Name, modality, parameters (built once with random weights), default size, weights source."""
    rows = [("name", "modality", "parameters", "default size", "pretrained weights from")]
    for spec in list_backbones():
        try:
            model = spec.build_features(min(spec.default_size, 64) if spec.modality == "image" else spec.default_size, "none")
            params = f"{model.count_params() / 1e6:.1f}M"
        except ModelError as error:  # e.g. the weight package is not installed
            logger.warning("%s: %s", spec.name, error)
            params = "unavailable"
        unit = "px" if spec.modality == "image" else "tokens"
        rows.append((spec.name, spec.modality, params, f"{spec.default_size} {unit}", spec.weights_source))
    rows.append(("<keras-hub preset>", "text", "", "128 tokens", "e.g. bert_tiny_en_uncased; downloaded (network)"))
    rows.append(("<folder path>", "text", "", "128 tokens", "a local Hugging Face BERT folder"))
    # --backbone takes a finished run too; the README's table lists it, and this one left it out.
    rows.append(("<run directory>", "the run's", "", "the run's", "a finished run's (meta-)trained backbone (RUN_DIR)"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) for row in rows)
