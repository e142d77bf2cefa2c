"""Finetune phase 2 on text trains the top transformer blocks over cached lower-block outputs.

Why: a text gets no augmentation, so the frozen blocks below the unfrozen ones give it the same
hidden states at every step; `models/text_split.py` cuts the extractor there, the bottom runs
once per text (here, before the phase) and every training and validation step runs only the top
blocks, the pooling and the head: the same model (shared layers), about half the time per epoch
on MiniLM with the default two unfrozen blocks. Every text fine-tuning goes through this: the
`finetune` strategy's phase 2, its refit, and the target stage of `--meta-data` text runs.

The whole backbone runs as before when the cut does not apply: `--unfreeze all` (or as many
blocks as the backbone has), an extractor not laid out as a `bert_feature_model`, or cached
hidden states that would take more memory than `activation_budget_bytes()`.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from app.config import TrainConfig
from data.pipeline import default_cache_budget_bytes, in_memory_batches, text_dataset
from models.errors import ModelError
from models.text_split import TextSplit, split_text_extractor

logger = logging.getLogger(__name__)
# Cached hidden states live in one in-memory tf.data source; past 1 GiB (about 5,000 texts of 128
# tokens on MiniLM) the whole backbone runs per step instead: a graph holding more than 2 GiB of
# constants cannot be serialized (tf.distribute's multi-worker sharding serializes it).
ACTIVATION_BUDGET_CAP = 1 << 30


def activation_budget_bytes() -> int:
    return min(default_cache_budget_bytes(), ACTIVATION_BUDGET_CAP)


def text_phase2_cut(config: TrainConfig, spec, feature_extractor, modality: str, num_texts: int) -> TextSplit | None:
    """The cut phase 2 trains over, or None where the whole backbone must run per step (module docstring)."""
    if modality != "text" or config.unfreeze == "all":
        return None
    try:
        split = split_text_extractor(feature_extractor, spec, int(config.unfreeze))
    except ModelError as error:
        logger.info("Text fine-tuning runs the whole backbone per step: %s", error)
        return None
    needed, budget = num_texts * split.activation_bytes_per_text, activation_budget_bytes()
    if needed > budget:
        logger.info("Text fine-tuning runs the whole backbone per step: the hidden states of %d texts below the "
                    "top %d block(s) would take %.0f MiB, over the %.0f MiB budget", num_texts, split.top_blocks,
                    needed / 2**20, budget / 2**20)
        return None
    return split


def activation_dataset(split: TextSplit, texts: list[str], labels: list[int] | None, batch_size: int,
                       shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """`data.pipeline.text_dataset`'s batches (same order, same shuffling), with the texts replaced by
    their [hidden states, padding mask] at the cut, computed once here."""
    inputs = tf.data.Dataset.from_tensor_slices(bottom_outputs(split, texts, batch_size))
    return in_memory_batches(inputs, labels, len(texts), batch_size, shuffle, seed)


def bottom_outputs(split: TextSplit, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen bottom's [hidden states (float32), padding mask] of `texts`."""
    if not texts:
        sequence, hidden = (int(d) for d in split.bottom.outputs[0].shape[1:])
        return np.zeros((0, sequence, hidden), np.float32), np.zeros((0, sequence), bool)
    hidden, mask = split.bottom.predict(text_dataset(texts, None, batch_size), verbose=0)
    return np.asarray(hidden, np.float32), np.asarray(mask, bool)
