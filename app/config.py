"""Training configuration: one typed dataclass, its CLI, validation and JSON round trip."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields

from app.errors import UserError

STRATEGIES = ("linear",)


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    data_dir: str = _help("Data folder: DATA_DIR/<class>/<files> or DATA_DIR/{train,val,test}/<class>/<files>.", default="")
    backbone: str = _help("Backbone name (see models/backbones/registry.py).", default="efficientnet_lite0")
    strategy: str = _help("Training strategy.", default="linear")
    weights: str = _help("Backbone weights: imagenet (pretrained) or none (random init).", default="imagenet")
    output: str | None = _help("Run directory (default: runs/<time>-<dataset>-<backbone>-<strategy>).", default=None)
    image_size: int | None = _help("Square input size in pixels (default: the backbone's).", default=None)
    epochs: int = _help("Maximum head-training epochs (early stopping on validation loss).", default=100)
    patience: int = _help("Early-stopping patience in epochs.", default=10)
    batch_size: int = _help("Batch size.", default=32)
    learning_rate: float = _help("Head learning rate (Adam).", default=1e-3)
    dropout: float = _help("Dropout before the classification layer.", default=0.2)
    val_fraction: float = _help("Fraction of each class held out for validation when there is no val/ folder.", default=0.2)
    seed: int = _help("Random seed (splits, initialisation, shuffling).", default=42)

    def validate(self) -> "TrainConfig":
        checks = [
            (bool(self.data_dir), "data_dir is required"),
            (self.strategy in STRATEGIES, f"strategy must be one of {list(STRATEGIES)}"),
            (self.image_size is None or 16 <= self.image_size <= 1024, "image_size must be between 16 and 1024"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.patience >= 1, "patience must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
        ]
        names = {"data_dir": self.data_dir, "strategy": self.strategy, "image_size": self.image_size,
                 "epochs": self.epochs, "patience": self.patience, "batch_size": self.batch_size,
                 "learning_rate": self.learning_rate, "dropout": self.dropout, "val_fraction": self.val_fraction}
        for ok, message in checks:
            if not ok:
                key = message.split()[0]
                raise UserError(f"Invalid configuration: {message}. Received: {key}={names[key]!r}")
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
        kind = {"int | None": int, "str | None": str}.get(str(f.type), None) or {"int": int, "float": float, "str": str}[str(f.type)]
        kwargs = {"type": kind, "default": getattr(defaults, f.name), "help": f.metadata["help"]}
        if f.name == "strategy":
            kwargs["choices"] = STRATEGIES
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    return parser


def config_from_args(argv: list[str] | None) -> TrainConfig:
    args = build_parser().parse_args(argv)
    return TrainConfig.from_dict(vars(args))
