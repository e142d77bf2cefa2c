"""Fine-tuning on each support at test time (app/support_finetuning.py): it never sees the queries, learning
rate 0 is the plain learner, the choice on validation episodes, and evaluate.py --episodes reports the run's
learner with and without it (tests/app/test_episodic_evaluation.py, on its runs). That the choice is made on the
target's train + validation files at training time and saved in metadata.json is tested with the protonet run of
tests/test_meta_strategies.py (no extra run)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from app import support_finetuning as sft
from app.fewshot_baselines import nearest_centroid_predict
from models.meta import LOGIT_GAP

WAYS, SHOTS = 3, 2


def _episode(seed=0, dim=8, shots=SHOTS, queries=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (WAYS, dim))
    support_labels = np.repeat(np.arange(WAYS), shots)
    query_labels = np.repeat(np.arange(WAYS), queries)
    support = (centres[support_labels] + rng.normal(0, 1, (len(support_labels), dim))).astype("float32")
    query = (centres[query_labels] + rng.normal(0, 1, (len(query_labels), dim))).astype("float32")
    return support, support_labels, query


def _dense_relu(seed=0) -> keras.Model:
    inputs = keras.Input((8,), name="features")
    dense = keras.layers.Dense(6, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    return keras.Model(inputs, dense(inputs))


def test_the_fine_tuned_weights_come_from_the_support_alone_and_leave_the_embedding_untouched():
    embedding = _dense_relu()
    before = [v.numpy().copy() for v in embedding.weights]
    finetuner = sft.SupportFinetuner(embedding, WAYS)
    setting = sft.FinetuneSetting(1e-2, 10)
    support, labels, query = _episode()
    weights = finetuner.adapt(support, labels, setting)
    assert not np.allclose(weights[0], before[0])  # it did fine-tune
    predict = finetuner.predictor(setting)
    predicted = predict(support, labels, query, WAYS)
    # Whatever else is in the query set (other features, other labels: none are passed), each query is
    # classified by the weights adapted on the support alone.
    other_query = np.concatenate([query[:3], np.random.default_rng(9).normal(0, 5, (9, 8)).astype("float32")])
    np.testing.assert_array_equal(predict(support, labels, other_query, WAYS)[:3], predicted[:3])
    embedded = np.maximum(query @ weights[0] + weights[1], 0.0)
    np.testing.assert_array_equal(predicted, np.argmax(embedded @ weights[2] + weights[3], axis=-1))
    np.testing.assert_array_equal(finetuner.adapt(support, labels, setting)[0], weights[0])  # replayable
    for variable, value in zip(embedding.weights, before):  # episodes cannot leak into each other
        np.testing.assert_array_equal(variable.numpy(), value)
    assert finetuner._episode.experimental_get_tracing_count() == 1  # one trace serves every episode
    finetuner.predictor(sft.FinetuneSetting(1e-3, 3))(*_episode(seed=1), WAYS)
    assert finetuner._episode.experimental_get_tracing_count() == 1


def test_learning_rate_0_keeps_the_embedding_and_the_prototype_head():
    embedding = _dense_relu(seed=1)
    support, labels, query = _episode(seed=2)
    weights = sft.SupportFinetuner(embedding, WAYS).adapt(support, labels, sft.FinetuneSetting(0.0, 5))
    np.testing.assert_array_equal(weights[0], embedding.weights[0].numpy())
    embedded = embedding.predict(support, verbose=0)
    protos = np.stack([embedded[labels == c].mean(axis=0) for c in range(WAYS)])
    # The prototype head divided by one positive temperature: the nearest-prototype ranking, logits not saturated.
    largest = np.unravel_index(np.argmax(np.abs(protos.T)), protos.T.shape)
    temperature = 2 * protos.T[largest] / weights[2][largest]
    assert temperature > 0
    np.testing.assert_allclose(weights[2] * temperature, 2 * protos.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights[3] * temperature, -np.sum(protos**2, axis=1), rtol=1e-5, atol=1e-5)
    gaps = np.sum((protos[:, None] - protos[None]) ** 2, axis=-1)
    assert np.sum(gaps) / (WAYS * (WAYS - 1)) / temperature == pytest.approx(LOGIT_GAP, rel=1e-4)


def test_the_choice_scores_learning_rate_0_as_the_plain_learner_and_prefers_it_on_ties(monkeypatch):
    monkeypatch.setattr(sft, "CHOICE_EPISODES", 4)
    monkeypatch.setattr(sft, "STEPS", (2,))
    labels = np.repeat(np.arange(4), 8)
    inputs = (np.eye(4)[labels] @ np.random.default_rng(0).normal(0, 1, (4, 8)) * 10).astype("float32")
    choice = sft.choose_support_finetuning(_dense_relu(), inputs, labels, lambda shots: (inputs, nearest_centroid_predict),
                                           seed=0, ways=3)
    assert set(choice["by_shots"]) == {"1", "5"}
    for shots, scores in choice["scores"].items():
        assert set(scores) == {s.name for s in sft.grid()}
        if len(set(scores.values())) == 1:  # all perfect on separable classes: no fine-tuning
            assert choice["by_shots"][shots] == {"learning_rate": 0.0, "steps": 0}
    assert sft.setting_for(choice, 3) == sft.setting_for(choice, 1)


def test_fine_tuning_is_chosen_only_when_it_beats_none_clearly_on_validation_episodes():
    off, small, large = sft.FinetuneSetting(0.0, 0), sft.FinetuneSetting(1e-4, 10), sft.FinetuneSetting(1e-3, 50)
    base = [0.8, 0.9, 0.7, 1.0] * 10
    steady = [a + 0.05 for a in base]  # +5 points on every episode: clear
    noisy = [a + (0.4 if i % 2 else -0.3) for i, a in enumerate(base)]  # +5 points on average, within the noise
    assert sft._choose({off: base, small: steady, large: noisy}) == small
    assert sft._choose({off: base, small: noisy}) == off
    assert sft._choose({off: base, small: steady, large: steady}) == small  # ties: fewer steps
