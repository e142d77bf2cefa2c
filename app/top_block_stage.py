"""The `top_blocks` source stage on images: the pretrained backbone's top `--unfreeze` blocks meta-trained on the
source (app/text_top_block_stage.py is the text counterpart).

The other source stages (app/source_stage.py) train a Dense embedding over frozen pooled
features; this one also trains the backbone's top blocks (BatchNorm frozen, i.e. in inference
mode, models/finetuning.py) with ProtoNet episodes of the source, as P>M>F (Hu et al. 2022)
meta-trains the backbone itself. Practical on a CPU through cached activations:

- the backbone is cut at the input of its top blocks (models/backbone_split.py); the frozen
  bottom runs once per source and target file and its activations are cached on disk
  (data/activation_cache.py, keyed by backbone, exact weights, input size, resize mode, the
  cut, the augmentation and the view number, rows by file content);
- augmentation is a small number of views per source file (`view_count`): view 0 the file,
  the others one random rotation / zoom / contrast draw each, computed once. Fresh draws at
  every step would need the bottom at every step, which is the cost the cache removes; a few
  views already give the top blocks more than one input per file. A larger source needs
  fewer: the views aim at about VIEW_ROWS cached inputs in all (at least one view per file, at
  most VIEWS), since the stage's training draws a fixed number of episodes whatever the
  source's size; so a larger source costs one bottom pass per file and little more;
- the source's whole-backbone features (what the other candidates train on) come from the
  same bottom pass: features = top(bottom(x)), the top being far cheaper than the bottom
  (`features_through_cut`), so the bottom runs once per source file, not twice;
- only the top blocks, the pooling and the embedding run per episode.

The top shares its layers with the run's feature extractor, so training it trains the
extractor in place: if the stage is kept, the trained blocks are in the run's model.keras
(raw input -> probabilities) and are the backbone `--backbone RUN_DIR`, `evaluate.py
--episodes` and predict.py use; if it is not kept, the extractor's weights are put back.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from app.features import content_key
from app.source_stage import META_VAL_SEED_OFFSET, dense_embedding
from data.activation_cache import activation_store, activation_store_key
from data.augment import AugmentConfig
from data.episodes import EpisodeSampler, meta_batches
from data.pipeline import image_dataset
from models.backbone_split import BackboneSplit, split_backbone
from models.errors import ModelError
from models.finetuning import unfreeze_top_blocks
from models.fingerprint import reduced_compute_dtype, weights_fingerprint
from models.meta import build_meta_learner
from models.optimizers import DiscriminativeAdam

logger = logging.getLogger(__name__)
VIEWS = 4  # at most this many cached views per source file: the file itself and 3 augmented draws
# The cached inputs the views aim at in all (views x meta-training files). The stage's training draws
# --meta-epochs x --meta-steps x --meta-batch-size episodes (600 000 inputs at the defaults), so past
# this many rows more views add backbone passes, not variety: a 16 000-file source keeps 4 views, a
# 40 000-file one 2 (bench/bench_meta_transfer.py measures 1, 2 and 4 views).
VIEW_ROWS = 64_000
# No flip: a mirrored glyph or digit can be another class; rotation, zoom and contrast keep a class a class.
AUGMENTATION = AugmentConfig(flip=False, rotation=0.05, zoom=0.1, contrast=0.1)
# The pretrained blocks move at a tenth of the embedding's rate: they hold general features that a
# source of a few thousand files should adjust, not overwrite (discriminative rates, ULMFiT).
BLOCK_LEARNING_RATE_MULTIPLIER = 0.1
ACTIVATION_BATCH = 64
# How long the stage trains: --meta-epochs epochs of --meta-steps (20 x 100 steps at the defaults), all
# of them, the last kept. A step of the top blocks costs about 0.2-0.8 s on 2 CPU cores (4 episodes of
# 75 inputs through EfficientNet-Lite0's two widest blocks and its 1280-channel head), so that is about
# 7 minutes there, whatever the source's size. Not early-stopped: its meta-validation loss (40
# episodes, 0.005-0.03 at 99% accuracy) is too flat and noisy to pick an epoch; stopped after 2 epochs
# without a better one, 3 of 4 fonts-bench runs kept epoch 1 to 3 and scored 71.9-76.2% on the
# target's cross-validation. Trained longer, the target improved all the way (fonts bench, seed 0:
# target cross-validation 78.9% / 83.4% / 87.0% after 5 / 10 / 20 epochs; novel 5-way 1-shot
# episodes 95.70% / 96.69% / 97.66%; BENCHMARKS.md, meta-transfer), so the stage has no budget of
# its own any more: a user short of time lowers --meta-epochs.


@dataclass
class TopBlockCut:
    split: BackboneSplit
    identity: dict  # what the activations depend on besides the file (the cache key)


def cut_backbone(feature_extractor: keras.Model, spec, backbone_name: str, weights: str, size: int, resize: str,
                 unfreeze: str) -> tuple[TopBlockCut | None, str]:
    """(the cut, "") or (None, why this image backbone has no top_blocks stage; app/text_top_block_stage.py
    cuts text backbones)."""
    if unfreeze == "all":
        return None, "--unfreeze all leaves no frozen bottom to cache"
    try:
        split = split_backbone(feature_extractor, spec, int(unfreeze))
    except ModelError as error:
        return None, str(error)
    identity = {"backbone": backbone_name, "weights": weights, "weights_sha256": weights_fingerprint(split.bottom),
                "size": size, "resize": resize, "cut": split.cut_layer,
                "augmentation": vars(AUGMENTATION)}
    if reduced_compute_dtype(split.bottom):  # activations computed in float16 on a GPU are not a float32 run's
        identity["compute_dtype"] = reduced_compute_dtype(split.bottom)
    return TopBlockCut(split, identity), ""


def activations(cut: TopBlockCut, examples, size: int, resize: str, view: int, use_cache: bool,
                exact: dict | None = None) -> np.ndarray:
    """The bottom's output for `examples` (view 0: the files; view v >= 1: the v-th augmented draw), float16.

    `exact`: filled with {index: float32 row} for the rows computed now (before the float16 store)."""
    def compute(indices):
        paths = [examples[i].path for i in indices]
        dataset = image_dataset(paths, None, (size, size), ACTIVATION_BATCH, seed=view, resize=resize,
                                augment=AUGMENTATION if view else None)
        rows = cut.split.bottom.predict(dataset, verbose=0)
        if exact is not None:
            exact.update(zip(indices, rows))
        return rows

    if not examples:
        return np.zeros((0, *cut.split.activation_shape), np.float16)
    if not use_cache or any(not e.sha256 for e in examples):
        return np.asarray(compute(list(range(len(examples)))), np.float16)
    rows, computed = activation_store(activation_store_key(cut.identity, view)).get_or_compute(
        [content_key(e) for e in examples], compute)
    logger.info("Top-block activations (view %d) for %d files: %d from the cache, %d computed", view,
                len(examples), len(examples) - computed, computed)
    return rows


def view_count(files: int) -> int:
    """Cached views per meta-training file for a source of `files` files (see VIEW_ROWS)."""
    return max(1, min(VIEWS, round(VIEW_ROWS / max(files, 1))))


def features_through_cut(cut: TopBlockCut, examples, size: int, resize: str, use_cache: bool) -> np.ndarray:
    """The extractor's pooled features of `examples` as top(bottom(x)), the bottom's output (view 0) cached.

    For the source files when the top_blocks stage will run: the features pass and the stage's
    activations then share one bottom pass per file. Called before the stage trains the top, so
    these are the pretrained extractor's features: for the files whose bottom runs now, from its
    float32 output, as the whole extractor's pass gives them (the float16 cached rows shifted the
    candidates' target scores by up to a point on the fonts bench, and the top_blocks stage's by
    more, through the protonet embedding it starts from); for rows already cached, from those."""
    if not examples:
        return np.zeros((0, int(cut.split.top.output_shape[-1])), np.float32)
    exact: dict = {}
    rows = activations(cut, examples, size, resize, 0, use_cache, exact).astype(np.float32)
    for index, row in exact.items():
        rows[index] = row
    return pooled_features(cut, rows)


def _view_fetch(views: np.ndarray, seed: int):
    """fetch(indices) for episodes: each example in one of its cached views, drawn per episode.

    The draw is seeded by the episode's indices, so the same episode number always sees the
    same views (episodes are built in parallel threads: no shared generator)."""
    def fetch(index: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(index).tobytes())])
        return views[rng.integers(0, len(views), len(index)), index].astype(np.float32)
    return fetch


def scoring_model(cut: TopBlockCut, embedding: keras.Model) -> keras.Model:
    """Activations at the cut -> the embedding: what is meta-trained and scored."""
    inputs = keras.Input(cut.split.activation_shape, name="activations")
    return keras.Model(inputs, embedding(cut.split.top(inputs)), name="top_block_embedding")


def pooled_features(cut: TopBlockCut, activation_rows: np.ndarray) -> np.ndarray:
    """The (trained) extractor's features from cached activations: what the target head is fitted on."""
    return cut.split.top.predict(np.asarray(activation_rows, np.float32), verbose=0, batch_size=256)


