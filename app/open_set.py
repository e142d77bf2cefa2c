"""A run's embedding (the input of `head_dense`) next to its probabilities, for the unknown-class
detector: fitted at the end of training (`fit_run_detector`), applied by predict.py and
evaluate.py --unknown (`embed_examples`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import keras
import numpy as np

from app.errors import UserError
from app.features import extract_features
from app.inputs import example_dataset
from app.model_parts import HEAD_LAYER, apply_chain, layers_between
from app.threshold_transfer import held_out_offsets
from app.unknown_selection import UnknownDetector, fit_unknown_detector
from app.unknown_store import save_detector
from data.pipeline import text_dataset

logger = logging.getLogger(__name__)
CHECK_ROWS = 4


def _head(task_model: keras.Model):
    try:
        return task_model.get_layer(HEAD_LAYER)
    except ValueError:
        raise UserError(f"model.keras has no {HEAD_LAYER!r} layer, so the unknown-class score has no embedding. "
                        f"Received layers: {[layer.name for layer in task_model.layers]}") from None


def _head_input(task_model: keras.Model):
    """The symbolic input of `head_dense` inside `task_model`. During training the layer is also
    called by the features-only head model, so `layer.input` may be that model's tensor: take
    the call that belongs to this graph."""
    for node in _head(task_model)._inbound_nodes:
        tensor = node.input_tensors[0]
        try:
            keras.Model(task_model.inputs, tensor)
        except ValueError:
            continue
        return tensor
    raise UserError(f"model.keras's {HEAD_LAYER!r} layer is not connected to its input.")


def embedding_model(task_model: keras.Model) -> keras.Model:
    """Raw input -> (embedding, probabilities): one pass gives both."""
    return keras.Model(task_model.inputs, [_head_input(task_model), task_model.outputs[0]], name="with_embedding")


def head_weights(task_model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    kernel, bias = _head(task_model).get_weights()
    return np.asarray(kernel, np.float64), np.asarray(bias, np.float64)


def embed(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, probabilities) of a dataset of raw inputs, through `embedding_model`."""
    embeddings, probabilities = model.predict(dataset, verbose=0)
    return np.asarray(embeddings), np.asarray(probabilities)


def embed_examples(run, examples, texts=(), batch_size: int = 32,
                   model: keras.Model | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, probabilities) of a loaded run's files (Example) and literal strings, in that order.
    `model`: the run's `embedding_model`, for a caller that embeds in several calls (a new one traces its
    prediction function again)."""
    model = model if model is not None else embedding_model(run.model)
    parts = []
    if examples:
        parts.append(embed(model, example_dataset(examples, run.modality, run.input_size, batch_size, run.resize)))
    if texts:
        parts.append(embed(model, text_dataset(list(texts), None, batch_size)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def run_embeddings(task_model: keras.Model, examples, cached: np.ndarray, modality: str, size: int,
                   batch_size: int, resize: str) -> np.ndarray:
    """The final model's embedding of `examples`. When the backbone is still the one whose features
    were cached (linear, meta on features), the layers between backbone and head are replayed on
    the cached features (milliseconds); a check on a few files catches a changed backbone
    (finetune, meta on raw inputs), and then the embedding is computed from the files."""
    if not examples:
        return np.zeros((0, _head_input(task_model).shape[-1]), np.float32)
    layers = layers_between(task_model)
    replayed = apply_chain(layers, cached, batch_size)
    penultimate = keras.Model(task_model.inputs, _head_input(task_model))
    reference = extract_features(penultimate, examples[:CHECK_ROWS], modality, size, batch_size, resize)
    if replayed.shape[1:] == reference.shape[1:] and np.allclose(replayed[:CHECK_ROWS], reference, rtol=1e-3,
                                                                 atol=1e-3):
        return replayed
    logger.info("The backbone changed during training: computing the embedding of %d files for the unknown-class "
                "score.", len(examples))
    return extract_features(penultimate, examples, modality, size, batch_size, resize)


def _split_embeddings(task_model: keras.Model, config, modality: str, size: int, examples: tuple, features: tuple):
    """`run_embeddings` of the training and the validation split, in one pass: each run_embeddings builds a model
    and traces its prediction function, about 1-2 s of a small text run's time per call, once per split before."""
    together = run_embeddings(task_model, [example for split in examples for example in split],
                              np.concatenate([np.asarray(cached) for cached in features]), modality, size,
                              config.batch_size, config.resize)
    return tuple(np.split(together, np.cumsum([len(split) for split in examples])[:-1]))


