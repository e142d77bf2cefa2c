"""train.py's command line: its parser (options grouped for --help), and the config it resolves to.

Defaults < a --config file < the flags the user typed; `--resume RUN_DIR` reads the run's own config.json and takes
no other option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from app.cli import DefaultsHelpFormatter, OneErrorLineParser, number, whole_number
from app.config import CHOICES, FIELDS, TOP_BLOCKS_RECIPE, TrainConfig, invalid_configuration, reject_unknown_keys
from app.config_file import config_file_label, load_config_file
from app.errors import UserError
from app.run_dir import (CONFIG_FILE, INCOMPLETE_MARKER, MANIFEST_FILE, METADATA_FILE, MODEL_FILE, holds_a_run,
                         is_run_directory, shell_path)

logger = logging.getLogger(__name__)


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
    where = {key: config_file_label(config_file) for key in file_values if key not in flags}
    values = file_values | flags
    reject_unknown_keys(values, where)  # first: a misspelt `data-dir:` deserves "did you mean", not "missing"
    if "data_dir" not in values:
        source = f" and {config_file_label(config_file)} sets no data_dir" if config_file else ""
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
    if not config_file or not any(key not in FIELDS for key in file_values):
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
    run_record = set(FIELDS) <= set(file_values)
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
                           "(%s are used)%s.", flag, typed, flag, config_file_label(config_file), recorded,
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
        raise UserError(f"{invalid_configuration('class_weight', where)}: --class-weight auto and --balanced-sampler each correct "
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
    return TrainConfig.from_dict(values, {key: config_file_label(config_path) for key in values})


def _check_resumable_keys(values: Mapping, config_path: Path, run_dir: str) -> None:
    """A config.json this metatune cannot continue: keys it does not know (written by a newer metatune, or added by
    hand) were refused as if the user had misspelt a --config file, with no word of where the file came from; and
    one without data_dir said "data_dir is required" without naming the file."""
    unknown = sorted(str(key) for key in values if key not in FIELDS)
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
