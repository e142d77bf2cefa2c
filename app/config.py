"""Training configuration: one typed dataclass, its CLI, config files, validation and JSON round trip.

Precedence: TrainConfig defaults < the --config file < the flags the user actually typed.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import datetime
import difflib
import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from app.cli import MAX_BATCH_SIZE, OneErrorLineParser, number, whole_number
from app.distribution import DISTRIBUTE_CHOICES
from app.errors import UserError
from app.run_dir import (CONFIG_FILE, INCOMPLETE_MARKER, MANIFEST_FILE, METADATA_FILE, MODEL_FILE, holds_a_run,
                         is_run_directory, shell_path)

logger = logging.getLogger(__name__)

TRANSFER_STRATEGIES = ("linear", "finetune")
META_STRATEGIES = ("protonet", "reptile", "fomaml", "maml")
STRATEGIES = TRANSFER_STRATEGIES + META_STRATEGIES
CHOICES = {
    "strategy": STRATEGIES,
    "resize": ("stretch", "pad", "crop"),
    "class_weight": ("none", "auto"),
    "pooling": ("auto", "mean", "cls"),
    "lr_schedule": ("cosine", "constant", "plateau"),
    "precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    "image_cache": ("auto", "memory", "disk", "none"),
    "distribute": DISTRIBUTE_CHOICES,
    "meta_input": ("auto", "features", "raw"),
    "refit": ("auto", "yes", "no"),
    "source_stage": ("auto", "none", "supervised", "protonet", "top_blocks"),
    "target_head": ("auto", "prototypes", "logistic_regression"),
    "target_finetune": ("auto", "yes", "no"),
    # Mirrors app/unknown_scores.SCORES (kept literal: importing it would pull numpy scoring into the CLI).
    "unknown_score": ("auto", "folds", "max_softmax", "energy", "centroid", "knn", "mahalanobis", "relative_mahalanobis",
                      "max_softmax+knn", "energy+relative_mahalanobis"),
}
# finetune's recipe per modality (and, on images, per training-set size): the values of the options
# left unset (None) once the data is known. Images with enough files per class: the recipe that won the
# transfer benchmark (BENCHMARKS.md, "transfer": the whole backbone at discriminative rates with MixUp
# beat `linear` by a median 2.2 points at 100 images per class, where the top-2-blocks recipe lost to
# it). With few files per class it overfits instead (10 per class: 0.735 against the top-2-blocks
# recipe's 0.773 and linear's 0.765 on the same seed), so small image sets keep the top 2 blocks.
# Text keeps what wins there (the top 2 transformer blocks; MixUp does not apply). Other strategies
# use --unfreeze only on raw inputs (meta strategies), where training the whole backbone per episode
# would be far too slow on a CPU: 2 blocks.
TOP_BLOCKS_RECIPE = {"unfreeze": "2", "finetune_learning_rate": 1e-4, "lr_decay": 0.5, "mixup": 0.0}
FINETUNE_RECIPES = {
    "image": {"unfreeze": "all", "finetune_learning_rate": 3e-4, "lr_decay": 0.8, "mixup": 0.2},
    "image_small": TOP_BLOCKS_RECIPE,
    "text": TOP_BLOCKS_RECIPE,
}
WHOLE_BACKBONE_MIN_PER_CLASS = 50  # training files per class (median over classes) for the whole-backbone recipe
OTHER_STRATEGIES_RECIPE = TOP_BLOCKS_RECIPE
REFIT_AUTO_BELOW_PER_CLASS = 20  # auto refits when the training split has fewer files per class than this
MAX_COUNT = 2**31 - 1  # the largest count an integer option takes (TensorFlow's int32)
MAX_SEED = 2**32 - 1  # the largest seed numpy's global generator takes (keras.utils.set_random_seed seeds it)
# The gradient learners' inner loop is unrolled into the training graph, one copy of the forward and backward pass
# per step: measured on the smallest model (tests' tiny backbone over 8-d features), 200 steps took 38 s to build and
# 2 MB of memory per step, so --inner-steps 1000000 built for days and ran out of memory, with no line saying why.
# Published recipes adapt for 1 to 10 steps in training (MAML, Reptile; up to 50 at test time).
MAX_INNER_STEPS = 100
# Episodes per meta step are built one after the other, before the first log line: --meta-batch-size 10000000 held
# the run for hours at its first meta-validation batch (deaf to Ctrl-C / SIGTERM, stuck in TensorFlow's iterator).
# Recipes use 1 (ProtoNet) to 32 (MAML) episodes per step.
MAX_META_BATCH_SIZE = 1024
# Adam moves every weight by about its learning rate at each step, whatever the gradient's scale: --learning-rate 1e9
# trained the head to losses of 1e9 (1e30: 1e30) that stayed finite, so the NaN guard never fired, and the run ended
# "complete" with a model that answers at random with full confidence. Recipes use 1e-5 to 1e-2.
MAX_ADAM_LEARNING_RATE = 1.0
# A head layer of 65,536 units over EfficientNet-Lite0's 1,280 features holds 84 million weights (335 MB); heads use 0 to
# 1,024. --hidden-units 1000000000 built the run directory, computed every feature and ranked the label issues before
# TensorFlow ran out of memory on the layer, leaving an INCOMPLETE run whose resume could only fail the same way.
MAX_LAYER_UNITS = 65536
ADAM_RATE_LIMIT = (f"must be at most {MAX_ADAM_LEARNING_RATE:g} (Adam moves each weight by about the learning rate at "
                   "every step, so more diverges; 1e-5 to 1e-2 is usual)")


def is_count(text: str) -> bool:
    """Whether an option given as text (--unfreeze, --adapt, --exclude-label-issues) is a whole number in ASCII
    digits: str.isdigit() alone also takes '²' or '①', which int() then refuses with a traceback."""
    return text.isascii() and text.isdigit()


def _help(text: str, accept_int: bool = False, **kwargs):
    return field(metadata={"help": text, "accept_int": accept_int}, **kwargs)


@dataclass
class TrainConfig:
    data_dir: str = _help("Data folder: DATA_DIR/<class>/<files> or DATA_DIR/{train,val,test}/<class>/<files>.", default="")
    backbone: str | None = _help("Backbone: a name from --list-backbones, a keras-hub BERT preset, a local Hugging "
                                 "Face BERT folder, or a finished run's RUN_DIR (its (meta-)trained backbone and "
                                 "embedding up to its final layer; its modality, input size and resize mode) "
                                 "(default: efficientnet_lite0 for images, minilm for text).", default=None)
    strategy: str = _help("Training strategy: linear (frozen backbone, head on cached features), finetune "
                          "(head first, then the top backbone blocks at a lower learning rate), or a meta "
                          "strategy trained on N-way K-shot episodes: protonet, reptile, fomaml, maml (see the "
                          "meta-learning options; --meta-data SOURCE meta-trains on a source of other classes).",
                          default="linear")
    weights: str | None = _help("Backbone weights: images imagenet|none|PATH (a Keras weights file), text "
                                "pretrained|none (default: the backbone's pretrained weights; none for conv4 and "
                                "conv4_gray, which have none).", default=None)
    output: str | None = _help("Run directory (default: runs/<time>-<dataset>-<backbone>-<strategy>).", default=None)
    image_size: int | None = _help("Square input size in pixels for images (default: the backbone's).", default=None)
    sequence_length: int | None = _help("Tokens per text example, longer ones truncated (default: 128).", default=None)
    pooling: str = _help("Text features: mean over tokens, the [CLS] token, or auto (mean for sentence-transformer "
                         "checkpoints, else CLS).", default="auto")
    hidden_units: int = _help("Hidden ReLU layer in the head (0: none, a linear head).", default=0)
    epochs: int = _help("Maximum head-training epochs (early stopping on validation loss).", default=100)
    finetune_epochs: int = _help("finetune: maximum epochs of phase 2 (backbone top unfrozen).", default=20)
    # A config file naturally says `unfreeze: 2`; from_dict turns that int into the string the CLI gives.
    unfreeze: str | None = _help("finetune (and meta strategies on raw inputs): how many top backbone blocks train, N "
                                 "or all (default: all for finetune on images with 50+ training files per class, else 2).",
                                 default=None,
                                 accept_int=True)
    finetune_learning_rate: float | None = _help("finetune: phase-2 learning rate of the head and the top block "
                                                 "(default: 3e-4 on images with 50+ training files per class, else 1e-4).",
                                                 default=None)
    lr_decay: float | None = _help("finetune: learning-rate multiplier from one unfrozen block group to the next "
                                   "one down (discriminative learning rates; 1 = the same rate everywhere; default: "
                                   "0.8 on images with 50+ training files per class, else 0.5).", default=None)
    lr_schedule: str = _help("finetune phase 2: cosine (with linear warm-up), constant, or plateau (constant, "
                             "divided by 5 when validation loss stalls).", default="cosine")
    warmup_fraction: float = _help("finetune phase 2: fraction of the steps spent warming the learning rate up.", default=0.1)
    label_smoothing: float = _help("Label smoothing of the cross-entropy loss (0: none).", default=0.0)
    mixup: float | None = _help("finetune phase 2, images: MixUp strength, the alpha of the Beta(alpha, alpha) "
                                "mixing weights (0: off; default: 0.2 for finetune on images with 50+ training files "
                                "per class, else 0).", default=None)
    pair_loss: float = _help("Text fine-tuning (finetune phase 2, the target stage of --meta-data runs): weight of "
                             "SetFit's cosine pair loss over every pair of texts in a batch (same class pulled "
                             "together, other classes apart), added to the cross-entropy (0: off, the default: "
                             "measured, it did not help on average).", default=0.0)
    augment: bool = _help("finetune phase 2, images: random flip, rotation, zoom and contrast on training batches "
                          "(never on cached features or evaluation).", default=True)
    image_cache: str = _help("finetune phase 2: keep decoded training and validation images in memory (auto: when "
                             "they fit in a quarter of RAM), or on disk in metatune's cache (disk: for folders "
                             "larger than memory or slow to decode; the first use decodes them into a file, "
                             "later epochs and runs on the same files read it back).", default="auto")
    precision: str = _help("Compute precision: auto (mixed_float16 on a GPU that supports it, float32 on CPU), "
                           "float32, mixed_float16 or mixed_bfloat16. The head always computes in float32.", default="auto")
    ways: int = _help("Meta strategies: classes per training episode (N-way).", default=5)
    shots: int = _help("Meta strategies: support examples per class in an episode (K-shot).", default=5)
    queries: int = _help("Meta strategies: query examples per class in an episode (fewer, down to 1, when most "
                         "meta-training classes hold less than --shots + --queries examples).", default=10)
    meta_batch_size: int = _help(f"Meta strategies: episodes (tasks) per meta step, 1 to {MAX_META_BATCH_SIZE}.",
                                 default=4)
    meta_steps: int = _help("Meta strategies: meta steps per epoch.", default=100)
    meta_epochs: int = _help("Meta strategies: maximum epochs of meta-training (early stopping on meta-validation "
                             "episode loss); the top_blocks source stage trains all of them.", default=20)
    meta_learning_rate: float = _help("Meta strategies: outer (meta) learning rate, Adam; protonet, fomaml, maml.",
                                      default=1e-3)
    meta_step_size: float = _help("reptile: step from the initial weights towards the adapted ones (SGD on "
                                  "theta - phi).", default=0.25)
    inner_learning_rate: float = _help("reptile, fomaml, maml: inner-loop SGD learning rate.", default=0.01)
    inner_steps: int = _help(f"reptile, fomaml, maml: inner-loop steps on the support set, 1 to {MAX_INNER_STEPS} "
                             "(each step is unrolled into the training graph).", default=5)
    adapt: str = _help("reptile, fomaml, maml: what adapts in the inner loop: head, N (the top N layers with weights "
                       "of the embedding, plus the head), all, or auto (all for reptile, which only meta-learns "
                       "what adapts, and for fomaml on a backbone trained from scratch; head for maml, and for "
                       "fomaml over a pretrained backbone).",
                       default="auto", accept_int=True)
    embedding_units: int = _help("Meta strategies on frozen features: units of the trainable embedding layer "
                                 "(Dense + ReLU) meta-trained over the cached backbone features.", default=256)
    meta_input: str = _help("Meta strategies: features (frozen backbone, episodes on cached features: fast), raw "
                            "(episodes on raw inputs, the backbone trains: top --unfreeze blocks of a pretrained "
                            "backbone, everything for --weights none) or auto (raw when the backbone has no "
                            "pretrained weights, else features).", default="auto")
    transductive: bool = _help("Meta strategies: BatchNorm uses the query set's own statistics (transductive; "
                               "labelled as such in every report). Default: inductive.", default=False)
    meta_data: str | None = _help("Meta strategies: a separate folder of classes to meta-train on; its classes must "
                                  "not overlap the target's; meta-validation classes are held out of it whole "
                                  "(default: episodes from the target's training split, class-disjoint "
                                  "meta-validation classes when it has at least 4 x --ways classes).",
                                  default=None)
    source_stage: str = _help("protonet with --meta-data on features: what the source trains before the target's "
                              "head: none (the pretrained features), supervised (a softmax classifier over the "
                              "source classes, its embedding kept), protonet (source episodes), top_blocks (source "
                              "episodes also train the backbone's top --unfreeze blocks, BatchNorm frozen, over activations "
                              "computed once; image and text backbones), or auto (all of them, "
                              "keeping the best by 5-fold cross-validated accuracy of the target heads on the target's "
                              "train + validation files; a source stage only when it beats none).", default="auto")
    target_head: str = _help("protonet: the final classifier over the embedding: prototypes (class means), "
                             "logistic_regression, or auto (the better by 5-fold cross-validation on the target's "
                             "train + validation files, prototypes on ties and above 100 classes).", default="auto")
    target_finetune: str = _help("protonet on features: after the target head is written, fine-tune the backbone's "
                                 "top --unfreeze blocks, the embedding and that head on the target (finetune's "
                                 "recipe, early-stopped on the validation files, then refitted on train + "
                                 "validation): yes, no, or auto (text runs with --meta-data).", default="auto")
    init: str | None = _help("Meta strategies: start from the meta-learned initialisation of an earlier run "
                             "(its RUN_DIR; same strategy, backbone and embedding).", default=None)
    cache_features: bool = _help("Keep the frozen backbone's features on disk under the cache folder and reuse them "
                                 "across runs (invalidated when the backbone, its weights, the input size, the "
                                 "preprocessing or a file's content change).", default=True)
    patience: int = _help("Early-stopping patience in epochs.", default=10)
    batch_size: int = _help("Batch size: the global batch, split across the replicas under --distribute.", default=32)
    learning_rate: float = _help("Head learning rate (Adam), above 0 and at most 1.", default=1e-3)
    dropout: float = _help("Dropout before the classification layer.", default=0.2)
    val_fraction: float = _help("Fraction of each class held out for validation when there is no val/ folder.", default=0.2)
    refit: str = _help("linear, finetune: once early stopping has chosen each phase's epochs on the validation split, "
                       "train again from the start on train + validation for those epochs; the run reports the "
                       "first model's validation metrics. auto: when the validation split was carved out of the "
                       f"training files and the training split has fewer than {REFIT_AUTO_BELOW_PER_CLASS} files per "
                       "class (there the held-out files are a large share of the data and the refit costs little). "
                       "Meta strategies: auto writes the final prototypes / head from train + validation files "
                       "(seconds on cached embeddings); no keeps the first classifier.",
                       default="auto")
    test_fraction: float = _help("Fraction of each class held out for testing when there is no test/ folder (0: none).", default=0.2)
    resize: str = _help("How images reach the input size: stretch, pad (letterbox) or crop (centre).", default="stretch")
    class_weight: str = _help("auto: weight the loss by inverse class frequency of the training split; none: unweighted.", default="none")
    balanced_sampler: bool = _help("Draw training batches class-balanced (every class equally often).", default=False)
    seed: int = _help(f"Random seed (splits, initialisation, shuffling), 0 to {MAX_SEED}.", default=42)
    reject_recall: float = _help("Unknown-class rejection: fraction of known validation files the threshold keeps "
                                 "(the rest of the score range is reported as unknown by predict.py).", default=0.95)
    unknown_score: str = _help("Unknown-class score: auto (energy+relative_mahalanobis, the best over the "
                               "benchmarks' data sets), folds (the best candidate on leave-classes-out folds of "
                               "the training classes; with fewer than 3 classes the default, with a warning) or one "
                               "of the candidates.", default="auto")
    exclude_label_issues: str = _help("Leave likely mislabelled files out of training and validation: N (the "
                                      "first N of data_report.json's label_issues), auto (every one listed) or 0 "
                                      "(none).",
                                      default="0", accept_int=True)
    distribute: str = _help("Devices to train on: none (one device), mirrored (every GPU of this machine, or the "
                            "METATUNE_CPU_DEVICES logical CPUs), multi-worker (several machines, each started with "
                            "its TF_CONFIG, the same command and --output on each; only the chief writes the run: TF_CONFIG's chief task, else worker 0), or auto "
                            "(mirrored when more than one GPU is visible, else none). mirrored and multi-worker train "
                            "linear and finetune; meta strategies are refused for now, auto then trains on one device "
                            "(README, Scaling out).", default="auto")
    profile: bool = _help("Record a TensorFlow profiler trace of a few batches of the backbone pass (TensorBoard's "
                          "Profile tab; needs the tensorboard-plugin-profile package to view).", default=False)

    def validate(self, where: Mapping[str, str] | None = None, trains: bool = True) -> "TrainConfig":
        """`trains`: false for `train.py --check`, which writes no run and joins no cluster, so needs no --output."""
        where = where or {}
        checks = [
            (bool(self.data_dir), "data_dir is required"),
            (self.strategy in STRATEGIES, f"strategy must be one of {list(STRATEGIES)}"),
            (self.resize in CHOICES["resize"], f"resize must be one of {list(CHOICES['resize'])}"),
            (self.class_weight in CHOICES["class_weight"], f"class_weight must be one of {list(CHOICES['class_weight'])}"),
            (0.0 <= self.test_fraction < 1.0, "test_fraction must be in [0, 1)"),
            # Each fraction's own range first: `val_fraction: 1` was told about the sum, naming one of its terms.
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
            (self.val_fraction + self.test_fraction < 1.0,
             "val_fraction + test_fraction must be below 1 (the rest of each class trains): lower one of them",
             f"val_fraction={self.val_fraction!r}, test_fraction={self.test_fraction!r}"),
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be between 16 and 1024"),
            (self.sequence_length is None or 8 <= self.sequence_length <= 512, "sequence_length must be between 8 and 512"),
            (self.pooling in CHOICES["pooling"], f"pooling must be one of {list(CHOICES['pooling'])}"),
            (0 <= self.hidden_units <= MAX_LAYER_UNITS,
             f"hidden_units must be from 0 (none) to {MAX_LAYER_UNITS} (heads use 0 to 1024)"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.patience >= 1, "patience must be at least 1"),
            (1 <= self.batch_size <= MAX_BATCH_SIZE, f"batch_size must be from 1 to {MAX_BATCH_SIZE}"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.learning_rate <= MAX_ADAM_LEARNING_RATE, f"learning_rate {ADAM_RATE_LIMIT}"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.finetune_epochs >= 1, "finetune_epochs must be at least 1"),
            # numpy's global seed (keras.utils.set_random_seed) takes 0 to 2**32 - 1: -1 or 2**32 was a traceback.
            (0 <= self.seed <= MAX_SEED, f"seed must be a whole number from 0 to {MAX_SEED}"),
            (self.ways >= 2, "ways must be at least 2"),
            (self.shots >= 1, "shots must be at least 1"),
            (self.queries >= 1, "queries must be at least 1"),
            (1 <= self.meta_batch_size <= MAX_META_BATCH_SIZE,
             f"meta_batch_size must be from 1 to {MAX_META_BATCH_SIZE} episodes per meta step (recipes use 1 to 32; "
             "more meta steps, --meta-steps, train on more episodes)"),
            (self.meta_steps >= 1, "meta_steps must be at least 1"),
            (self.meta_epochs >= 1, "meta_epochs must be at least 1"),
            (self.meta_learning_rate > 0, "meta_learning_rate must be positive"),
            (self.meta_learning_rate <= MAX_ADAM_LEARNING_RATE, f"meta_learning_rate {ADAM_RATE_LIMIT}"),
            (0.0 < self.meta_step_size <= 1.0, "meta_step_size must be in (0, 1]"),
            (self.inner_learning_rate > 0, "inner_learning_rate must be positive"),
            (1 <= self.inner_steps <= MAX_INNER_STEPS,
             f"inner_steps must be from 1 to {MAX_INNER_STEPS} (each inner step is unrolled into the training graph, "
             "which grows in build time and memory with every step; recipes use 1 to 10)"),
            (self.adapt in ("auto", "head", "all") or is_count(self.adapt), "adapt must be auto, head, all or a number of layers"),
            # Only the gradient learners have an inner loop: with protonet or a transfer strategy it was ignored silently.
            (self.adapt == "auto" or self.strategy in ("reptile", "fomaml", "maml"),
             f"adapt applies to --strategy reptile, fomaml or maml (strategy={self.strategy!r}); leave it at auto otherwise"),
            (1 <= self.embedding_units <= MAX_LAYER_UNITS,
             f"embedding_units must be from 1 to {MAX_LAYER_UNITS} (embeddings use 64 to 1024)"),
            (self.meta_input in CHOICES["meta_input"], f"meta_input must be one of {list(CHOICES['meta_input'])}"),
            (self.unfreeze is None or self.unfreeze == "all" or is_count(self.unfreeze) and int(self.unfreeze) >= 1,
             "unfreeze must be a positive number of blocks or 'all'"),
            (self.finetune_learning_rate is None or self.finetune_learning_rate > 0,
             "finetune_learning_rate must be positive"),
            (self.finetune_learning_rate is None or self.finetune_learning_rate <= MAX_ADAM_LEARNING_RATE,
             f"finetune_learning_rate {ADAM_RATE_LIMIT}"),
            (self.lr_decay is None or 0.0 < self.lr_decay <= 1.0, "lr_decay must be in (0, 1]"),
            (self.lr_schedule in CHOICES["lr_schedule"], f"lr_schedule must be one of {list(CHOICES['lr_schedule'])}"),
            (0.0 <= self.warmup_fraction < 1.0, "warmup_fraction must be in [0, 1)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.mixup is None or 0.0 <= self.mixup <= 1.0, "mixup must be in [0, 1]"),
            (math.isfinite(self.pair_loss) and self.pair_loss >= 0.0, "pair_loss must be a number >= 0 (0: off)"),
            (self.image_cache in CHOICES["image_cache"], f"image_cache must be one of {list(CHOICES['image_cache'])}"),
            (self.precision in CHOICES["precision"], f"precision must be one of {list(CHOICES['precision'])}"),
            (0.0 < self.reject_recall < 1.0, "reject_recall must be in (0, 1), e.g. 0.95 keeps 95% of known files"),
            (self.unknown_score in CHOICES["unknown_score"],
             f"unknown_score must be one of {list(CHOICES['unknown_score'])}"),
            (self.exclude_label_issues == "auto" or is_count(self.exclude_label_issues),
             "exclude_label_issues must be a number of files, auto or 0"),
            (self.refit in CHOICES["refit"], f"refit must be one of {list(CHOICES['refit'])}"),
            (self.distribute in CHOICES["distribute"], f"distribute must be one of {list(CHOICES['distribute'])}"),
            # An empty --output (a script's unset variable: --output "$OUT") silently meant the default name.
            (self.output is None or bool(str(self.output).strip()),
             "output must be a folder path, or left out for runs/<time>-<dataset>-<backbone>-<strategy>"),
            # The same for these: an empty --meta-data meta-trained on the target's own split, an empty --init
            # started from scratch and an empty --backbone took the default one, each without a word.
            (self.meta_data is None or bool(str(self.meta_data).strip()),
             "meta_data must be a folder path, or left out for episodes from the target's training split"),
            (self.init is None or bool(str(self.init).strip()),
             "init must be a run directory, or left out to start from a fresh initialisation"),
            (self.backbone is None or bool(str(self.backbone).strip()),
             "backbone must be a backbone name or path, or left out for the modality's default"),
            (self.distribute != "multi-worker" or bool(self.output) or not trains,
             "distribute multi-worker needs --output RUN_DIR, the same on every worker (the default name carries "
             "each worker's own start time)"),
            (self.source_stage in CHOICES["source_stage"],
             f"source_stage must be one of {list(CHOICES['source_stage'])}"),
            (self.target_head in CHOICES["target_head"], f"target_head must be one of {list(CHOICES['target_head'])}"),
            (self.target_finetune in CHOICES["target_finetune"],
             f"target_finetune must be one of {list(CHOICES['target_finetune'])}"),
            (self.target_head == "auto" or self.strategy == "protonet",
             f"target_head applies to --strategy protonet (strategy={self.strategy!r}); leave it at auto otherwise"),
            # `yes` with another strategy was ignored without a word (linear, finetune) or refused only after the
            # whole meta-training (reptile, fomaml, maml).
            (self.target_finetune != "yes" or self.strategy == "protonet",
             f"target_finetune yes applies to --strategy protonet (strategy={self.strategy!r}); leave it at auto "
             "otherwise"),
            (self.init is None or self.strategy in META_STRATEGIES,  # it was ignored without a word
             f"init applies to the meta strategies ({', '.join(META_STRATEGIES)}; strategy={self.strategy!r})"),
            (self.source_stage == "auto" or self.strategy == "protonet" and self.meta_data,
             f"source_stage applies to --strategy protonet with --meta-data (strategy={self.strategy!r}, "
             f"meta_data={self.meta_data!r}); leave it at auto otherwise"),
            (self.refit != "yes" or self.strategy in TRANSFER_STRATEGIES,
             f"refit must be auto or no with a meta strategy (refit retrains {' and '.join(TRANSFER_STRATEGIES)} "
             f"runs; strategy={self.strategy!r})"),
        ]
        # Counts beyond TensorFlow's int32 (--batch-size 10**20) passed to fail as a TensorFlow traceback, leaving
        # an INCOMPLETE run directory; no option needs more (the seed has its own range above).
        checks += [(getattr(self, f.name) is None or getattr(self, f.name) <= MAX_COUNT,
                    f"{f.name} must be at most {MAX_COUNT}")
                   for f in fields(self) if str(f.type) in ("int", "int | None") and f.name != "seed"]
        for ok, message, *received in checks:  # received: the values a check of several options shows
            if not ok:
                key = message.split()[0]
                shown = received[0] if received else f"{key}={getattr(self, key)!r}"
                raise UserError(f"{_invalid(key, where)}: {message}. Received: {shown}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def apply_modality_defaults(self, modality: str, train_per_class: float | None = None) -> dict:
        """Fill the finetune options left unset with the recipe for the data (FINETUNE_RECIPES).

        `train_per_class`: the median number of training files per class (images: the
        whole-backbone recipe needs WHOLE_BACKBONE_MIN_PER_CLASS; unknown counts as enough).
        Returns what was filled in, so the run can say so. Values the user gave (flags or a
        config file) are never changed; config.json records the filled-in values, so a resumed
        run trains with the same ones.
        """
        recipe = OTHER_STRATEGIES_RECIPE
        if self.strategy == "finetune":
            small = modality == "image" and train_per_class is not None and train_per_class < WHOLE_BACKBONE_MIN_PER_CLASS
            recipe = FINETUNE_RECIPES["image_small" if small else modality]
        filled = {key: value for key, value in recipe.items() if getattr(self, key) is None}
        for key, value in filled.items():
            setattr(self, key, value)
        return filled

    @classmethod
    def from_dict(cls, values: Mapping, where: Mapping[str, str] | None = None, trains: bool = True) -> "TrainConfig":
        """A validated config from plain values (a config file, config.json, parsed flags).

        `where` maps a key to where its value came from (e.g. "config file 'run.yaml'"), so
        an error names the file to fix; keys not in it get the plain message. `trains`: see validate.
        """
        where = where or {}
        _reject_unknown_keys(values, where)
        typed = {key: _checked_value(key, value, where) for key, value in values.items()}
        return cls(**typed).validate(where, trains)


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # bool is an int subclass: `epochs: true` is a slip


# The field annotation (a string, thanks to `from __future__ import annotations`) -> (accepts, what is valid).
# Config files arrive untyped, so a value of the wrong type must fail here with its key, not deep in training.
_TYPE_RULES = {
    "int": (_is_int, "an integer"),
    # Finite: YAML's .inf / .nan would pass some range checks (learning_rate > 0) and wreck training.
    "float": (lambda v: _is_int(v) or isinstance(v, float) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int | None": (lambda v: v is None or _is_int(v), "an integer or null"),
    "float | None": (lambda v: v is None or _is_int(v) or isinstance(v, float) and math.isfinite(v),
                     "a finite number or null"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
}


# A value of the wrong type for these is told what the option takes, not its Python type: exclude_label_issues is
# text only so that it takes `auto`, and `exclude_label_issues: no` (YAML's false), `1e3` or `null` was told it
# "must be a string", which `"1e3"` then failed too.
_EXPECTED = {"exclude_label_issues": "a whole number of files, auto or 0 (none)",
             # text for the same reason (all, auto): `unfreeze: 2.5` was told it "must be a string or null".
             "unfreeze": "a whole number of blocks (1 or more) or all, or null",
             "adapt": "auto, head, all or a whole number of layers"}


def _invalid(key: str, where: Mapping[str, str]) -> str:
    source = where.get(key)
    return f"Invalid configuration in {source}" if source else "Invalid configuration"


# train.py's flags that choose what it does (_add_mode_arguments): a config file, or config.json, cannot hold them.
_MODE_KEYS = {"config": "--config FILE", "resume": "train.py --resume RUN_DIR", "check": "train.py DATA_DIR --check",
              "label_issues": "--check --label-issues", "list_backbones": "--list-backbones"}


def _reject_unknown_keys(values: Mapping, where: Mapping[str, str]) -> None:
    unknown = [key for key in values if key not in _FIELDS]
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(_FIELDS), n=1)
        if key in _MODE_KEYS:  # `resume: RUN_DIR` was asked "did you mean 'resize'?"
            named.append(f"{key!r} (a command-line flag, {_MODE_KEYS[key]}, not a setting of a run)")
        else:
            named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    sources = sorted({where[key] for key in unknown if key in where})
    place = f" in {', '.join(sources)}" if sources else ""
    raise UserError(f"Unknown configuration key{'s' if len(unknown) > 1 else ''}{place}: {', '.join(named)}. "
                    f"Valid keys: {', '.join(_FIELDS)}")


def _checked_value(key: str, value, where: Mapping[str, str]):
    f = _FIELDS[key]
    if f.metadata.get("accept_int") and _is_int(value):
        value = str(value)
    if isinstance(value, bool) and "yes" in CHOICES.get(key, ()):
        value = "yes" if value else "no"  # YAML 1.1 reads an unquoted `refit: no` as false
    elif isinstance(value, bool) and key in CHOICES:
        # `distribute: no` or `image_cache: off` was told "must be a string. Received: distribute=False": neither
        # what the option takes nor why a word became False.
        raise UserError(f"{_invalid(key, where)}: {key} must be one of {', '.join(CHOICES[key])}; YAML reads an "
                        f"unquoted yes/no/on/off as true/false. Write one of those values. Received: {key}={value!r}")
    accepts, expected = _TYPE_RULES[str(f.type)]
    expected = _EXPECTED.get(key, expected)
    if not accepts(value):
        if "int" in str(f.type) and isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
            # `epochs: 1e3` is read as the float 1000.0: "must be an integer. Received: epochs=1000.0" did not say
            # why a whole number was refused.
            expected += f" (written without a decimal point or exponent: {int(value)})"
        elif str(f.type).startswith("str") and (_is_int(value) or isinstance(value, datetime.date)):
            # YAML reads an unquoted `output: 2024-01-01` as a date (and `output: 123` as a number): "must be a
            # string. Received: output=datetime.date(2024, 1, 1)" did not say that quoting the name keeps it.
            kind = "a number" if _is_int(value) else "a date"
            expected += f" (an unquoted {value} is read as {kind}: quote it, {key}: '{value}')"
        raise UserError(f"{_invalid(key, where)}: {key} must be {expected}. Received: {key}={value!r}")
    # Store float fields as floats, so `learning_rate: 1` writes back as 1.0 in config.json.
    if str(f.type) not in ("float", "float | None") or value is None:
        return value
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: past float's range, as inf is refused
        raise UserError(f"{_invalid(key, where)}: {key} must be a finite number. Received: {key}={str(value)[:40]}..."
                        ) from None


# ---------------------------------------------------------------- config files

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class _YamlLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus floats without a dot or exponent sign (1e-3, 2.5e4).

    PyYAML follows YAML 1.1, which reads `learning_rate: 1e-3` as the string '1e-3': the
    way everyone writes a learning rate would then fail the type check.
    """