def train_top_blocks(cut: TopBlockCut, spec, feature_extractor: keras.Model, views: np.ndarray, labels,
                     val_rows: np.ndarray, val_labels, train_shape, val_shape, config,
                     init_embedding: keras.Model | None) -> tuple[keras.Model, keras.Model, int]:
    """ProtoNet episodes of the source over the top blocks + pooling + Dense embedding.

    `views`: [views, files, *activation shape] of the meta-training files; `val_rows` the
    meta-validation files (view 0), whose episode loss is logged per epoch (the budget runs to its
    end: --meta-epochs, module comment). `init_embedding`: the features-mode protonet embedding, when trained,
    as the Dense layer's starting point. Returns (scoring model, Dense embedding, epochs kept).
    """
    keras.utils.set_random_seed(config.seed)
    unfreeze_top_blocks(spec, feature_extractor, cut.split.top_blocks)  # BatchNorm stays frozen
    embedding = dense_embedding(int(cut.split.top.output_shape[-1]), config.embedding_units,
                                name="top_block_meta_embedding")
    if init_embedding is not None:
        embedding.set_weights(init_embedding.get_weights())
    model = scoring_model(cut, embedding)
    learner = build_meta_learner("protonet", model, train_shape.ways, transductive=config.transductive)
    multipliers = {v.path: BLOCK_LEARNING_RATE_MULTIPLIER for v in cut.split.top.trainable_variables}
    learner.compile(optimizer=DiscriminativeAdam(multipliers, learning_rate=config.meta_learning_rate))
    sampler = EpisodeSampler(labels, train_shape.ways, train_shape.shots, train_shape.queries, seed=config.seed)
    shape = cut.split.activation_shape
    train_ds = meta_batches(sampler, _view_fetch(views, config.seed), tf.float32, shape, config.meta_batch_size)
    val_ds, monitor = None, "loss"
    if val_shape is not None:
        val_sampler = EpisodeSampler(val_labels, val_shape.ways, val_shape.shots, val_shape.queries,
                                     seed=config.seed + META_VAL_SEED_OFFSET)
        val_ds = meta_batches(val_sampler, _view_fetch(val_rows[None], config.seed), tf.float32, shape,
                              config.meta_batch_size, steps=10).cache()
        monitor = "val_loss"
    started = time.perf_counter()
    history = learner.fit(train_ds, steps_per_epoch=config.meta_steps,
                          epochs=config.meta_epochs, validation_data=val_ds, verbose=0)
    losses = history.history.get(monitor, [])
    logger.info("top_blocks source stage: %d epoch(s) of %d episodes, the last kept (%s by epoch: %s), %.1f s",
                len(losses), config.meta_steps * config.meta_batch_size, monitor,
                ", ".join(f"{value:.4f}" for value in losses), time.perf_counter() - started)
    feature_extractor.trainable = False
    return model, embedding, len(losses)


