"""The frozen backbone's single pass over the data, and what text truncation it implies."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from app.inputs import example_dataset


def extract_features(feature_extractor: keras.Model, examples, modality: str, size: int, batch_size: int,
                     resize: str) -> np.ndarray:
    """Run the frozen backbone over the examples once (the expensive pass; the head reuses it).

    No augmentation here: features of augmented images would be computed once and
    reused every epoch, which defeats augmentation.
    """
    if not examples:
        return np.zeros((0, feature_extractor.output_shape[-1]), np.float32)
    return feature_extractor.predict(example_dataset(examples, modality, size, batch_size, resize), verbose=1)


def truncation_report(feature_extractor: keras.Model, texts: list[str], sequence_length: int) -> dict:
    """How many examples are longer than the sequence length (their end is cut off)."""
    tokenizer = feature_extractor.get_layer("tokenize").tokenizer
    lengths = []
    for start in range(0, len(texts), 256):  # keras-hub returns python lists for string batches
        tokens = tokenizer(tf.constant(texts[start:start + 256]))
        lengths += [len(row) for row in (tokens.to_list() if hasattr(tokens, "to_list") else tokens)]
    cut = sum(n > sequence_length - 2 for n in lengths)  # [CLS] and [SEP] take two positions
    return {"sequence_length": sequence_length, "num_truncated": cut, "num_examples": len(lengths),
            "max_tokens": max(lengths, default=0), "median_tokens": float(np.median(lengths)) if lengths else 0.0}