def _mapping_without_duplicates(loader: _YamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are unique: PyYAML keeps the last of two same keys silently, and a setting written
    twice (one of them forgotten) must not decide the run unseen."""
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: construct_mapping merges it
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # an unhashable key: construct_mapping refuses it with its own marked error
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"found the key {key!r} a second time (first at line {seen[key] + 1}); keep one",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _json_object_without_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once; keep one")
    return dict(pairs)


# YAML 1.1 numbers that do not mean what they look like: `seed: 010` is the octal 8, `epochs: 1:30` the base-60 90.
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")


def _number_as_written(loader: _YamlLoader, node: yaml.ScalarNode):
    """An int or float scalar, refused where YAML 1.1 reads it other than as written (a leading 0: octal; a `:`:
    base 60), with its line and column: `seed: 010` silently seeded 8, which no one writing it means."""
    construct = loader.construct_yaml_int if node.tag.endswith(":int") else loader.construct_yaml_float
    text = loader.construct_scalar(node)
    if _LEADING_ZERO.match(text):
        sign, digits = ("-" if text.startswith("-") else ""), text.lstrip("+-").replace("_", "").lstrip("0") or "0"
        advice = f"write {sign}{digits} for the number as written"
        base = "an octal number"
    elif ":" in text:
        advice, base = "write the number itself", "a base-60 number"
    else:
        return construct(node)
    raise yaml.constructor.ConstructorError(
        None, None, f"found {text}, which YAML 1.1 reads as {base} ({construct(node)}); {advice}, or quote it if it "
        "is text", node.start_mark)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_YamlLoader.add_constructor("tag:yaml.org,2002:int", _number_as_written)
_YamlLoader.add_constructor("tag:yaml.org,2002:float", _number_as_written)
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _one_line(error: Exception) -> str:
    """A parse error as one line: PyYAML's messages span several (the problem, its context, each with a mark)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
        if error.context and error.context_mark is not None:
            where += f" ({error.context} that starts at line {error.context_mark.line + 1}, " \
                     f"column {error.context_mark.column + 1})"
        return where
    return " ".join(str(error).split())


CONFIG_FILE_REMEDY = "Fix the file (or pass the settings as flags) and run again"


def load_config_file(path: str | Path, remedy: str | None = None) -> dict:
    """The mapping in a YAML or JSON config file; a clear UserError naming the file otherwise. `remedy`: what the
    message of a damaged file (unreadable, or not a mapping) says to do; by default, an unreadable one's says to
    fix it or pass flags (a resumed run takes no flags: it says what a resume can do)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():  # first: a folder (`--config RUN_DIR`, `--config DATA_DIR`) was told its extension was wrong
        repeat = (f" To repeat that run, pass its {CONFIG_FILE}: --config {shell_path(path / CONFIG_FILE)} --output "
                  "NEW_DIR" if holds_a_run(path) else "")
        raise UserError(f"Config file is a folder, not a file: {str(path)!r}. Pass the path of a YAML or JSON file "
                        f"(--config FILE).{repeat}")
    if suffix not in CONFIG_SUFFIXES:
        raise UserError(f"Config file {str(path)!r} must be YAML (.yaml, .yml) or JSON (.json). "
                        f"Received the extension {suffix or '(none)'!r}")
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is not a regular file" if path.exists() else "not found"
        raise UserError(f"Config file {what}: {str(path)!r}. Pass the path of a YAML or JSON file (--config FILE).")
    kind = "JSON" if suffix == ".json" else "YAML"
    _refuse_oversized(path, remedy)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is skipped.
        with path.open(encoding="utf-8-sig") as stream:
            text = stream.read()
        _refuse_empty(path, text, remedy)  # JSON's parser said "Expecting value: line 1 column 1 (char 0)"
        values = (json.loads(text, object_pairs_hook=_json_object_without_duplicates) if kind == "JSON"
                  else yaml.load(text, Loader=_YamlLoader))
    except UserError:  # a ValueError too: already the message
        raise
    except UnicodeDecodeError:  # codec jargon ("can't decode byte 0xff in position 0") did not say what to do
        raise UserError(f"Config file {str(path)!r} is not UTF-8 text: {_first_non_utf8(path)}. Save it as UTF-8 "
                        f"(in an editor: Save As, encoding UTF-8) and run again{'. ' + remedy if remedy else ''}"
                        ) from None
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: JSONDecodeError too
        raise UserError(f"Config file {str(path)!r} could not be read as {kind}: {_one_line(error)}. "
                        f"{remedy or CONFIG_FILE_REMEDY}") from None
    if values is None and kind == "YAML" and _only_comments(text):  # a file of commented-out settings: none set
        return {}
    if not isinstance(values, dict):  # `null` too: it was taken for "no settings" (JSON's too)
        shown = "null" if values is None else f"{values!r:.100} ({type(values).__name__})"
        raise UserError(f"Config file {str(path)!r} must hold a mapping of option names to values "
                        f"(like `epochs: 5`). Received: {shown}"
                        + (f". {remedy}" if remedy else ""))
    return values


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _refuse_empty(path: Path, text: str, remedy: str | None) -> None:
    """An empty file (0 bytes, or blanks only) is a save that did not happen or a truncated file, not a choice of
    the defaults: YAML's read it as "no settings" and trained with every default without a word."""
    if text.strip():
        return
    what = "only blank space" if text else "no text"
    raise UserError(f"Config file {str(path)!r} is empty ({what}): it sets no option. "
                    + (remedy or "Write the settings into it (like `epochs: 5`, keys as in a run's config.json), or "
                                 "leave out --config to train with the defaults"))


# A configuration is a few kilobytes (a run's config.json: about 2). PyYAML parses about 1 MB a second, so a data
# file passed by mistake (`--config data.yaml`, hundreds of MB) held the command for minutes before any message.
MAX_CONFIG_BYTES = 1024 * 1024


def _refuse_oversized(path: Path, remedy: str | None) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return  # the read that follows reports it
    if size > MAX_CONFIG_BYTES:
        raise UserError(f"Config file {str(path)!r} is {size / 2**20:.1f} MiB; a configuration holds a few settings "
                        f"(at most {MAX_CONFIG_BYTES // 2**20} MiB is read). "
                        + (remedy or "Pass the YAML or JSON file of options (--config FILE, keys as in a run's "
                                     "config.json), not a data file."))


def _first_non_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, and what it probably is, for the message that says to save it as UTF-8 (the
    decoder's own position counts from the chunk a stream read, not from the file's start)."""
    try:
        raw = path.read_bytes()  # at most MAX_CONFIG_BYTES
    except OSError as error:
        return f"it could not be read again ({error.strerror or error})"
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        raw[skip:].decode("utf-8")
        return "it changed while being read"
    except UnicodeDecodeError as error:
        start = skip + error.start
    line = raw[:start].count(b"\n") + 1
    where = f"byte {raw[start]:#04x} on line {line}"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"{where}; it is UTF-16, by its byte-order mark (Windows Notepad's 'Unicode')"
    return f"{where}; perhaps a legacy encoding such as Latin-1 or Windows-1252"


def _file_label(path: str | Path) -> str:
    return f"config file {str(path)!r}"


# ---------------------------------------------------------------- command line

# train.py --help lists the options under these headings, in this order (tests check that every option has one).
OPTION_GROUPS = {
    "data": ("data_dir", "val_fraction", "test_fraction", "resize", "image_size", "sequence_length", "class_weight",
             "balanced_sampler", "exclude_label_issues", "seed"),
    "backbone": ("backbone", "weights", "pooling", "cache_features", "precision"),
    "training (every strategy)": ("strategy", "epochs", "batch_size", "learning_rate", "dropout", "hidden_units",
                                  "label_smoothing", "patience", "refit"),
    "finetune": ("finetune_epochs", "unfreeze", "finetune_learning_rate", "lr_decay", "lr_schedule",
                 "warmup_fraction", "mixup", "pair_loss", "augment", "image_cache"),
    "meta strategies (protonet, reptile, fomaml, maml)": (
        "ways", "shots", "queries", "meta_batch_size", "meta_steps", "meta_epochs", "meta_learning_rate",
        "meta_step_size", "inner_learning_rate", "inner_steps", "adapt", "embedding_units", "meta_input",
        "transductive", "meta_data", "source_stage", "target_head", "target_finetune", "init"),
    "unknown classes": ("reject_recall", "unknown_score"),
    "scaling out (several devices or machines)": ("distribute",),
    "output": ("output", "profile"),
}


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where X tells the reader something (train.py, evaluate.py, predict.py).

    Not None: an option without a default, or one decided at run time (the backbone's size, the data's recipe)
    whose help text says what it is; the appended "(default: None)" read as a value, or contradicted the text
    before it ("... (default: 128). (default: None)"). Not the False of an on-only flag (store_true) nor the empty
    list of a repeatable option: both just mean "not given". An --x/--no-x flag keeps its default: either may be it.
    """

    def _get_help_string(self, action):
        on_only_flag = action.const is True and action.default is False
        if action.default is None or on_only_flag or (isinstance(action.default, list) and not action.default):
            return action.help
        return super()._get_help_string(action)


def build_parser(explicit_only: bool = False) -> argparse.ArgumentParser:
    """The train.py parser. explicit_only: every default is SUPPRESS, so parsing yields only
    the options the user typed (a flag left at its default must not override a config file)."""
    parser = OneErrorLineParser(
        prog="train.py",
        description="Train a classifier on a folder of labelled examples (one subfolder per class).",
        formatter_class=DefaultsHelpFormatter,
    )

    def default(value):
        return argparse.SUPPRESS if explicit_only else value

    defaults = TrainConfig()
    sections = {title: parser.add_argument_group(title) for title in OPTION_GROUPS}
    section_of = {name: sections[title] for title, names in OPTION_GROUPS.items() for name in names}
    for f in fields(TrainConfig):
        group = section_of[f.name]
        if f.name == "data_dir":
            group.add_argument("data_dir", nargs="?", default=default(None),
                                help=f.metadata["help"] + " May come from --config instead; not used with --resume.")
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default(getattr(defaults, f.name)), help=f.metadata["help"])
            continue
        kind = {"int | None": whole_number, "str | None": str, "float | None": number, "int": whole_number,
                "float": number, "str": str}[str(f.type)]
        kwargs = {"type": kind, "default": default(getattr(defaults, f.name)), "help": f.metadata["help"]}
        if f.name in CHOICES:
            kwargs["choices"] = CHOICES[f.name]
        group.add_argument(flag, dest=f.name, **kwargs)
    _add_mode_arguments(parser.add_argument_group("what train.py does (not part of a run's configuration)"), default)
    return parser


