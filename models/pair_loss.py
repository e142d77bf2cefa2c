"""SetFit's pair signal inside a classifier's fine-tuning: a cosine pair loss on the head's input.

Why: on few-shot text, SetFit (Tunstall et al., 2022) beats plain cross-entropy fine-tuning of the
same sentence encoder by training it first on pairs of texts: same class, cosine similarity pulled
to 1; different classes, pushed to 0. It draws 20 pairs per text and runs the whole encoder on
each pair (346 s on R8 at 8 texts per class here, BENCHMARKS.md). The pairs a batch already
holds carry the same signal at no extra forward pass: a batch of 32 texts holds 496 pairs. So
metatune's text fine-tuning can add this loss over every pair of the batch to its cross-entropy
(`--pair-loss W`; off by default: on the text bench it did not help on average, bench/notes.md):

    pair_loss = (mean over same-class pairs of (cos - 1)^2 + mean over other pairs of cos^2) / 2

the two kinds weighted equally (SetFit samples them in equal numbers), on the embedding the head
reads (MiniLM's pooled output, or the source stage's embedding of a `--meta-data` run).

`PairLossClassifier` is the model fine-tuning's fit() trains: it shares every layer with the
classifier it wraps (training it trains the task model, which is what is saved), returns the
class probabilities when called for inference, and adds `weight` x pair_loss to the compiled
loss during training. It is never saved itself (checkpoints hold its weights, the run saves the
task model), but it serializes like every metatune model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.errors import ModelError
from models.heads import class_indices
from models.task_model import layers_after_features

HEAD_LAYER_PREFIX = "head_"  # models/heads.ClassificationHead names every layer it owns so


def pairwise_cosine_loss(embeddings, labels):
    """The module docstring's pair loss of one batch: [examples, units] embeddings, class indices
    (or one-hot / blended one-hot targets: their argmax). 0 for a batch with no pair of a kind."""
    labels = tf.reshape(class_indices(labels), [-1])
    unit = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=-1)
    cosine = tf.matmul(unit, unit, transpose_b=True)
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    positive = same * (1.0 - tf.eye(tf.shape(unit)[0]))  # a text paired with itself says nothing
    negative = 1.0 - same
    pulled = tf.reduce_sum(positive * tf.square(cosine - 1.0)) / tf.maximum(tf.reduce_sum(positive), 1.0)
    pushed = tf.reduce_sum(negative * tf.square(cosine)) / tf.maximum(tf.reduce_sum(negative), 1.0)
    return 0.5 * (pulled + pushed)


def probabilities_and_embedding(inputs_to_features: keras.Model, task_model: keras.Model,
                                feature_extractor: keras.Model) -> keras.Model:
    """inputs -> [class probabilities, the head's input]: `inputs_to_features` (the feature extractor, or
    the top of a cut one) then the task model's layers after `feature_extractor`, the same layer
    objects (a chain: feature extractor, optionally an embedding, then the head's layers)."""
    inputs = inputs_to_features.inputs
    inputs = inputs[0] if len(inputs) == 1 else inputs  # the structure its batches come in
    features = inputs_to_features(inputs)
    x, embedding = features, None
    for layer in layers_after_features(task_model, feature_extractor):
        if embedding is None and layer.name.startswith(HEAD_LAYER_PREFIX):
            embedding = x
        x = layer(x)
    if embedding is None:
        raise ModelError(f"{task_model.name!r} has no head layer (named {HEAD_LAYER_PREFIX}*) after "
                         f"{feature_extractor.name!r}")
    return keras.Model(inputs, [x, embedding], name=f"{task_model.name}_with_embedding")


@keras.saving.register_keras_serializable(package="metatune")
class PairLossClassifier(keras.Model):
    """`classifier` (inputs -> [probabilities, embedding]) trained on cross-entropy + `weight` x the
    pair loss (module docstring). Called for inference, it returns the probabilities only; in
    training, both (so that `compute_loss` sees the embedding of the same forward pass)."""

    def __init__(self, classifier: keras.Model, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.weight = classifier, float(weight)

    def call(self, inputs, training=False):
        probabilities, embedding = self.classifier(inputs, training=training)
        return (probabilities, embedding) if training else probabilities

    def pair_term(self, embedding, targets):
        """weight x pair loss, this replica's share: like Keras' own losses under tf.distribute, each
        replica contributes 1/replicas of it and the optimizer sums the replicas' gradients. The pairs
        are those of this replica's part of the batch (a replica does not see the others' embeddings),
        so under a strategy the loss is an average over smaller batches than on one device."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.weight * pairwise_cosine_loss(embedding, targets) / replicas

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y_pred, (tuple, list)):  # evaluation: the probabilities only
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        probabilities, embedding = y_pred
        loss = super().compute_loss(x, y, probabilities, sample_weight, training=training)
        return loss + tf.cast(self.pair_term(embedding, y), loss.dtype)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        probabilities = y_pred[0] if isinstance(y_pred, (tuple, list)) else y_pred
        return super().compute_metrics(x, y, probabilities, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "classifier": keras.saving.serialize_keras_object(self.classifier),
                "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
