"""The `top_blocks` source stage on text: a BERT-family backbone's top `--unfreeze` transformer blocks
meta-trained on the source's episodes (app/top_block_stage.py is the image counterpart).

Why a text stage of its own: a text has no augmented views, and a transformer block takes the
hidden states *and* the padding mask (models/text_split.py cuts the extractor there). What it
shares with the image stage: the frozen lower blocks run once per file (here in memory, for the
run: a source's bottom pass takes seconds, and the pooled features of the source, which the
other candidates train on, come from the same pass: features = top(bottom(texts))); only the top
blocks and the pooling run per episode; the top shares its layers with the run's feature
extractor, so a kept stage is the backbone in the run's model.keras, a discarded one is put back.

How it trains (P>M>F's meta-training, Hu et al. 2022, on the backbone itself): ProtoNet episodes
of the source's meta-training classes with a cosine classifier (L2-normalised pooled features,
normalised prototypes, logits scaled by COSINE_SCALE), the blocks at the image stage's rate
(--meta-learning-rate x BLOCK_LEARNING_RATE_MULTIPLIER). No Dense embedding on top: the kept
candidate is the trained extractor's own features (like `none`, so `auto` compares the two on
equal terms). An epoch is as many episodes as cover the meta-training texts once; after each,
nearest-prototype accuracy on the source's class-disjoint meta-validation episodes, and the
best epoch is kept (epoch 0, the pretrained blocks, included), stopping at the first epoch that
does not improve, at most MAX_EPOCHS. Measured while building it (Reuters R8 at 8 texts per
class, 5 draws; source: the R52 topics outside R8, 22 meta-training classes; logistic
regression on the features, MiniLM's top 2 blocks): 85.6% on the pretrained features, 89.3%
after one epoch, 88.7 / 88.6 / 88.6% after 2-4 epochs, while the source's meta-validation
accuracy went 90.1 -> 98.8 -> 98.8 -> 98.4 -> 97.9: it peaks where the target does, and
training on (a softmax over the source classes for 2-4 epochs) overfits the source and gives the
target back up to 2.5 points. One epoch took 15 s on 2 CPU cores.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from app.source_stage import CHOICE_EPISODES, META_VAL_SEED_OFFSET, episode_accuracy, identity_embedding
from app.text_phase2 import activation_budget_bytes, bottom_outputs
from app.top_block_stage import BLOCK_LEARNING_RATE_MULTIPLIER  # the blocks' rate, as on images
from data.episodes import EpisodeSampler
from data.pipeline import read_texts
from models.errors import ModelError
from models.finetuning import unfreeze_top_blocks
from models.text_split import TextSplit, split_text_extractor

logger = logging.getLogger(__name__)
MAX_EPOCHS = 2
COSINE_SCALE = 10.0  # P>M>F's cosine classifier scale: a softmax over cosines in [-1, 1] needs it to be peaked
BOTTOM_BATCH = 32


@dataclass
class TextTopBlockCut:
    split: TextSplit
    bottom_rows: dict = field(default_factory=dict)  # path -> (hidden states, padding mask), computed this run

    def bottom_outputs(self, examples) -> tuple[np.ndarray, np.ndarray]:
        """The frozen bottom's [hidden states, padding mask] of `examples`, each file's computed once per run."""
        missing = list({e.path: e for e in examples if e.path not in self.bottom_rows}.values())
        if missing:
            texts = read_texts([e.path for e in missing], [e.encoding for e in missing])
            hidden, mask = bottom_outputs(self.split, texts, BOTTOM_BATCH)
            self.bottom_rows.update(zip((e.path for e in missing), zip(hidden, mask)))
        if not examples:
            return bottom_outputs(self.split, [], BOTTOM_BATCH)
        rows = [self.bottom_rows[e.path] for e in examples]
        return np.stack([h for h, _ in rows]), np.stack([m for _, m in rows])

    def features(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The extractor's pooled features from the bottom's outputs (top blocks as they are now)."""
        return self.split.top.predict([hidden, mask], verbose=0, batch_size=BOTTOM_BATCH)


def cut_text_backbone(feature_extractor: keras.Model, spec, unfreeze: str, num_files: int
                      ) -> tuple[TextTopBlockCut | None, str]:
    """(the cut, "") or (None, why this text backbone has no top_blocks stage)."""
    if unfreeze == "all":
        return None, "--unfreeze all leaves no frozen bottom to run once"
    try:
        split = split_text_extractor(feature_extractor, spec, int(unfreeze))
    except ModelError as error:
        return None, str(error)
    needed, budget = num_files * split.activation_bytes_per_text, activation_budget_bytes()
    if needed > budget:
        return None, (f"the hidden states of the {num_files} source and target texts below the top "
                      f"{split.top_blocks} block(s) would take {needed / 2**20:.0f} MiB, over the "
                      f"{budget / 2**20:.0f} MiB budget")
    return TextTopBlockCut(split), ""


def features_through_text_cut(cut: TextTopBlockCut, examples) -> np.ndarray:
    """The pretrained extractor's features of `examples` as top(bottom(texts)); the bottom's outputs stay for
    the stage (one bottom pass per source text serves the features and the stage)."""
    if not examples:
        return np.zeros((0, int(cut.split.top.outputs[0].shape[-1])), np.float32)
    return cut.features(*cut.bottom_outputs(examples))