@dataclass
class TopBlockCandidate:
    cut: TopBlockCut
    scorer: keras.Model  # activations -> embedding: what `auto` scores
    embedding: keras.Model  # pooled features -> embedding: what the task model gets when kept
    target_rows: np.ndarray  # the target's train + validation files at the cut (view 0)
    meta_val_rows: np.ndarray  # the source's meta-validation files at the cut (view 0)
    pristine: list  # the extractor's weights before training, put back when the stage is not kept
    epochs: int
    views: int  # cached views per meta-training file (view_count)
    seconds: float  # activations (cached or computed) and training

    def target_features(self) -> np.ndarray:
        return pooled_features(self.cut, self.target_rows)

    def discard(self, feature_extractor: keras.Model) -> None:
        feature_extractor.set_weights(self.pristine)

    def summary(self) -> dict:
        return {"cut": self.cut.split.cut_layer, "blocks": self.cut.split.top_blocks, "views": self.views,
                "epochs": self.epochs, "seconds": round(self.seconds, 1)}


def top_block_candidate(cut: TopBlockCut, spec, feature_extractor: keras.Model, pools, target_examples, size: int,
                        resize: str, config, init_embedding: keras.Model | None) -> TopBlockCandidate:
    """Activations of the source pools (`view_count` views of the meta-training files) and the target, then
    training."""
    started = time.perf_counter()
    pristine = feature_extractor.get_weights()
    use_cache = bool(config.cache_features)
    count = view_count(len(pools.train))
    views = np.stack([activations(cut, pools.train, size, resize, view, use_cache) for view in range(count)])
    meta_val_rows = activations(cut, pools.val, size, resize, 0, use_cache)
    target_rows = activations(cut, target_examples, size, resize, 0, use_cache)
    logger.info("top_blocks source stage: backbone cut at %s (%d top block(s) train, activations %s); "
                "%d meta-training files x %d views cached in %.1f s", cut.split.cut_layer, cut.split.top_blocks,
                "x".join(map(str, cut.split.activation_shape)), len(pools.train), count, time.perf_counter() - started)
    scorer, embedding, epochs = train_top_blocks(cut, spec, feature_extractor, views, pools.train_labels,
                                                 meta_val_rows, pools.val_labels, pools.train_shape, pools.val_shape,
                                                 config, init_embedding)
    seconds = time.perf_counter() - started
    logger.info("top_blocks source stage: %.1f s in all (activations and training)", seconds)
    return TopBlockCandidate(cut, scorer, embedding, target_rows, meta_val_rows, pristine, epochs, count, seconds)
