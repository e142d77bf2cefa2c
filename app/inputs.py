"""Turning examples into model inputs, the same way for training, evaluation and prediction."""

from __future__ import annotations

from data.pipeline import image_dataset, read_texts, text_dataset


def example_dataset(examples, modality: str, size: int, batch_size: int, resize: str, labels: bool = False):
    """Unshuffled batches of raw inputs (images or strings) for prediction or feature extraction."""
    paths = [e.path for e in examples]
    targets = [e.label for e in examples] if labels else None
    if modality == "image":
        return image_dataset(paths, targets, (size, size), batch_size, resize=resize)
    return text_dataset(read_texts(paths, [e.encoding for e in examples]), targets, batch_size)
