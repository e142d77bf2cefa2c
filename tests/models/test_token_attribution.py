"""Token attributions point at what defines the class: one keyword ("great" vs "awful")."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.backbones.registry import lookup
from models.heads import ClassificationHead
from models.task_model import build_task_model
from models.token_attribution import TokenAttribution

pytestmark = pytest.mark.slow  # the real MiniLM weights (make test-fast leaves these tests out)

NEUTRAL = ["the", "movie", "film", "food", "service", "was", "is", "very", "and", "it"]
KEYWORDS = {0: "great", 1: "awful"}
SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "[MASK]"}


def keyword_texts(rng, count):
    """Four neutral words with the class's keyword at a random place."""
    texts, labels = [], []
    for i in range(count):
        label = i % 2
        words = rng.choice(NEUTRAL, 4).tolist()
        words.insert(int(rng.integers(0, 5)), KEYWORDS[label])
        texts.append(" ".join(words))
        labels.append(label)
    return np.array(texts), np.array(labels)


@pytest.fixture(scope="module")
def keyword_model():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    extractor = lookup("tiny_text").build_features(16, "none")
    model = build_task_model(extractor, ClassificationHead(2, dropout=0.0, seed=0))
    texts, labels = keyword_texts(rng, 64)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(tf.data.Dataset.from_tensor_slices((texts, labels)).batch(16), epochs=25, verbose=0)
    test_texts, test_labels = keyword_texts(rng, 20)
    assert np.mean(model.predict(tf.constant(test_texts), verbose=0).argmax(axis=1) == test_labels) > 0.9
    return model, test_texts, test_labels


def test_the_keyword_gets_the_largest_attribution(keyword_model):
    model, texts, labels = keyword_model
    explained = TokenAttribution(model).attribute(list(texts), labels)
    hits = [result.words[result.top(1)[0]] == KEYWORDS[label] if result.top(1) else False
            for result, label in zip(explained, labels)]
    # Gradient x input is a local, first-order explanation: in a few texts of a confident transformer a
    # neutral word edges the keyword out (17 of 20 here); chance would be 1 in 5.
    assert np.mean(hits) >= 0.7, [(r.words, np.round(r.scores, 3).tolist()) for r in explained]


def test_the_replayed_pass_matches_the_model_and_special_tokens_never_appear(keyword_model):
    model, texts, labels = keyword_model
    attribution = TokenAttribution(model)
    probabilities, _, _ = attribution.probabilities_and_attributions(list(texts[:4]), labels[:4])
    np.testing.assert_allclose(probabilities, model.predict(tf.constant(texts[:4]), verbose=0), atol=1e-5)
    long_text = " ".join(["the awful movie"] * 20)  # longer than 16 tokens: cut
    results = attribution.attribute([*texts[:4], long_text, "greatness"], [*labels[:4], 1, 0])
    for result in results:
        assert not SPECIAL & set(result.words) and len(result.words) == len(result.scores)
    assert results[4].truncated and not results[0].truncated
    assert len(results[4].words) == 14  # 16 positions less [CLS] and [SEP]
    assert results[5].words == ["greatness"]  # "great" + "##n" "##e" "##s" "##s" merged back into one word
    assert sum(abs(s) for s in results[0].shares()) == pytest.approx(1.0)


def test_a_reused_run_as_backbone_is_attributed_through_its_nesting():
    """A run trained on `--backbone RUN_DIR` nests the source's extractor (and its hidden layer) one level
    deeper: the attributions found no tokenizer there (predict.py --explain failed with a traceback)."""
    keras.utils.set_random_seed(1)
    extractor = lookup("tiny_text").build_features(16, "none")
    text = keras.Input(shape=(), dtype="string", name="text")
    hidden = keras.layers.Dense(8, activation="relu", name="head_hidden")(extractor(text))
    nested = keras.Model(text, hidden, name="reused_backbone")  # as app/backbone_reuse.py cuts a loaded run
    extractor = lookup("tiny_text").build_features(16, "none")
    hidden = keras.layers.Dense(8, activation="relu", name="head_hidden")(extractor.output)
    flat = keras.Model(extractor.input, hidden, name="reused_backbone")  # such layers in one graph
    texts = ["the great film", "awful food was not fine"]
    for reused in (nested, flat):
        model = build_task_model(reused, ClassificationHead(2, dropout=0.0, seed=0))
        attribution = TokenAttribution(model)
        assert [layer.name for layer in attribution.after] == ["head_hidden", "head_dropout", "head_dense"]
        probabilities, _, _ = attribution.probabilities_and_attributions(texts, np.array([0, 1]))
        np.testing.assert_allclose(probabilities, model.predict(tf.constant(texts), verbose=0), atol=1e-5)
        assert attribution.attribute(texts, [0, 1])[0].words == ["the", "great", "film"]