class _OneConfigFile(argparse.Action):
    """--config given twice (a recipe and a file of one's own) read the last file only: the first one's settings
    were dropped without a word. One file is read, so a second is a usage error; so is an empty one."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not values:  # '' (an unset shell variable) read no file and said nothing
            raise argparse.ArgumentError(self, "is empty. Received: ''. Pass a YAML or JSON file")
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None:
            raise argparse.ArgumentError(self, f"given twice ({earlier!r}, then {values!r}); one file is read, not "
                                               "merged: put the settings in one file, or pass the others as flags")
        setattr(namespace, self.dest, values)


class _OneRunDir(argparse.Action):
    """--resume '' (an unset shell variable) resumed the run in the current folder, and --resume A --resume B
    resumed B alone without a word about A: one run is resumed at a time, so two different ones are a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if not values:
            raise argparse.ArgumentError(self, "is empty. Received: ''. Pass the run directory to continue (an "
                                               "unset shell variable gives an empty one)")
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None and earlier != values:
            raise argparse.ArgumentError(self, f"given twice ({earlier!r}, then {values!r}); one run is resumed at "
                                               "a time: run train.py --resume once for each")
        setattr(namespace, self.dest, values)


def _add_mode_arguments(parser, default) -> None:
    """Flags that choose what train.py does; they are not part of a run's configuration."""
    parser.add_argument("--config", metavar="FILE", default=default(None), action=_OneConfigFile,
                        help="YAML (.yaml, .yml) or JSON (.json) file of options, keys as in a run's config.json "
                             "(so `--config RUN_DIR/config.json --output NEW_DIR` repeats a run). Flags given on "
                             "the command line override it.")
    parser.add_argument("--resume", metavar="RUN_DIR", default=default(None), action=_OneRunDir,
                        help="Continue an interrupted run from its last completed epoch, with the run's own "
                             "config.json (takes no other options).")
    parser.add_argument("--check", action="store_true", default=default(False),
                        help="Only run the data doctor: check every file, print the report, train nothing.")
    parser.add_argument("--label-issues", action="store_true", default=default(False),
                        help="With --check: also rank likely mislabelled files (needs the backbone's features and "
                             "5 labelled files per class); training runs always rank them into data_report.json.")
    parser.add_argument("--list-backbones", action="store_true", default=default(False),
                        help="List the registered backbones (modality, parameters, default size, weights) and exit.")


