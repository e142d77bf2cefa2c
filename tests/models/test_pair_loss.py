"""models/pair_loss.py: the pair loss's value on batches whose answer is known, and the model that adds it
to fine-tuning: inference unchanged, its loss exactly cross-entropy + weight x pair loss, training
pulls same-class embeddings together, it serializes, and the multi-worker loop trains it as fit() does."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.config import TrainConfig
from app.distributed_loop import fit_with_own_step
from app.phases import unused_pair_loss_warning, uses_pair_loss
from models.heads import ClassificationHead
from models.pair_loss import PairLossClassifier, pairwise_cosine_loss, probabilities_and_embedding
from models.task_model import build_task_model


def _loss(embeddings, labels) -> float:
    return float(pairwise_cosine_loss(tf.constant(embeddings, tf.float32), tf.constant(labels)))


def test_the_pair_loss_is_zero_for_orthogonal_classes_whatever_the_lengths():
    embeddings = [[3.0, 0.0], [0.5, 0.0], [0.0, 2.0], [0.0, 0.1]]
    assert _loss(embeddings, [0, 0, 1, 1]) == pytest.approx(0.0, abs=1e-7)


def test_the_pair_loss_of_a_collapsed_batch_is_its_pushed_half():
    """Every embedding the same: same-class pairs are perfect (0), other-class pairs at cosine 1 (1)."""
    assert _loss([[1.0, 2.0]] * 4, [0, 0, 1, 1]) == pytest.approx(0.5)


def test_the_pair_loss_weighs_both_kinds_of_pair_equally():
    """Cosines: same-class pairs 0 (cost 1 each), other-class pairs 0 (cost 0): (1 + 0) / 2 whatever the counts."""
    embeddings = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert _loss(embeddings, [0, 0, 1]) == pytest.approx(0.5)


def test_one_hot_targets_and_single_pairs_are_handled():
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2])
    one_hot = np.eye(3, dtype=np.float32)[labels]
    assert _loss(embeddings, one_hot) == pytest.approx(_loss(embeddings, labels))
    no_positive = _loss(embeddings[:3], labels[:3])  # one text per class: only other-class pairs
    unit = embeddings[:3] / np.linalg.norm(embeddings[:3], axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert no_positive == pytest.approx(0.5 * np.mean(np.square(cosine[~np.eye(3, dtype=bool)])), rel=1e-5)


def _task_model(features=4, classes=2, embedding_units=None):
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(features,), name="raw")
    extractor = keras.Model(inputs, keras.layers.Dense(features, name="backbone_dense")(inputs), name="extractor")
    embedding = None
    if embedding_units:
        features_in = keras.Input(shape=(features,))
        embedding = keras.Model(features_in, keras.layers.Dense(embedding_units)(features_in), name="embedding")
    head = ClassificationHead(classes, dropout=0.0, seed=1)
    return build_task_model(extractor, head, embedding), extractor, embedding


@pytest.mark.parametrize("embedding_units", [None, 3])
def test_the_embedding_output_is_what_the_head_reads(embedding_units):
    task_model, extractor, embedding = _task_model(embedding_units=embedding_units)
    both = probabilities_and_embedding(extractor, task_model, extractor)
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    probabilities, head_input = both(x)
    np.testing.assert_allclose(probabilities, task_model(x), atol=1e-6)
    expected = extractor(x) if embedding is None else embedding(extractor(x))
    np.testing.assert_allclose(head_input, expected, atol=1e-6)


def test_a_model_without_a_metatune_head_is_refused():
    inputs = keras.Input(shape=(3,))
    extractor = keras.Model(inputs, keras.layers.Dense(3)(inputs), name="extractor")
    outer_in = keras.Input(shape=(3,))
    plain = keras.Model(outer_in, keras.layers.Dense(2, name="logits")(extractor(outer_in)))
    with pytest.raises(ValueError, match="no head layer"):
        probabilities_and_embedding(extractor, plain, extractor)


def _data(seed=0, n=16):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int32)
    x = (rng.normal(size=(n, 4)) + labels[:, None] * np.array([1.0, -1.0, 0.5, 0.0])).astype(np.float32)
    return x, labels


def _wrapped(weight):
    task_model, extractor, _ = _task_model()
    model = PairLossClassifier(probabilities_and_embedding(extractor, task_model, extractor), weight)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    return model, task_model, extractor


def test_inference_returns_the_task_models_probabilities_and_the_loss_adds_the_weighted_pair_term():
    model, task_model, extractor = _wrapped(2.5)
    x, labels = _data()
    np.testing.assert_allclose(model.predict(x, verbose=0), task_model.predict(x, verbose=0), atol=1e-6)
    probabilities, embedding = model(x, training=True)
    total = float(model.compute_loss(x, labels, (probabilities, embedding)))
    cross_entropy = float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))
    assert total == pytest.approx(cross_entropy + 2.5 * _loss(extractor(x), labels), rel=1e-5)
    assert float(model.compute_loss(x, labels, probabilities, training=False)) == pytest.approx(cross_entropy, rel=1e-5)


def test_training_with_the_pair_loss_trains_the_task_model_and_pulls_classes_apart():
    x, labels = _data()
    after = {}
    for weight in (0.0, 1.0):
        model, task_model, extractor = _wrapped(weight)
        start = [w.copy() for w in task_model.get_weights()]
        history = model.fit(x, labels, batch_size=16, epochs=30, shuffle=False, verbose=0).history
        assert set(history) == {"loss", "accuracy"}
        assert any(not np.allclose(a, b) for a, b in zip(start, task_model.get_weights()))  # shared layers trained
        after[weight] = _loss(extractor(x), labels)
    assert after[1.0] < after[0.0]


def test_the_pair_loss_model_serializes():
    model, _, _ = _wrapped(0.7)
    x, _ = _data()
    restored = PairLossClassifier.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    assert restored.weight == 0.7
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_the_multi_worker_step_trains_the_pair_loss_model_as_fit_does():
    x, labels = _data(n=20)
    train = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)  # 8 + 8 + 4: an uneven last batch
    reference, _, _ = _wrapped(1.0)
    history = reference.fit(train, epochs=2, shuffle=False, verbose=0).history
    ours, _, _ = _wrapped(1.0)
    logged = keras.callbacks.History()
    fit_with_own_step(ours, ours.loss, train, None, epochs=2, initial_epoch=0, callbacks=[logged])
    for expected, got in zip(reference.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # The logged loss is the training objective, pair term included, as fit() logs it.
    np.testing.assert_allclose(logged.history["loss"], history["loss"], atol=1e-5)


def test_the_pair_loss_is_off_by_default_applies_to_text_and_warns_only_when_set_on_images():
    default, set_ = TrainConfig(data_dir="d"), TrainConfig(data_dir="d", pair_loss=2.0)
    assert uses_pair_loss(set_, "text") and not uses_pair_loss(default, "text")
    assert not uses_pair_loss(default, "image") and not uses_pair_loss(set_, "image")
    assert unused_pair_loss_warning(default, "image") is None and unused_pair_loss_warning(set_, "text") is None
    assert "--pair-loss 2 has no effect" in unused_pair_loss_warning(set_, "image")
    # A text run that fine-tunes nothing (linear) ignored it without a word.
    assert "--pair-loss 2 has no effect" in unused_pair_loss_warning(set_, "text", fine_tunes=False)
    assert unused_pair_loss_warning(default, "text", fine_tunes=False) is None
