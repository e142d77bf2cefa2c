"""Training configuration: one typed dataclass, its CLI, validation and JSON round trip."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field, fields

from app.errors import UserError

STRATEGIES = ("linear",)
CHOICES = {
    "strategy": STRATEGIES,
    "resize": ("stretch", "pad", "crop"),
    "class_weight": ("none", "auto"),
    "pooling": ("auto", "mean", "cls"),
}


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    data_dir: str = _help("Data folder: DATA_DIR/<class>/<files> or DATA_DIR/{train,val,test}/<class>/<files>.", default="")
    backbone: str | None = _help("Backbone: a name from --list-backbones, a keras-hub BERT preset, or a local Hugging "
                                 "Face BERT folder (default: efficientnet_lite0 for images, minilm for text).", default=None)
    strategy: str = _help("Training strategy.", default="linear")
    weights: str | None = _help("Backbone weights: images imagenet|none|PATH (a Keras weights file), text "
                                "pretrained|none (default: the backbone's pretrained weights).", default=None)
    output: str | None = _help("Run directory (default: runs/<time>-<dataset>-<backbone>-<strategy>).", default=None)
    image_size: int | None = _help("Square input size in pixels for images (default: the backbone's).", default=None)
    sequence_length: int | None = _help("Tokens per text example, longer ones truncated (default: 128).", default=None)
    pooling: str = _help("Text features: mean over tokens, the [CLS] token, or auto (mean for sentence-transformer "
                         "checkpoints, else CLS).", default="auto")
    hidden_units: int = _help("Hidden ReLU layer in the head (0: none, a linear head).", default=0)
    epochs: int = _help("Maximum head-training epochs (early stopping on validation loss).", default=100)
    patience: int = _help("Early-stopping patience in epochs.", default=10)
    batch_size: int = _help("Batch size.", default=32)
    learning_rate: float = _help("Head learning rate (Adam).", default=1e-3)
    dropout: float = _help("Dropout before the classification layer.", default=0.2)
    val_fraction: float = _help("Fraction of each class held out for validation when there is no val/ folder.", default=0.2)
    test_fraction: float = _help("Fraction of each class held out for testing when there is no test/ folder (0: none).", default=0.2)
    resize: str = _help("How images reach the input size: stretch, pad (letterbox) or crop (centre).", default="stretch")
    class_weight: str = _help("auto: weight the loss by inverse class frequency of the training split; none: unweighted.", default="none")
    balanced_sampler: bool = _help("Draw training batches class-balanced (every class equally often).", default=False)
    seed: int = _help("Random seed (splits, initialisation, shuffling).", default=42)
    profile: bool = _help("Record a TensorFlow profiler trace of a few batches of the backbone pass (TensorBoard's "
                          "Profile tab; needs the tensorboard-plugin-profile package to view).", default=False)

    def validate(self) -> "TrainConfig":
        checks = [
            (bool(self.data_dir), "data_dir is required"),
            (self.strategy in STRATEGIES, f"strategy must be one of {list(STRATEGIES)}"),
            (self.resize in CHOICES["resize"], f"resize must be one of {list(CHOICES['resize'])}"),
            (self.class_weight in CHOICES["class_weight"], f"class_weight must be one of {list(CHOICES['class_weight'])}"),
            (0.0 <= self.test_fraction < 1.0, "test_fraction must be in [0, 1)"),
            (self.val_fraction + self.test_fraction < 1.0, "val_fraction + test_fraction must be below 1"),
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be between 16 and 1024"),
            (self.sequence_length is None or 8 <= self.sequence_length <= 512, "sequence_length must be between 8 and 512"),
            (self.pooling in CHOICES["pooling"], f"pooling must be one of {list(CHOICES['pooling'])}"),
            (self.hidden_units >= 0, "hidden_units must be >= 0"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.patience >= 1, "patience must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                key = message.split()[0]
                raise UserError(f"Invalid configuration: {message}. Received: {key}={getattr(self, key)!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"Unknown configuration keys: {unknown}. Valid keys: {sorted(known)}")
        return cls(**values).validate()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a classifier on a folder of labelled examples (one subfolder per class).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name == "data_dir":
            parser.add_argument("data_dir", help=f.metadata["help"])
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=getattr(defaults, f.name), help=f.metadata["help"])
            continue
        kind = {"int | None": int, "str | None": str, "int": int, "float": float, "str": str}[str(f.type)]
        kwargs = {"type": kind, "default": getattr(defaults, f.name), "help": f.metadata["help"]}
        if f.name in CHOICES:
            kwargs["choices"] = CHOICES[f.name]
        parser.add_argument(flag, dest=f.name, **kwargs)
    return parser


def config_from_args(argv: list[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    """The training config, plus the mode flags that are not part of a run's configuration."""
    parser = build_parser()
    parser.add_argument("--check", action="store_true",
                        help="Only run the data doctor: check every file, print the report, train nothing.")
    parser.add_argument("--list-backbones", action="store_true",
                        help="List the registered backbones (modality, parameters, default size, weights) and exit.")
    if argv is not None and "--list-backbones" in argv or argv is None and "--list-backbones" in sys.argv[1:]:
        return None, argparse.Namespace(check=False, list_backbones=True)
    args = parser.parse_args(argv)
    modes = argparse.Namespace(check=args.check, list_backbones=False)
    values = {k: v for k, v in vars(args).items() if k not in ("check", "list_backbones")}
    return TrainConfig.from_dict(values), modes