def config_from_args(argv: list[str] | None) -> tuple[TrainConfig | None, argparse.Namespace]:
    """The training config, plus the mode flags (check, list_backbones, resume) that are not part of it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--list-backbones" in argv:
        return None, argparse.Namespace(check=False, list_backbones=True, resume=None, label_issues=False)
    build_parser().parse_args(argv)  # the full parse first: --help, usage errors, types and choices
    explicit = vars(build_parser(explicit_only=True).parse_args(argv))
    if "resume" in explicit:
        run_dir = explicit.pop("resume")
        return _resume_config(run_dir, explicit), argparse.Namespace(check=False, list_backbones=False, resume=run_dir,
                                                                     label_issues=False)
    check = explicit.pop("check", False)
    label_issues = explicit.pop("label_issues", False)
    if label_issues and not check:
        raise UserError("--label-issues goes with --check (python train.py DATA_DIR --check --label-issues); a "
                        "training run ranks label issues into data_report.json anyway. Received: --label-issues "
                        "without --check")
    config = _merged_config(explicit.pop("config", None), explicit, trains=not check)
    return config, argparse.Namespace(check=check, list_backbones=False, resume=None, label_issues=label_issues)


def _merged_config(config_file: str | None, flags: dict, trains: bool = True) -> TrainConfig:
    """Defaults < the config file < the flags the user typed."""
    file_values = load_config_file(config_file) if config_file else {}
    _refuse_other_run_files(config_file, file_values)
    file_values = _without_values_of_replaced_choices(file_values, flags, config_file)
    where = {key: _file_label(config_file) for key in file_values if key not in flags}
    values = file_values | flags
    _reject_unknown_keys(values, where)  # first: a misspelt `data-dir:` deserves "did you mean", not "missing"
    if "data_dir" not in values:
        source = f" and {_file_label(config_file)} sets no data_dir" if config_file else ""
        raise UserError(f"No data folder: pass DATA_DIR (python train.py DATA_DIR ...) or set data_dir in a "
                        f"--config file. Received no DATA_DIR argument{source}")
    # Data folders as absolute paths (as typed under the working folder: symlinks and ".." kept, which
    # os.path.abspath would fold before the filesystem follows a link): the run records them (config.json,
    # manifest.json, metadata.json), and a relative one would point elsewhere for `--resume`, `evaluate.py`
    # (which must recognise the training folder to evaluate on held-out files only) or `export.py` run elsewhere.
    for key in ("data_dir", "meta_data"):
        if isinstance(values.get(key), str) and values[key]:
            values[key] = str(Path(values[key]).expanduser().absolute())
    # The same for the settings that may name a path (--backbone RUN_DIR or a Hugging Face folder, --weights
    # FILE, --init RUN_DIR), where the path exists: a name (a backbone, imagenet) stays a name.
    for key in ("backbone", "weights", "init"):
        if isinstance(values.get(key), str) and _names_a_path(values[key], key):
            values[key] = str(Path(values[key]).expanduser().absolute())
    config = TrainConfig.from_dict(values, where, trains)
    _refuse_double_imbalance_correction(config, where)
    return config


def _refuse_other_run_files(config_file: str | None, file_values: Mapping) -> None:
    """A run's other JSON file passed for its config.json (`--config RUN_DIR/metadata.json`) was told its keys were
    unknown, each with a did-you-mean ('class_names' (did you mean 'class_weight'?)) that led nowhere."""
    if not config_file or not any(key not in _FIELDS for key in file_values):
        return
    path = Path(config_file)
    if path.name != CONFIG_FILE and holds_a_run(path.parent):
        raise UserError(f"Config file {str(path)!r} is the run's {path.name}, not its settings. To repeat that run, "
                        f"pass its {CONFIG_FILE}: --config {shell_path(path.parent / CONFIG_FILE)} --output NEW_DIR")


# What a run's config.json records because of its backbone or strategy rather than because the user chose it: the
# weights it loaded (for a reused run, `run:` and the digest of its weights) and its input size (the backbone's
# default when none was typed); the finetune recipe's values filled in for its strategy (apply_modality_defaults).
RECORDED_FOR = {"backbone": ("weights", "image_size", "sequence_length"), "strategy": tuple(TOP_BLOCKS_RECIPE)}


def _without_values_of_replaced_choices(file_values: dict, flags: dict, config_file: str | None) -> dict:
    """The config file's values, less those that went with the backbone or strategy a typed flag replaces.

    `--config RUN_DIR/config.json --backbone OTHER_RUN` was refused for a "--weights none" no one typed (the weights
    config.json records), a reused run's `weights: run:<digest>` was refused by another backbone as a weights file
    that does not exist, a conv4 run's `weights: none` and 84 px trained efficientnet_lite0 from scratch at 84 px, and
    a linear run's record with `--strategy finetune` trained the small-set recipe (top 2 blocks, no MixUp) on a large
    image set, all without a word. Left out where the file is a run's record (it holds every setting), and for a new
    backbone that is a run directory (whose own weights and input size are used) or a `run:` record from any file.
    A value written in a recipe of one's own stays (`weights: none` to train another backbone from scratch too)."""
    run_record = set(_FIELDS) <= set(file_values)
    kept = dict(file_values)
    for flag, keys in RECORDED_FOR.items():
        typed, recorded = flags.get(flag), file_values.get(flag)
        if not typed or not isinstance(recorded, str) or _same_path(typed, recorded):
            continue
        try:
            to_run = flag == "backbone" and is_run_directory(Path(typed).expanduser())
        except OSError:  # a name too long to be a path (ENAMETOOLONG): a name, for the error that names it
            to_run = False
        dropped = {key: kept.pop(key) for key in keys
                   if kept.get(key) is not None and key not in flags
                   and (run_record or to_run or key == "weights" and str(kept[key]).startswith("run:"))}
        # Advice to keep a value only where it can apply: not to a run directory, and not a `run:` record.
        keepable = {key: value for key, value in dropped.items() if not to_run and not str(value).startswith("run:")}
        if dropped:
            logger.warning("--%s %s replaces the %s of %s (%s), so its %s, which went with that %s, %s left out "
                           "(%s are used)%s.", flag, typed, flag, _file_label(config_file), recorded,
                           ", ".join(f"{key}={value!r}" for key, value in dropped.items()), flag,
                           "is" if len(dropped) == 1 else "are", "that run's own" if to_run else f"{typed}'s defaults",
                           f"; pass {_format_options(keepable)} to keep {'it' if len(keepable) == 1 else 'them'}"
                           if keepable else "")
    return kept