def _normalised(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def _episode_step(top: keras.Model, optimizer, variables, ways: int, support_count: int):
    """One episode's outer step: cosine-prototype cross-entropy of the queries."""
    @tf.function(reduce_retracing=True)
    def step(hidden, mask, support_labels, query_labels):
        with tf.GradientTape() as tape:
            features = tf.math.l2_normalize(top([hidden, mask], training=True), axis=-1)
            support, query = features[:support_count], features[support_count:]
            prototypes = tf.math.l2_normalize(tf.math.unsorted_segment_mean(support, support_labels, ways), axis=-1)
            logits = COSINE_SCALE * tf.matmul(query, prototypes, transpose_b=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(query_labels, logits))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss
    return step


def train_text_top_blocks(cut: TextTopBlockCut, spec, feature_extractor: keras.Model, train_rows, train_labels,
                          val_rows, val_labels, train_shape, val_shape, config) -> tuple[int, list[float]]:
    """Cosine ProtoNet episodes over the top blocks; the best epoch by meta-validation kept (module docstring).

    `train_rows` / `val_rows`: (hidden states, padding mask) of the meta-training / meta-validation texts.
    Returns (epochs kept, meta-validation accuracy by epoch from epoch 0; empty without meta-validation)."""
    keras.utils.set_random_seed(config.seed)
    unfreeze_top_blocks(spec, feature_extractor, cut.split.top_blocks)
    variables = cut.split.top.trainable_variables
    optimizer = keras.optimizers.Adam(config.meta_learning_rate * BLOCK_LEARNING_RATE_MULTIPLIER)
    ways, shots, queries = train_shape.ways, train_shape.shots, train_shape.queries
    sampler = EpisodeSampler(train_labels, ways, shots, queries, seed=config.seed)
    step = _episode_step(cut.split.top, optimizer, variables, ways, ways * shots)
    steps_per_epoch = max(1, math.ceil(len(train_labels) / (ways * (shots + queries))))
    val_sampler = None if val_shape is None else EpisodeSampler(
        val_labels, val_shape.ways, val_shape.shots, val_shape.queries, seed=config.seed + META_VAL_SEED_OFFSET)

    def val_accuracy() -> float:
        return episode_accuracy(_normalised(cut.features(*val_rows)), val_sampler, CHOICE_EPISODES)

    history = [] if val_sampler is None else [val_accuracy()]
    best, best_weights, kept = (history[0] if history else -1.0), [v.numpy() for v in variables], 0
    hidden, mask = train_rows
    last = MAX_EPOCHS if val_sampler is not None else 1
    for epoch in range(1, last + 1):
        for number in range((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch):
            episode = sampler.episode(number)
            order = np.concatenate([episode.support_index, episode.query_index])
            step(tf.constant(hidden[order]), tf.constant(mask[order]),
                 tf.constant(episode.support_labels, tf.int32), tf.constant(episode.query_labels, tf.int32))
        if val_sampler is None:  # nothing to choose an epoch by: the one epoch is kept
            kept, best_weights = epoch, [v.numpy() for v in variables]
            break
        history.append(val_accuracy())
        logger.info("top_blocks source stage (text) epoch %d: %d episodes | meta-validation episode accuracy %.4f",
                    epoch, steps_per_epoch, history[-1])
        if history[-1] <= best:
            break
        best, best_weights, kept = history[-1], [v.numpy() for v in variables], epoch
    for variable, value in zip(variables, best_weights):
        variable.assign(value)
    feature_extractor.trainable = False
    return kept, history


@dataclass
class TextTopBlockCandidate:
    cut: TextTopBlockCut
    scorer: keras.Model  # the kept extractor's features as they are (identity): what `auto` scores
    embedding: keras.Model  # what the task model gets when kept (the same identity)
    target_rows: np.ndarray  # the kept extractor's features of the target's train + validation files
    meta_val_rows: np.ndarray  # ... of the source's meta-validation files
    pristine: list
    epochs: int
    meta_validation: list[float]  # accuracy by epoch, epoch 0 first
    seconds: float

    def target_features(self) -> np.ndarray:
        return self.target_rows

    def discard(self, feature_extractor: keras.Model) -> None:
        feature_extractor.set_weights(self.pristine)

    def summary(self) -> dict:
        return {"cut": self.cut.split.cut_layer, "blocks": self.cut.split.top_blocks, "views": 1, "epochs": self.epochs,
                "meta_validation_by_epoch": [round(value, 4) for value in self.meta_validation],
                "seconds": round(self.seconds, 1)}


def text_top_block_candidate(cut: TextTopBlockCut, spec, feature_extractor: keras.Model, pools, target_examples,
                             config) -> TextTopBlockCandidate:
    started = time.perf_counter()
    pristine = feature_extractor.get_weights()
    train_rows, val_rows = cut.bottom_outputs(pools.train), cut.bottom_outputs(pools.val)
    epochs, history = train_text_top_blocks(cut, spec, feature_extractor, train_rows, pools.train_labels, val_rows,
                                            pools.val_labels, pools.train_shape, pools.val_shape, config)
    target_features = cut.features(*cut.bottom_outputs(target_examples))
    meta_val_features = cut.features(*val_rows)
    seconds = time.perf_counter() - started
    logger.info("top_blocks source stage (text): top %d block(s), %d meta-training texts, %d epoch(s) kept%s, "
                "%.1f s", cut.split.top_blocks, len(pools.train), epochs,
                "" if history else " (no meta-validation to choose by)", seconds)
    scorer = identity_embedding(target_features.shape[-1], "top_blocks_features")
    return TextTopBlockCandidate(cut, scorer, scorer, target_features, meta_val_features, pristine, epochs, history,
                                 seconds)
