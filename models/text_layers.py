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

    The config also keeps `split_on_cjk`, which keras-hub's own config leaves out (it would come
    back as keras-hub's default, True, after a save). `lowercase` and `strip_accents` are saved as
    given: a model saved with `strip_accents: false` loads with it, whatever its checkpoint asks
    for today (models/backbones/text_bert.py reads that when a backbone is built).
    """

    def get_config(self):
        return super().get_config() | {"vocabulary": self.get_vocabulary(), "split_on_cjk": self.split_on_cjk}

    @classmethod
    def from_tokenizer(cls, tokenizer: keras_hub.models.BertTokenizer,
                       **normalisation) -> "InlineVocabularyBertTokenizer":
        """A copy of `tokenizer`; `normalisation` (lowercase, strip_accents, split_on_cjk) replaces its own."""
        unknown = set(normalisation) - set(NORMALISATION_OPTIONS)
        if unknown:
            raise ValueError(f"Unknown tokenizer normalisation options: {sorted(unknown)}")
        config = tokenizer.get_config() | {"vocabulary": tokenizer.get_vocabulary(),
                                           "split_on_cjk": getattr(tokenizer, "split_on_cjk", True)}
        return cls.from_config(config | normalisation)


# What a WordPiece tokenizer does to text before looking words up (keras-hub's names).
NORMALISATION_OPTIONS = ("lowercase", "strip_accents", "split_on_cjk")