def _same_path(first: str, second: str) -> bool:
    """Whether two --backbone values name the same thing (a run directory typed relative, recorded absolute)."""
    try:
        return first == second or Path(first).expanduser().absolute() == Path(second).expanduser().absolute()
    except (OSError, ValueError):
        return False


def _refuse_double_imbalance_correction(config: TrainConfig, where: Mapping[str, str]) -> None:
    """--class-weight auto with --balanced-sampler: batches drawn class-balanced and then weighted by inverse
    frequency as well over-weight a small class by its imbalance ratio a second time (1 file against 6: 6 times the
    large class's weight in the loss, not 1). A new run only: a run started so before is still resumed as it was."""
    if config.class_weight == "auto" and config.balanced_sampler:
        raise UserError(f"{_invalid('class_weight', where)}: --class-weight auto and --balanced-sampler each correct "
                        "for class imbalance; together they over-correct it (a small class then weighs as many times "
                        "more as it has fewer files). Use one of them. Received: class_weight='auto', "
                        "balanced_sampler=True")


def _names_a_path(value: str, key: str) -> bool:
    path = Path(value).expanduser()
    try:
        exists = bool(value) and path.exists()
    except OSError:  # a name too long to be a path (ENAMETOOLONG): a name, for the error that names it
        return False
    if not exists:
        return False  # a name, or a path that does not exist: kept as typed for the error that names it
    if key == "weights" and value in ("imagenet", "none", "pretrained"):
        return False
    if key in ("init", "weights") or "/" in value or value.startswith(("~", ".")):
        return True
    # A plain word (no "/") names a run directory rather than a backbone only when it is one (as
    # app/backbone_reuse.is_run_dir, which resolve_backbone checks before the backbone registry).
    return is_run_directory(path)


