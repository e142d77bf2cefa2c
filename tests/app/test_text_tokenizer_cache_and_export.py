"""The tokenizer's normalisation (accent stripping) in the feature cache's key and in the SavedModel export:
features read with one tokenisation are never reused for another, and the exported graph strips accents as
model.keras does."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import keras
import pytest
import tensorflow as tf

from app.features import FEATURE_CACHE_FORMAT, feature_store_key, tokenizer_identity
from app.savedmodel_export import SERVING_SIGNATURE, ServingSpec, write_savedmodel
from data.resize import RESAMPLING
from models.backbones import get_backbone
from models.backbones.text_bert import bert_feature_model
from models.fingerprint import reduced_compute_dtype, weights_fingerprint
from models.heads import ClassificationHead
from models.task_model import build_task_model
from models.text_layers import InlineVocabularyBertTokenizer
from tiny_backbones import write_tiny_hf_bert_folder

TEXTS = ["Café crème", "cafe creme", "crème the café", "the"]


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    """(accents stripped, accents kept): one uncased checkpoint's BERT, the same weights, read by its tokenizer
    as built now and as an older metatune built it (strip_accents false)."""
    folder = write_tiny_hf_bert_folder(tmp_path_factory.mktemp("tokenizer") / "checkpoint", None)
    stripping = get_backbone(str(folder)).build_features(16, "none")
    backbone = next(layer for layer in stripping.layers if layer.name.startswith("bert_backbone"))
    tokenizer = stripping.get_layer("tokenize").tokenizer
    keeping = bert_feature_model(InlineVocabularyBertTokenizer.from_tokenizer(tokenizer, strip_accents=False),
                                 backbone, 16, "mean", "kept")
    return stripping, keeping


def _key(extractor, modality="text"):
    return feature_store_key(extractor, "checkpoint", "none", modality, 16, "stretch", "mean")


def test_the_text_feature_key_changes_with_the_tokenizers_normalisation(extractors):
    stripping, keeping = extractors
    assert weights_fingerprint(stripping) == weights_fingerprint(keeping)  # the tokenizer has no weights
    assert tokenizer_identity(stripping)["strip_accents"] and not tokenizer_identity(keeping)["strip_accents"]
    assert _key(stripping) != _key(keeping)
    assert _key(stripping) == _key(stripping)
    # The key before tokenizers were part of it (same weights and settings) is neither.
    legacy = {"format": FEATURE_CACHE_FORMAT, "backbone": "checkpoint", "weights": "none", "modality": "text",
              "size": 16, "resize": None, "pooling": "mean", "resampling": None,
              "weights_sha256": weights_fingerprint(stripping)}
    legacy_key = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:32]
    assert legacy_key not in (_key(stripping), _key(keeping))


def test_image_feature_keys_are_unchanged():
    extractor = get_backbone("tiny_image").build_features(32, "none")
    identity = {"format": FEATURE_CACHE_FORMAT, "backbone": "tiny_image", "weights": "none", "modality": "image",
                "size": 32, "resize": "stretch", "pooling": None, "resampling": RESAMPLING,
                "weights_sha256": weights_fingerprint(extractor)}
    expected = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    assert feature_store_key(extractor, "tiny_image", "none", "image", 32, "stretch", None) == expected


def test_features_computed_in_mixed_precision_have_their_own_key():
    """float16 features (a GPU run under --precision mixed_float16) differ from float32 ones by about 1e-3
    with the same weights: a float32 run must not reuse them, nor they a float32 run's."""
    float32 = get_backbone("tiny_image").build_features(32, "none")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = get_backbone("tiny_image").build_features(32, "none")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(float32.get_weights())
    assert reduced_compute_dtype(float32) is None and reduced_compute_dtype(mixed) == "float16"
    assert weights_fingerprint(mixed) == weights_fingerprint(float32)  # the variables stay float32

    def key(extractor):
        return feature_store_key(extractor, "tiny_image", "none", "image", 32, "stretch", None)
    assert key(mixed) != key(float32)
    assert key(mixed) == key(mixed)


@pytest.mark.parametrize("strip", [True, False])
def test_the_savedmodel_tokenizes_as_model_keras(extractors, tmp_path, strip):
    extractor = extractors[0 if strip else 1]
    model = build_task_model(extractor, ClassificationHead(3, 0.0, seed=0))
    write_savedmodel(model, ServingSpec(["a", "b", "c"], "text"), str(tmp_path / "served"))
    serve = tf.saved_model.load(str(tmp_path / "served")).signatures[SERVING_SIGNATURE]
    served = serve(inputs=tf.constant(TEXTS))["probabilities"].numpy()
    np.testing.assert_allclose(served, model.predict(tf.constant(TEXTS), verbose=0), atol=1e-6)
    # Stripping: "Café crème" is "cafe creme" in the exported graph too; keeping: it is read as written.
    assert np.allclose(served[0], served[1], atol=1e-7) is strip
