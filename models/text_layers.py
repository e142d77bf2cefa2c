"""Text layers that must survive a save -> load round trip inside a functional model."""

from __future__ import annotations

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="metatune")
class InlineVocabularyBertTokenizer(keras_hub.models.BertTokenizer):
    """keras-hub's BertTokenizer with its vocabulary kept in the layer config.

    Why: keras-hub saves a tokenizer's vocabulary as an asset that is loaded only
    after `load_model` has rebuilt the functional graph, and rebuilding calls the
    tokenizer, which then has no vocabulary and fails (keras-team/keras-hub#1522).
    With the vocabulary in the config the tokenizer is complete at construction.
    """

    def get_config(self):
        return super().get_config() | {"vocabulary": self.get_vocabulary()}

    @classmethod
    def from_tokenizer(cls, tokenizer: keras_hub.models.BertTokenizer) -> "InlineVocabularyBertTokenizer":
        return cls.from_config(tokenizer.get_config() | {"vocabulary": tokenizer.get_vocabulary()})
