"""The frozen backbone's single pass over the data (cached on disk), and what text truncation it implies."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from app.inputs import example_dataset
from app.progress import BatchProgress
from data.feature_cache import FeatureStore
from data.resize import RESAMPLING
from models.fingerprint import reduced_compute_dtype, weights_fingerprint
from models.layer_walk import flat_layers

logger = logging.getLogger(__name__)
FEATURE_CACHE_FORMAT = 2  # 2: a digest per row


def extract_features(feature_extractor: keras.Model, examples, modality: str, size: int, batch_size: int,
                     resize: str) -> np.ndarray:
    """Run the frozen backbone over the examples once (the expensive pass; the head reuses it).

    No augmentation here: features of augmented images would be computed once and
    reused every epoch, which defeats augmentation.
    """
    if not examples:
        return np.zeros((0, feature_extractor.output_shape[-1]), np.float32)
    return feature_extractor.predict(example_dataset(examples, modality, size, batch_size, resize),
                                     verbose=0, callbacks=[BatchProgress("Features")])


def feature_store_key(feature_extractor: keras.Model, backbone_name: str, weights: str, modality: str, size: int,
                      resize: str, pooling: str | None) -> str:
    """Everything a frozen feature depends on besides the file: any change gives a new store.

    Text keys also cover the tokenizer (`tokenizer_identity`: its vocabulary and normalisation), which
    has no weights: features of "café" read as [UNK] (before tokenizers followed their checkpoint's
    accent stripping) are never reused for "café" read as "cafe". Image keys are unchanged. Features computed
    in mixed precision (a GPU run) name their compute dtype, so a float32 run never reuses them."""
    identity = {
        "format": FEATURE_CACHE_FORMAT, "backbone": backbone_name, "weights": weights, "modality": modality,
        "size": size, "resize": resize if modality == "image" else None, "pooling": pooling,
        "resampling": RESAMPLING if modality == "image" else None,
        "weights_sha256": weights_fingerprint(feature_extractor),
    }
    if modality == "text":
        identity["tokenizer"] = tokenizer_identity(feature_extractor)
    if reduced_compute_dtype(feature_extractor):
        identity["compute_dtype"] = reduced_compute_dtype(feature_extractor)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def text_tokenizer(feature_extractor: keras.Model):
    """The WordPiece tokenizer of a text feature extractor (a reused run's backbone, --backbone RUN_DIR,
    nests the extractor that holds it), or None when it has none."""
    for layer in flat_layers(feature_extractor):
        if layer.name == "tokenize" and hasattr(layer, "tokenizer"):
            return layer.tokenizer
    return None


def tokenizer_identity(feature_extractor: keras.Model) -> dict | None:
    """What the tokenizer does to a text, as JSON: its normalisation and a digest of its vocabulary
    (None: no tokenizer). Two extractors with the same weights and identity give the same features."""
    tokenizer = text_tokenizer(feature_extractor)
    if tokenizer is None:
        return None
    vocabulary = "\n".join(tokenizer.get_vocabulary()).encode("utf-8")
    return {"lowercase": bool(tokenizer.lowercase), "strip_accents": bool(tokenizer.strip_accents),
            "split_on_cjk": bool(getattr(tokenizer, "split_on_cjk", True)),
            "vocabulary_sha256": hashlib.sha256(vocabulary).hexdigest()}


def content_key(example) -> str:
    return f"{example.sha256}:{example.encoding}" if example.encoding else example.sha256


def cached_features(feature_extractor: keras.Model, examples, modality: str, size: int, batch_size: int,
                    resize: str, store_key: str | None, extract=None) -> np.ndarray:
    """`extract_features` through the on-disk cache (`store_key` None: no cache).

    `extract(examples) -> features`: another way to compute the same features for the files the
    cache misses (the top_blocks stage's top(bottom(x)), which also caches the bottom's output)."""
    def compute(some):
        if extract is not None:
            return extract(some)
        return extract_features(feature_extractor, some, modality, size, batch_size, resize)

    if store_key is None or any(not e.sha256 for e in examples):
        return compute(examples)
    started = time.perf_counter()
    features, computed = FeatureStore(store_key).get_or_compute(
        [content_key(e) for e in examples], lambda indices: compute([examples[i] for i in indices]))
    logger.info("Features for %d examples: %d from the cache, %d computed (%.1f s)", len(examples),
                len(examples) - computed, computed, time.perf_counter() - started)
    if not len(examples):
        return np.zeros((0, feature_extractor.output_shape[-1]), np.float32)
    return features


def truncation_report(feature_extractor: keras.Model, texts: list[str], sequence_length: int) -> dict:
    """How many examples are longer than the sequence length (their end is cut off)."""
    tokenizer = text_tokenizer(feature_extractor)
    lengths = []
    for start in range(0, len(texts), 256):  # keras-hub returns python lists for string batches
        tokens = tokenizer(tf.constant(texts[start:start + 256]))
        lengths += [len(row) for row in (tokens.to_list() if hasattr(tokens, "to_list") else tokens)]
    cut = sum(n > sequence_length - 2 for n in lengths)  # [CLS] and [SEP] take two positions
    return {"sequence_length": sequence_length, "num_truncated": cut, "num_examples": len(lengths),
            "max_tokens": max(lengths, default=0), "median_tokens": float(np.median(lengths)) if lengths else 0.0}
