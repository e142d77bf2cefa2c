"""The source stage of a `protonet` run with `--meta-data` (features input): which embedding the target gets.

Candidates (`--source-stage`):
- none: the frozen pretrained features themselves (no source stage at all);
- supervised: every meta-training class of the source a label, a softmax classifier on a
  Dense embedding, the embedding kept (Chen et al. 2019, Tian et al. 2020: the baseline
  meta-learning must clear);
- protonet: the same Dense embedding meta-trained on source episodes (the META phase);
- top_blocks: the backbone's top `--unfreeze` blocks meta-trained on source episodes, on
  intermediate activations computed once: with that embedding on images (app/top_block_stage.py),
  through a cosine classifier on the pooled features on text (app/text_top_block_stage.py).

`auto` trains all four (top_blocks where the backbone can be cut) and keeps the one whose embedding
classifies the target best: 5-fold
cross-validated accuracy of the target heads tried (prototypes, logistic regression:
app/target_heads.py) over the target's train + validation files (every labelled file the
target may use; never its test files). A source stage is kept only when it beats no
source stage there: on a source far from the target (20 Newsgroups for Reuters R8) a
protonet embedding can overfit the source and lose the target 30 points (issue 18), and the
source's own meta-validation episodes cannot see that. Ties go to no source stage, then to
the better accuracy on the source's class-disjoint meta-validation episodes. Every
candidate's two scores go into the log and metadata.json.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from app.fewshot_baselines import nearest_centroid_predict
from app.target_heads import CV_FOLDS, FIT, cross_validated_accuracy
from data.episodes import EpisodeSampler

logger = logging.getLogger(__name__)
SOURCE_STAGES = ("none", "supervised", "protonet", "top_blocks")
CHOICE_EPISODES = 100  # fixed meta-validation episodes of the source per candidate (numbers 0..99)
CHOICE_SEED_OFFSET = 2_000_003  # their sampler's seed: apart from training's and early stopping's
META_VAL_SEED_OFFSET = 1_000_003  # the meta-validation episodes that early stopping and the stages' epochs watch
# The supervised stage's epoch: at most this many source rows (a full pass below it), so its budget, like
# the episodic stages' (--meta-steps x --meta-epochs), does not grow with the source's size.
SUPERVISED_EPOCH_ROWS = 16_384
TIE_ORDER = {"none": 0, "supervised": 1, "protonet": 2, "top_blocks": 3}  # equal target scores: the cheaper stage wins


@dataclass
class StageScore:
    name: str
    target_accuracy: float  # the best head's cross-validated accuracy on the target's train + validation files
    head: str  # that head (app/target_heads.py)
    target_heads: dict  # every head tried: its cross-validated accuracy
    source_val_accuracy: float | None  # class-disjoint meta-validation episodes of the source (None: none exist)


def episode_accuracy(embeddings: np.ndarray, sampler: EpisodeSampler, episodes: int) -> float:
    """Mean query accuracy of nearest prototype over episodes 0..episodes-1 of `sampler`."""
    accuracies = []
    for number in range(episodes):
        episode = sampler.episode(number)
        predicted = nearest_centroid_predict(embeddings[episode.support_index], episode.support_labels,
                                             embeddings[episode.query_index], sampler.ways)
        accuracies.append(np.mean(predicted == episode.query_labels, axis=0))
    return float(np.mean(accuracies, axis=0))


def identity_embedding(dimension: int, layer_name: str = "no_source_stage") -> keras.Model:
    """The extractor's features themselves, as a (serializable) embedding model: 'no source stage', or the
    text top_blocks stage, which trains the extractor and nothing after it (`layer_name` says which)."""
    inputs = keras.Input((dimension,), name="features")
    return keras.Model(inputs, keras.layers.Identity(name=layer_name)(inputs), name="meta_embedding")


def dense_embedding(dimension: int, units: int, name: str = "meta_embedding") -> keras.Model:
    """The trainable embedding over cached features that protonet and supervised stages train."""
    inputs = keras.Input((dimension,), name="features")
    return keras.Model(inputs, keras.layers.Dense(units, activation="relu", name="meta_embedding_dense")(inputs),
                       name=name)


class _EpisodeEarlyStopping(keras.callbacks.Callback):
    """Early stopping of the supervised stage on the source's meta-validation episodes (accuracy)."""

    def __init__(self, embedding: keras.Model, val_x: np.ndarray, sampler: EpisodeSampler | None, patience: int):
        super().__init__()
        self.embedding, self.val_x, self.sampler, self.patience = embedding, val_x, sampler, patience
        self.best, self.best_weights, self.wait, self.best_epoch = -1.0, None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        if self.sampler is None:
            return
        accuracy = episode_accuracy(self.embedding.predict(self.val_x, verbose=0, batch_size=256), self.sampler,
                                    CHOICE_EPISODES)
        logger.info("supervised source stage epoch %d: loss %.4f | meta-validation episode accuracy %.4f",
                    epoch + 1, (logs or {}).get("loss", float("nan")), accuracy)
        if accuracy > self.best:
            self.best, self.best_weights, self.wait, self.best_epoch = accuracy, self.embedding.get_weights(), 0, epoch + 1
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.embedding.set_weights(self.best_weights)


