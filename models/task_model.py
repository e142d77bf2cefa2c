"""The task model: raw input -> backbone features -> head -> class probabilities."""

from __future__ import annotations

import keras

from models.errors import ModelError
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


def layers_after_features(task_model: keras.Model, feature_extractor: keras.Model) -> list[keras.layers.Layer]:
    """The layers `task_model` applies to `feature_extractor`'s output, in order: the meta-learned
    embedding when there is one, then the head's layers (`build_task_model` makes that chain; a
    loaded model.keras keeps the order). The one walk every stage that replays them uses: the
    text cut's top model, the pair loss's embedding, the unknown-class score's replay on cached
    features."""
    layers = [layer for layer in task_model.layers if not isinstance(layer, keras.layers.InputLayer)]
    position = next((i for i, layer in enumerate(layers) if layer is feature_extractor), None)
    if position is None:
        raise ModelError(f"{feature_extractor.name!r} is not a layer of {task_model.name!r}")
    return layers[position + 1:]


def load_task_model(path: str, modality: str = "image") -> keras.Model:
    """Load a saved classifier; `safe_mode=True` refuses any serialized Python code.

    Importing the layer modules registers metatune's custom objects; keras-hub (for
    text) is imported only when needed, since it costs seconds.
    """
    import models.layers  # noqa: F401  (registers ImageNormalization, SequencePooling)

    if modality == "text":
        import models.text_layers  # noqa: F401  (registers the tokenizer; imports keras-hub)
    return keras.saving.load_model(path, safe_mode=True, compile=False)