def _resume_config(run_dir: str, others: dict) -> TrainConfig:
    """The config a run was started with, read back from RUN_DIR/config.json."""
    if others:
        # What to do, too: someone moving a run to other devices (--distribute, --batch-size) has no other way.
        # --output is left out too: the suggestion names NEW_DIR (it showed `--output RUN --output NEW_DIR`).
        settings = {k: v for k, v in others.items()
                    if k not in ("config", "check", "label_issues", "list_backbones", "output")}
        raise UserError("--resume continues a run with its own config.json; it takes no other options. "
                        f"Received: {_format_options(others)}. Continue it with python train.py --resume {run_dir} "
                        "alone (METATUNE_CPU_DEVICES and TF_CONFIG still choose its devices), or start it again "
                        f"with other options: python train.py --config {run_dir}/config.json "
                        f"{_format_options(settings) if settings else 'OPTIONS'} --output NEW_DIR")
    path = Path(run_dir)
    if not path.is_dir():
        what = f"{run_dir!r} is a file, not a run directory" if path.exists() else f"Run directory not found: {run_dir!r}"
        raise UserError(f"{what}. Received: --resume {run_dir}. Pass the folder of the run to continue (train.py's "
                        "--output).")
    config_path = path / CONFIG_FILE  # training writes it before the first epoch
    if not config_path.is_file():
        raise UserError(f"{run_dir!r} has no config.json, so it is not a metatune run directory (or its training "
                        f"stopped before starting; start a new run). Received: --resume {run_dir}")
    # The usual advice (fix the file, or pass flags) does not fit a resume, which takes no flags.
    values = load_config_file(config_path, f"The run cannot be resumed without it: restore {str(config_path)!r} from "
                              "a backup, or start a new run (python train.py DATA_DIR ... --output NEW_DIR). Received: "
                              f"--resume {run_dir}")
    _check_resumable_keys(values, config_path, run_dir)
    return TrainConfig.from_dict(values, {key: _file_label(config_path) for key in values})


