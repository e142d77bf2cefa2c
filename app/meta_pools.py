"""The meta-training and meta-validation pools of a meta run, and the episode shapes they can fill.

Three layouts (data/meta_pools.py has the rules):
- `--meta-data SOURCE`: the source's classes, meta-validation classes held out whole
  (fewer ways when the source has few classes; held-out examples when it has too few);
- the classic layout (the training folder has at least 4 x `--ways` classes, e.g. thousands
  of classes of 20 examples): class-disjoint meta-train / meta-val classes of the training
  split, so early stopping watches classes the embedding never saw, as the target's novel
  classes will be;
- otherwise (few classes, each with many examples): meta-training on the training split,
  meta-validation on the validation split of the same classes.
The test split is never in a pool.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from app import run_dir as rd
from app.config import META_STRATEGIES, TrainConfig
from app.data_folder import refuse_runs_inside
from app.errors import UserError
from data.episodes import EpisodeSampler, check_disjoint_meta_classes
from data.errors import DataError
from data.meta_pools import (CLASSIC_LAYOUT_WAYS_MULTIPLE, EpisodeShape, fit_training_queries, hold_out_classes,
                             holdout_examples, validation_shape)
from data.records import Example
from data.scan import require_trainable, scan_folder
from data.shown_text import first_few

logger = logging.getLogger(__name__)


@dataclass
class MetaPools:
    train: list[Example]
    val: list[Example]
    class_names: list[str]  # what the examples' labels index
    train_shape: EpisodeShape
    val_shape: EpisodeShape | None  # None: no meta-validation episode can be formed
    source: str  # where the episodes come from, for the log and metadata.json
    validation: str  # how meta-validation is done (or why there is none)
    manifest: dict | None = None  # --meta-data: its files and their meta splits
    summary: dict = field(default_factory=dict)  # what metadata.json["meta"] records about the pools

    @property
    def train_labels(self) -> list[int]:
        return [e.label for e in self.train]

    @property
    def val_labels(self) -> list[int]:
        return [e.label for e in self.val]


def build_meta_pools(config: TrainConfig, scan, train_examples: list[Example],
                     val_examples: list[Example]) -> MetaPools:
    if config.meta_data:
        pools = _source_pools(config, scan)
    else:
        pools = _target_pools(config, scan, train_examples, val_examples)
    return _with_shapes(config, pools)


def _target_pools(config: TrainConfig, scan, train_examples, val_examples) -> MetaPools:
    names = scan.class_names
    present = sorted({names[e.label] for e in train_examples})
    if len(present) < CLASSIC_LAYOUT_WAYS_MULTIPLE * config.ways:
        return MetaPools(list(train_examples), list(val_examples), names, None, None,
                         "the target's training split",
                         "the validation split of the same classes", summary={"pools": "within-class"})
    holdout = hold_out_classes(present, config.ways, config.seed)
    held = set(holdout.meta_val)
    # Meta-validation classes give all their labelled files (train + val): none of them is meta-trained on.
    return MetaPools([e for e in train_examples if names[e.label] not in held],
                     [e for e in train_examples + val_examples if names[e.label] in held], names, None, None,
                     f"the target's training split ({len(present)} classes: the classic meta-learning layout)",
                     holdout.note,
                     summary={"pools": "class-disjoint", "meta_val_classes": holdout.meta_val})


def check_source_folder(config: TrainConfig, scan) -> None:
    """The `--meta-data` checks that need no file contents, made before the run directory exists, so that a
    mistyped or wrong source costs no feature pass and leaves no INCOMPLETE run behind: the folder exists and
    holds files of the target's modality, shares no class with the target, and has `--ways` classes with at least
    `--shots` + 1 files (the least any episode needs: queries are fitted down to 1). Only conditions the checked
    files cannot improve on: `_source_pools` makes the exact checks on them later."""
    if not config.meta_data or config.strategy not in META_STRATEGIES:
        return
    listing = _scan_source(config, check_files_content=False)
    _check_source(listing, config, scan)
    _refuse_a_source_inside_the_target(config, listing, scan)
    counts = Counter(e.label for e in listing.examples if e.split in (None, "train", "val"))
    need = config.shots + 1
    enough = sum(n >= need for n in counts.values())
    if enough < config.ways:
        raise DataError(f"--meta-data {config.meta_data}: a {config.ways}-way {config.shots}-shot episode needs "
                        f"{config.ways} classes with at least {need} files each (the shots and one query); only "
                        f"{enough} of its {len(listing.class_names)} classes have that many. Use fewer ways or shots "
                        f"(--ways, --shots) or add files. Received: ways={config.ways}, shots={config.shots}")
    _check_source_pool_fills_an_episode(config, listing)


def _refuse_a_source_inside_the_target(config: TrainConfig, listing, scan) -> None:
    """A source folder inside the target folder (DATA/extra/<classes>, scanned as the target's class `extra`) holds
    the target's own files: each was left out of the source as a copy of a target file, which only the checked files
    showed, after the run directory was made; the run then failed, INCOMPLETE, saying the source 'has 0 classes'."""
    source_root = Path(listing.root).resolve()
    target_root = Path(scan.root).resolve()
    if target_root != source_root and target_root not in source_root.parents:
        return
    target_files = {str(Path(e.path).resolve()) for e in scan.examples}
    shared = [e for e in listing.examples if str(Path(e.path).resolve()) in target_files]
    if shared:
        raise UserError(f"--meta-data {config.meta_data} lies inside the target folder {config.data_dir}: {len(shared)} "
                        f"of its {len(listing.examples)} files are target files (e.g. {shared[0].path}), which no "
                        "source may hold. Move the source folder out of the target folder. Received: --meta-data "
                        f"{config.meta_data}")


def _check_source_pool_fills_an_episode(config: TrainConfig, listing) -> None:
    """The meta-validation hold-out (whole classes, or a fifth of each class of a small source) leaves the
    meta-training pool fewer files than the folder holds: a source of 3 files per class passed the count above
    for 2 shots, then lost a file per class and was refused only after the feature pass, an INCOMPLETE run left
    behind. The listing's pools are the run's (same classes, same seed) unless checked files are skipped."""
    pools = _with_shapes(config, _pools_of_source(config, listing))
    try:
        _refuse_a_pool_without_an_episode(pools, config.seed)
    except DataError as error:  # its message names the episode and the classes; say which pool it is
        held = ("its meta-validation classes" if pools.summary["pools"] == "class-disjoint"
                else "a fifth of the files of each class of 3 or more")
        raise DataError(f"--meta-data {config.meta_data}: once {held} are held out for meta-validation, the "
                        f"{len(pools.train)} meta-training files cannot fill one episode. {error}") from None


def check_target_pools(config: TrainConfig, scan, train_examples: list[Example],
                       val_examples: list[Example]) -> None:
    """Without `--meta-data`, the episodes come from the target's training split: one that cannot fill a single
    episode is refused before the run directory exists (as a source folder is), not after the feature pass with
    an INCOMPLETE run left behind. The same pools and error as the run's (`build_meta_pools`, EpisodeSampler)."""
    if config.meta_data or config.strategy not in META_STRATEGIES:
        return
    _refuse_a_pool_without_an_episode(_with_shapes(config, _target_pools(config, scan, train_examples, val_examples)),
                                      config.seed)


def _refuse_a_pool_without_an_episode(pools: MetaPools, seed: int) -> None:
    """The run's EpisodeSampler's DataError (it names the episode and the classes) where the meta-training pool
    cannot fill one episode. The sampler is only built where it refuses: built otherwise, it would repeat its
    warnings about small classes, which the run's own sampler gives."""
    shape, counts = pools.train_shape, Counter(pools.train_labels)
    if sum(n >= shape.shots + 1 for n in counts.values()) < shape.ways:
        raise DataError(_no_episode_message(pools, counts))
    if sum(n >= shape.shots + shape.queries for n in counts.values()) < shape.ways:
        EpisodeSampler(pools.train_labels, shape.ways, shape.shots, shape.queries, seed=seed,
                       class_names=pools.class_names)


def _no_episode_message(pools: MetaPools, counts: Counter) -> str:
    """Fewer than `ways` classes of the meta-training pool hold the shots and one query. The sampler's own message
    asked for shots + --queries files and to lower --queries, which cannot help: the queries are fitted down to what
    the classes hold, at least 1 (fit_training_queries), so only the shots and the ways decide."""
    shape, names = pools.train_shape, pools.class_names
    need = shape.shots + 1
    small = sorted((label, n) for label, n in counts.items() if n < need)
    listed = first_few([f"{names[label]!r} ({n} files)" for label, n in small])
    enough = len(counts) - len(small)
    remedy = (f"Too small: {listed}. Use fewer shots (--shots) or ways (--ways), or add files" if small else
              f"There are only {len(counts)} classes: use fewer ways (--ways) or add classes")
    return (f"A {shape.ways}-way {shape.shots}-shot episode needs {shape.ways} classes with at least {need} files "
            f"each (the shots and one query; --queries is fitted down to what the classes hold); only {enough} of "
            f"the {len(counts)} meta-training classes have that many. {remedy}. Received: ways={shape.ways}, "
            f"shots={shape.shots}, queries={shape.queries}")


def unused_source_warning(config: TrainConfig) -> str | None:
    """Why `--meta-data` does nothing with a transfer strategy, and what does use a source there."""
    if not config.meta_data or config.strategy in META_STRATEGIES:
        return None
    return (f"--meta-data {config.meta_data} has no effect with --strategy {config.strategy}: a source of other "
            f"classes meta-trains the meta strategies ({', '.join(META_STRATEGIES)}). To use it with "
            f"{config.strategy}, train a meta run on it first (--strategy protonet --meta-data SOURCE), then pass "
            "that run as --backbone RUN_DIR.")


def _scan_source(config: TrainConfig, check_files_content: bool = True):
    _refuse_a_run_directory(config.meta_data)
    try:  # the listing (no contents) is a first look: the full scan that follows reports the skipped files
        return scan_folder(config.meta_data, check_files_content=check_files_content, quiet=not check_files_content)
    except DataError as error:  # the scan's message names a data folder: say it is the --meta-data one
        raise DataError(f"--meta-data {config.meta_data}: {error}") from None


def _refuse_a_run_directory(meta_data: str) -> None:
    """A run directory passed as the source (mistaken for the way one source run serves many targets) was scanned
    as data: its logs/ (and eval/) folders became classes and the error said it "has 1 class: ['logs']"."""
    folder = Path(meta_data).expanduser()
    if rd.holds_a_run(folder):
        raise UserError(f"--meta-data {meta_data} is a run directory (written by train.py), not a folder of source "
                        "classes. To build on that run, pass it as --backbone RUN_DIR (its trained backbone and "
                        "embedding) or --init RUN_DIR (its meta-learned initialisation); --meta-data takes a folder "
                        "of class subfolders of other classes than the target's.")
    refuse_runs_inside(meta_data, "classes of the --meta-data source")


def _check_source(meta_scan, config: TrainConfig, scan) -> None:
    if meta_scan.modality != scan.modality:
        raise UserError(f"--meta-data holds {meta_scan.modality} files but the target folder holds {scan.modality} "
                        f"files. Use a source folder of {scan.modality} files. Received: --meta-data {config.meta_data}")
    check_disjoint_meta_classes(meta_scan.class_names, scan.class_names)
    try:
        require_trainable(meta_scan, min_per_class=2)
    except DataError as error:
        raise DataError(f"--meta-data {config.meta_data}: {error}") from None


def _without_target_copies(meta_scan, scan, config: TrainConfig):
    """The source scan without its files byte-identical to target files. A copy of a target file under a source
    class (another name, so the class check passes) would meta-train the run on the target's test files, which no
    pool may hold; a class holding nothing else is left out too (it counted as a class with no file in it)."""
    target = {e.sha256 for e in scan.examples if e.sha256}
    shared = [e for e in meta_scan.examples if e.sha256 and e.sha256 in target]
    if not shared:
        return meta_scan
    logger.warning("%d file(s) of --meta-data %s are byte-identical to files of the target folder (e.g. %s): "
                   "left out of the source, so that no target file (a test file above all) meta-trains the run.",
                   len(shared), config.meta_data, shared[0].path)
    examples = [e for e in meta_scan.examples if not (e.sha256 and e.sha256 in target)]
    names = meta_scan.class_names
    kept = sorted({e.label for e in examples})
    if len(kept) < len(names):
        logger.warning("--meta-data class(es) %s hold only copies of target files: left out of the source.",
                       ", ".join(repr(names[label]) for label in range(len(names)) if label not in kept))
    new_label = {label: index for index, label in enumerate(kept)}
    return replace(meta_scan, class_names=[names[label] for label in kept],
                   examples=[replace(e, label=new_label[e.label]) for e in examples])


def _source_pools(config: TrainConfig, scan) -> MetaPools:
    meta_scan = _scan_source(config)
    if meta_scan.modality == scan.modality:  # (another modality is refused by _check_source, by name)
        meta_scan = _without_target_copies(meta_scan, scan, config)
    _check_source(meta_scan, config, scan)  # enough classes and files once the copies are out
    return _pools_of_source(config, meta_scan)


def _pools_of_source(config: TrainConfig, meta_scan) -> MetaPools:
    """The meta-training and meta-validation pools of a source scan (the listing, or the checked files)."""
    examples = list(meta_scan.examples)
    names = meta_scan.class_names
    holdout = hold_out_classes(names, config.ways, config.seed)
    if holdout.kind == "class-disjoint":
        held = set(holdout.meta_val)
        in_val = [names[e.label] in held for e in examples]
    else:
        in_val = holdout_examples([e.label for e in examples], config.seed).tolist()
    class_splits = {name: ("meta_val" if name in holdout.meta_val else "meta_train") for name in names}
    # Which files and classes meta-trained the run, as the target's manifest.json does for its split.
    manifest = {"root": meta_scan.root, "class_names": names, "class_splits": class_splits,
                "meta_validation": holdout.kind,
                "files": [{"path": str(Path(e.path).relative_to(meta_scan.root)), "sha256": e.sha256,
                           "label": names[e.label], "split": "meta_val" if val else "meta_train"}
                          for e, val in zip(examples, in_val)]}
    return MetaPools([e for e, val in zip(examples, in_val) if not val], [e for e, val in zip(examples, in_val) if val],
                     names, None, None, f"{config.meta_data} ({len(names)} classes)", holdout.note, manifest,
                     summary={"pools": holdout.kind, "meta_val_classes": holdout.meta_val})


def _with_shapes(config: TrainConfig, pools: MetaPools) -> MetaPools:
    queries = fit_training_queries(pools.train_labels, config.ways, config.shots, config.queries)
    pools.train_shape = EpisodeShape(config.ways, config.shots, queries)
    pools.val_shape = validation_shape(pools.val_labels, config.ways, config.shots, config.queries)
    if pools.val_shape is None:
        pools.validation = (f"none: {pools.validation} cannot form a 2-way 1-shot episode, so early stopping watches "
                            "the meta-training episode loss")
    pools.summary |= {"train_episodes": vars(pools.train_shape),
                      "val_episodes": None if pools.val_shape is None else vars(pools.val_shape),
                      "meta_validation": pools.validation}
    return pools


def describe(pools: MetaPools, config: TrainConfig) -> str:
    """The one line saying what was chosen."""
    train, val = pools.train_shape, pools.val_shape
    fitted = f" (fitted: --queries {config.queries} is more than most classes hold)" if train.queries < config.queries \
        else ""
    validation = (f"{pools.validation}; {val.ways}-way {val.shots}-shot {val.queries}-query validation episodes"
                  if val else pools.validation)
    return (f"meta-training episodes from {pools.source}: {len(pools.train)} files of "
            f"{len({e.label for e in pools.train})} classes, {train.ways}-way {train.shots}-shot with "
            f"{train.queries} queries per class{fitted}; meta-validation: {validation}")
