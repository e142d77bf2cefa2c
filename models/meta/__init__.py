"""Meta-learning wrappers (learn2learn style: one small class per algorithm).

    protonet  ProtoNet   squared-Euclidean prototypes, no inner loop
    reptile   Reptile    inner SGD, θ ← θ + ε·mean(φ − θ)
    fomaml    FOMAML     first-order MAML
    maml      MAML       second-order MAML (check its memory first)

All are `keras.Model`s trained with compile() + fit() on episode batches
((support_x, support_y, query_x), query_y); see models/meta/base.py.

    # (a) cached features [.., D]: a small trainable embedding over them
    inputs = keras.Input((D,))
    embedding = keras.Model(inputs, keras.layers.Dense(256, activation="relu")(inputs))
    learner = build_meta_learner("fomaml", embedding, ways=5, adapt="all",
                                 inner_learning_rate=0.01, inner_steps=5)

    # (b) raw inputs: backbone with frozen lower part / BatchNorm, trainable top
    #     (unfreeze_top_blocks in models/finetuning.py), adapting the top block + head
    learner = build_meta_learner("maml", feature_extractor, ways=5,
                                 adapt=[layer for group in top_groups[:1] for layer in group])
    learner.check_memory((5 * 1, 84, 84, 3), (5 * 15, 84, 84, 3))  # second order only

    learner.compile(optimizer=keras.optimizers.Adam(1e-3))   # the meta optimizer
    learner.fit(episodes, validation_data=val_episodes, epochs=..., callbacks=[...])

ProtoNet takes only (embedding, ways, transductive=...); after meta-training its
classifier is `prototype_head_weights(embeddings, labels, num_classes)` in a Dense layer.
"""

from models.meta.base import GradientMetaLearner, MetaLearner, cross_entropy, flat_layers
from models.meta.maml import FOMAML, MAML
from models.meta.memory import available_memory_bytes, check_maml_fits, maml_memory_estimate
from models.meta.protonet import LOGIT_GAP, ProtoNet, prototype_head_weights, scaled_prototype_head
from models.meta.reptile import Reptile

ALGORITHMS = {"protonet": ProtoNet, "reptile": Reptile, "fomaml": FOMAML, "maml": MAML}


def build_meta_learner(algorithm: str, embedding, ways: int, **kwargs) -> MetaLearner:
    """`ALGORITHMS[algorithm](embedding, ways, **kwargs)` with a clear error for unknown names."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"Unknown meta-learning algorithm. Expected one of {sorted(ALGORITHMS)}. "
                         f"Received: algorithm={algorithm!r}") from None
    return cls(embedding, ways, **kwargs)


__all__ = [
    "ALGORITHMS", "FOMAML", "GradientMetaLearner", "LOGIT_GAP", "MAML", "MetaLearner", "ProtoNet", "Reptile",
    "available_memory_bytes", "build_meta_learner", "check_maml_fits", "cross_entropy", "flat_layers",
    "maml_memory_estimate", "prototype_head_weights", "scaled_prototype_head",
]
