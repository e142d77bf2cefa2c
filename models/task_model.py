"""The task model: raw input -> backbone features -> head -> class probabilities."""

from __future__ import annotations

import keras

from models.heads import ClassificationHead


def build_task_model(feature_extractor: keras.Model, head: ClassificationHead, embedding: keras.Model | None = None,
                     name: str = "metatune_classifier") -> keras.Model:
    """Raw input -> backbone features -> [meta-learned embedding] -> head -> probabilities.

    The feature extractor stays the first nested model (evaluation reads frozen
    features from it); the head's input is the penultimate representation.
    """
    source = feature_extractor.inputs[0]
    name = "text" if "string" in str(source.dtype) else "pixels"
    inputs = keras.Input(shape=feature_extractor.input_shape[1:], dtype=source.dtype, name=name)
    features = feature_extractor(inputs)
    if embedding is not None:
        features = embedding(features)
    return keras.Model(inputs, head(features), name=name)


def load_task_model(path: str, modality: str = "image") -> keras.Model:
    """Load a saved classifier; `safe_mode=True` refuses any serialized Python code.

    Importing the layer modules registers metatune's custom objects; keras-hub (for
    text) is imported only when needed, since it costs seconds.
    """
    import models.layers  # noqa: F401  (registers ImageNormalization, SequencePooling)

    if modality == "text":
        import models.text_layers  # noqa: F401  (registers the tokenizer; imports keras-hub)
    return keras.saving.load_model(path, safe_mode=True, compile=False)
