"""Tests-only tiny backbones (one per modality), registered like the real ones so unit and CLI
tests run the real code paths in a fraction of a second."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from models.backbones.registry import BackboneSpec, register_backbone

TINY_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    "the", "good", "bad", "great", "awful", "movie", "film", "food", "service", "was", "is", "very",
    "not", "and", "it", "love", "hate", "fine",
] + list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]


def _tiny_image(image_size: int, weights: str, pooling: str | None = None) -> keras.Model:
    pixels = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(pixels)
    for i in range(2):
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(pixels, x, name="tiny_image_features")


def _tiny_text(sequence_length: int, weights: str, pooling: str | None = None) -> keras.Model:
    import keras_hub

    from models.backbones.text_bert import bert_feature_model

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCABULARY, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(TINY_VOCABULARY), num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=64,
    )
    return bert_feature_model(tokenizer, backbone, sequence_length, pooling or "mean", "tiny_text")


register_backbone(BackboneSpec(
    name="tiny_image", modality="image", default_size=32, feature_dim=8, weights_source="random (tests only)",
    block_pattern=r"^(block\d+)_", build_features=_tiny_image, default_weights="none", tests_only=True,
))
register_backbone(BackboneSpec(
    name="tiny_text", modality="text", default_size=16, feature_dim=16, weights_source="random (tests only)",
    block_pattern=r"^(transformer_layer_\d+)", build_features=_tiny_text, default_weights="none", tests_only=True,
))


# Words with and without their accents, and a CJK pair, for the checkpoint-tokenizer tests.
ACCENT_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cafe", "creme", "café", "crème", "Cafe",
                     "北", "京", "北京"]


def write_tiny_hf_bert_folder(folder, tokenizer_config: dict | None) -> Path:
    """A local Hugging Face BERT folder of a tiny random BERT (no weights file: build it with weights "none"),
    with `tokenizer_config` as its tokenizer_config.json (None: {"do_lower_case": true}, an uncased checkpoint)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": len(ACCENT_VOCABULARY), "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64, "type_vocab_size": 2,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }))
    (folder / "vocab.txt").write_text("\n".join(ACCENT_VOCABULARY) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True} if tokenizer_config is None else tokenizer_config))
    return folder