def train_supervised(train_x: np.ndarray, train_labels, val_x: np.ndarray, val_sampler: EpisodeSampler | None,
                     units: int, learning_rate: float, epochs: int, patience: int, batch_size: int,
                     seed: int) -> tuple[keras.Model, int]:
    """A Dense embedding trained as the body of a softmax classifier over the source's meta-training classes.

    Returns (embedding, epochs kept). Seconds on cached features; not checkpointed (a run
    killed here repeats it on resume).
    """
    keras.utils.set_random_seed(seed)
    classes, y = np.unique(np.asarray(train_labels, np.int64), return_inverse=True)
    embedding = dense_embedding(train_x.shape[-1], units)
    inputs = keras.Input((train_x.shape[-1],), name="features")
    logits = keras.layers.Dense(len(classes), name="source_classifier")(embedding(inputs))
    model = keras.Model(inputs, logits, name="supervised_source_stage")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stopper = _EpisodeEarlyStopping(embedding, val_x, val_sampler, patience)
    if len(train_x) <= SUPERVISED_EPOCH_ROWS:
        model.fit(train_x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[stopper])
    else:  # a larger source: epochs of SUPERVISED_EPOCH_ROWS rows, reshuffled passes over all of it
        rows = tf.data.Dataset.from_tensor_slices((train_x, y)).shuffle(len(train_x), seed=seed).repeat()
        model.fit(rows.batch(batch_size), steps_per_epoch=SUPERVISED_EPOCH_ROWS // batch_size, epochs=epochs,
                  verbose=0, callbacks=[stopper])
    return embedding, stopper.best_epoch or epochs


def choose(scores: list[StageScore]) -> StageScore:
    """Best target accuracy; ties to the cheaper stage (none first), then to the better source score."""
    return sorted(scores, key=lambda s: (-s.target_accuracy, TIE_ORDER[s.name],
                                         -(s.source_val_accuracy or 0.0)))[0]


def score(name: str, embedding: keras.Model, target_x: np.ndarray, target_labels, num_classes: int,
          heads: tuple[str, ...], val_x: np.ndarray, val_sampler: EpisodeSampler | None, seed: int) -> StageScore:
    embedded = embedding.predict(target_x, verbose=0, batch_size=256)
    scores = {head: cross_validated_accuracy(FIT[head], embedded, target_labels, num_classes, seed) for head in heads}
    best = max(heads, key=lambda head: (scores[head], -heads.index(head)))  # ties: prototypes
    source = (episode_accuracy(embedding.predict(val_x, verbose=0, batch_size=256), val_sampler, CHOICE_EPISODES)
              if val_sampler is not None else None)
    logger.info("Source stage %-10s target %d-fold accuracy %s | source meta-validation episodes %s", name,
                CV_FOLDS, ", ".join(f"{head} {value:.4f}" for head, value in scores.items()),
                "n/a" if source is None else f"{source:.4f}")
    return StageScore(name, scores[best], best, scores, source)


def summary(scores: list[StageScore], chosen: StageScore, asked: str) -> dict:
    return {"asked": asked, "chosen": chosen.name,
            "candidates": {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in scores},
            "rule": f"best {CV_FOLDS}-fold cross-validated accuracy (over the heads tried) on the target's train + "
                    "validation files; ties: none, then supervised, then protonet, then top_blocks, then the source "
                    "meta-validation episode accuracy"}
