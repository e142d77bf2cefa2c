"""Training configuration: one typed dataclass, its defaults and recipes, and the validation of its values.

Where the values come from is elsewhere: app/config_file.py reads a --config file (or a run's config.json),
app/config_cli.py parses train.py's flags and merges them with a file. Precedence: TrainConfig defaults < the
--config file < the flags the user actually typed.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from app.cli import MAX_BATCH_SIZE
from app.distribution import DISTRIBUTE_CHOICES
from app.errors import UserError

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
                raise UserError(f"{invalid_configuration(key, where)}: {message}. Received: {shown}")
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
        reject_unknown_keys(values, where)
        typed = {key: _checked_value(key, value, where) for key, value in values.items()}
        return cls(**typed).validate(where, trains)


FIELDS = {f.name: f for f in fields(TrainConfig)}


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


def invalid_configuration(key: str, where: Mapping[str, str]) -> str:
    source = where.get(key)
    return f"Invalid configuration in {source}" if source else "Invalid configuration"


# train.py's flags that choose what it does (_add_mode_arguments): a config file, or config.json, cannot hold them.
_MODE_KEYS = {"config": "--config FILE", "resume": "train.py --resume RUN_DIR", "check": "train.py DATA_DIR --check",
              "label_issues": "--check --label-issues", "list_backbones": "--list-backbones"}


def reject_unknown_keys(values: Mapping, where: Mapping[str, str]) -> None:
    unknown = [key for key in values if key not in FIELDS]
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(FIELDS), n=1)
        if key in _MODE_KEYS:  # `resume: RUN_DIR` was asked "did you mean 'resize'?"
            named.append(f"{key!r} (a command-line flag, {_MODE_KEYS[key]}, not a setting of a run)")
        else:
            named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    sources = sorted({where[key] for key in unknown if key in where})
    place = f" in {', '.join(sources)}" if sources else ""
    raise UserError(f"Unknown configuration key{'s' if len(unknown) > 1 else ''}{place}: {', '.join(named)}. "
                    f"Valid keys: {', '.join(FIELDS)}")


def _checked_value(key: str, value, where: Mapping[str, str]):
    f = FIELDS[key]
    if f.metadata.get("accept_int") and _is_int(value):
        value = str(value)
    if isinstance(value, bool) and "yes" in CHOICES.get(key, ()):
        value = "yes" if value else "no"  # YAML 1.1 reads an unquoted `refit: no` as false
    elif isinstance(value, bool) and key in CHOICES:
        # `distribute: no` or `image_cache: off` was told "must be a string. Received: distribute=False": neither
        # what the option takes nor why a word became False.
        raise UserError(f"{invalid_configuration(key, where)}: {key} must be one of {', '.join(CHOICES[key])}; YAML reads an "
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
        raise UserError(f"{invalid_configuration(key, where)}: {key} must be {expected}. Received: {key}={value!r}")
    # Store float fields as floats, so `learning_rate: 1` writes back as 1.0 in config.json.
    if str(f.type) not in ("float", "float | None") or value is None:
        return value
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: past float's range, as inf is refused
        raise UserError(f"{invalid_configuration(key, where)}: {key} must be a finite number. Received: {key}={str(value)[:40]}..."
                        ) from None