def first_model_offsets(task_model: keras.Model, config, modality: str, size: int, train_examples, val_examples,
                        train_features: np.ndarray, val_features: np.ndarray) -> dict[str, float]:
    """Before a refit that retrains the embedding: where the first model's unknown-class threshold lies among
    its training files' scores, per score (app/threshold_transfer.py), for fit_run_detector's
    `threshold_offsets`. Costs one pass of the first model over the training and validation files when its
    backbone changed (finetune), a replay of the cached features otherwise."""
    train_embeddings, val_embeddings = _split_embeddings(task_model, config, modality, size, (train_examples, val_examples),
                                                         (train_features, val_features))
    return held_out_offsets(train_embeddings, [e.label for e in train_examples], val_embeddings,
                            *head_weights(task_model), config.reject_recall, config.seed)


def fit_run_detector(task_model: keras.Model, config, modality: str, size: int, train_examples, val_examples,
                     train_features: np.ndarray, val_features: np.ndarray, run_dir: Path,
                     held_out_head: tuple[np.ndarray, np.ndarray] | None = None,
                     validation_trained: bool = False,
                     threshold_offsets: dict[str, float] | None = None) -> UnknownDetector:
    """Fit the unknown-class detector of a finished model and write it into the run directory.

    held_out_head: after a refit on train + validation that changed only head_dense, the first model's head
    (kernel, bias): the detector scores with it, so the validation files its threshold is set on are new to
    everything that scores them, as a served file is (app/training.py::_held_out_head says why). The
    embedding is the final model's, which is the first model's there. validation_trained: the final model
    trained on the validation files (a refit). threshold_offsets: after a refit that retrained the embedding
    too, the first model's thresholds (first_model_offsets), which the final threshold is carried over from;
    without either, the threshold is set on files the final model has seen, and unknown.json says so."""
    train_embeddings, val_embeddings = _split_embeddings(task_model, config, modality, size, (train_examples, val_examples),
                                                         (train_features, val_features))
    kernel, bias = held_out_head if held_out_head is not None else head_weights(task_model)
    scorer, detector = fit_unknown_detector(train_embeddings, [e.label for e in train_examples], val_embeddings,
                                            [e.label for e in val_examples], kernel, bias, config.reject_recall,
                                            config.unknown_score, config.seed, threshold_offsets)
    transferred = "threshold_offset" in detector.selection
    rejects_nothing = math.isinf(detector.threshold)  # too few validation files: unknown_scores.detector_threshold
    # Without a threshold, "it rejects more new known files than 1 - reject_recall" would be wrong: it rejects none.
    detector.fitted_on += _refit_note(held_out_head is not None, validation_trained and not rejects_nothing,
                                      transferred)
    if rejects_nothing:
        detector.fitted_on += ("; no threshold: too few validation files to keep reject_recall of known files, so the "
                               "detector rejects nothing")
    save_detector(run_dir, scorer, detector)
    return detector


def _refit_note(held_out: bool, validation_trained: bool, transferred: bool) -> str:
    """What unknown.json's fitted_on adds about a refit (nothing without one)."""
    if held_out:
        return ("; the head that scores is the first model's, before the refit on train + validation: it never saw "
                "the validation files")
    if transferred:
        return ("; the final model trained on the validation files (the refit on train + validation), so the "
                "threshold is carried over from the first model's, which did not: the same offset from the median "
                "of the training files' scores, in interquartile ranges (selection.threshold_offset)")
    if validation_trained:
        # The refit retrained the embedding too, and the first model's offsets were not kept (a run resumed from a
        # checkpoint written before they were): the threshold is set on files the final model has seen.
        logger.info("The refit on train + validation retrained more than the last layer: the unknown-class "
                    "threshold is set on validation files the final model has seen, so it rejects more than "
                    "1 - --reject-recall of new files of known classes (--refit no gives a held-out threshold).")
        return ("; the final model trained on the validation files (the refit on train + validation) and no head "
                "without them scores its embedding: the threshold rejects more new known files than 1 - reject_recall")
    return ""
