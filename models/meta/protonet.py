"""Prototypical networks (Snell et al. 2017) and the prototype classifier head.

Per task: prototype p_c = mean support embedding of class c; logits = -||q - p_c||^2;
cross-entropy on the query. No inner loop: the outer gradient trains the embedding.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from models.errors import ModelError
from models.meta.base import MetaLearner, cross_entropy

# Finite (not -inf) so softmax cross-entropy and its gradient stay finite; exp() of it is 0.
ABSENT_CLASS_LOGIT = -1e9
# The mean logit gap between prototypes of a prototype head that is fine-tuned (`scaled_prototype_head`).
LOGIT_GAP = 10.0


def prototypes(embeddings, labels, num_classes):
    """[num_classes, D] mean embedding per class (keras ops, differentiable)."""
    one_hot = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype=embeddings.dtype)  # [B, C]
    totals = ops.matmul(ops.transpose(one_hot), embeddings)  # [C, D]
    counts = ops.sum(one_hot, axis=0)  # [C]
    return totals / ops.expand_dims(ops.maximum(counts, 1.0), axis=-1)


def squared_distances(queries, protos):
    """[Q, C] squared Euclidean distances; the difference form (no cancellation error)."""
    diff = ops.expand_dims(queries, axis=1) - ops.expand_dims(protos, axis=0)
    return ops.sum(ops.square(diff), axis=-1)


def scaled_prototype_head(embeddings, labels, num_classes: int, logit_gap: float = LOGIT_GAP):
    """Dense weights (kernel [D, C], bias [C]) ranking like -||x - p_c||^2 / temperature: the prototype
    head to fine-tune (keras ops: float32 tensors in a graph, or numpy arrays).

    Why the temperature: squared distances between prototypes are often in the hundreds, so the
    softmax of raw distances is exactly one-hot in float32 and the loss has no gradient at all
    (measured: every learning rate left 1-shot predictions unchanged). Dividing by the temperature
    that puts the mean squared gap between prototypes at `logit_gap` keeps the ranking and gives
    gradients (P>M>F's cosine classifier scales by 10 for the same reason)."""
    embeddings = ops.cast(embeddings, "float32")
    protos = prototypes(embeddings, labels, num_classes)
    gaps = squared_distances(protos, protos)
    mean_gap = ops.sum(gaps) / float(max(num_classes * (num_classes - 1), 1))
    temperature = ops.maximum(mean_gap / logit_gap, 1e-12)
    return 2.0 * ops.transpose(protos) / temperature, -ops.sum(ops.square(protos), axis=1) / temperature


@keras.saving.register_keras_serializable(package="metatune")
class ProtoNet(MetaLearner):
    """Prototypical network over `embedding`. Arguments: see `MetaLearner`.

    All trainable embedding variables are meta-trained (there is no inner loop to adapt).
    `learner(x)` returns embeddings; after meta-training build the classifier with
    `prototype_head_weights`.
    """

    def task_loss_and_logits(self, params, support_x, support_y, query_x, query_y, training):
        support = ops.cast(self.features(params, support_x, training=training, update_state=training), "float32")
        query = ops.cast(self.features(params, query_x, training=self.transductive, update_state=False), "float32")
        logits = -squared_distances(query, prototypes(support, support_y, self.ways))
        # A class with no support example (a 5-way validation episode scored by a learner
        # meta-trained 20-way) has no prototype: its zero vector must not win queries.
        present = ops.sum(ops.one_hot(ops.cast(support_y, "int32"), self.ways, dtype="float32"), axis=0) > 0
        logits = ops.where(ops.expand_dims(present, 0), logits, ABSENT_CLASS_LOGIT)
        return cross_entropy(query_y, logits), logits


def prototype_head_weights(embeddings: np.ndarray, labels: np.ndarray, num_classes: int):
    """Dense weights (kernel [D, C], bias [C]) whose logits rank like -||x - p_c||^2.

    -||x - p||^2 = 2 x.p - ||p||^2 - ||x||^2 and the last term is the same for every
    class, so softmax(x @ kernel + bias) equals softmax(-squared distance) with
    kernel = 2 P^T and bias = -||p_c||^2. Every class needs at least one example.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"embeddings must be [examples, D] with one label each. Received: "
                         f"embeddings {embeddings.shape}, labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}. Received: {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ModelError(f"Every class needs at least one example to form its prototype. Received none for class ids {missing}")
    protos = np.zeros((num_classes, embeddings.shape[1]))
    np.add.at(protos, labels, embeddings)
    protos /= counts[:, None]
    kernel = 2.0 * protos.T
    bias = -np.sum(protos**2, axis=1)
    return kernel.astype(np.float32), bias.astype(np.float32)
