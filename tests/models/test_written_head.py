"""A head whose weights are written (prototypes, logistic regression): it computes softmax(x·K + b), without dropout."""

import numpy as np

from models.heads import ClassificationHead


def test_a_written_head_is_the_softmax_of_its_given_weights():
    rng = np.random.default_rng(0)
    kernel, bias, features = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=(4, 5)).astype(np.float32)
    head, head_model = ClassificationHead.written(kernel, bias, seed=1)
    logits = features @ kernel.astype(np.float32) + bias.astype(np.float32)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head_model(features, training=True).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert head.dropout.rate == 0.0 and head.layers == [head.dense]