def _check_resumable_keys(values: Mapping, config_path: Path, run_dir: str) -> None:
    """A config.json this metatune cannot continue: keys it does not know (written by a newer metatune, or added by
    hand) were refused as if the user had misspelt a --config file, with no word of where the file came from; and
    one without data_dir said "data_dir is required" without naming the file."""
    unknown = sorted(str(key) for key in values if key not in _FIELDS)
    run_files = (INCOMPLETE_MARKER, MANIFEST_FILE, "checkpoints", METADATA_FILE, MODEL_FILE)  # app/checkpoints.py's
    if unknown and not any((config_path.parent / name).exists() for name in run_files):
        # A Hugging Face model folder has a config.json too: it is no run of a newer metatune.
        raise UserError(f"{run_dir!r} is not a metatune run directory: its config.json is not a run's (keys "
                        f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}), and it has none of a run's "
                        f"other files ({', '.join(run_files)}). Pass the folder of the run to continue (train.py's "
                        f"--output). Received: --resume {run_dir}")
    if unknown:
        raise UserError(f"{str(config_path)!r} has setting(s) this metatune does not know: {', '.join(unknown)}. "
                        "The run was probably started by a newer metatune: resume it with that version, or start a "
                        "new run with this one (python train.py DATA_DIR ... --output NEW_DIR). Received: "
                        f"--resume {run_dir}")
    if not values.get("data_dir"):
        raise UserError(f"{str(config_path)!r} names no data_dir, so the run's data folder is unknown: restore the "
                        "file from a backup, or start a new run (python train.py DATA_DIR ... --output NEW_DIR). "
                        f"Received: --resume {run_dir}")


def option_text(key: str, value) -> str:
    """One option back in command-line form: `--ways 3`, `--transductive`, `--no-augment` (data_dir: the folder)."""
    flag = "--" + key.replace("_", "-")
    if key == "data_dir":
        return str(value)
    if value is True:
        return flag
    if value is False:
        return "--no-" + key.replace("_", "-")
    return f"{flag} {value}"


def _format_options(values: dict) -> str:
    """Parsed options back in command-line form, for error messages."""
    return " ".join(option_text(key, value) for key, value in values.items())
