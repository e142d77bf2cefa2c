"""Label issues in a run and in `train.py --check --label-issues`: rank them on the cached features,
record them in the data report, leave the top ones out of training (--exclude-label-issues), show
them in TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from app.errors import UserError
from app.escaping import markdown_cell
from app.label_issues import (FOLDS, LabelIssue, excluded_paths, find_label_issues, require_enough_for_folds,
                              too_few_for_folds)
from data.atomic_write import write_atomically

logger = logging.getLogger(__name__)
SHOWN = 16  # entries in TensorBoard, report.md and the terminal


def rank_label_issues(report: dict, examples, features: np.ndarray, class_names: list[str], seed: int,
                      required: bool) -> list[LabelIssue]:
    """Label issues of the labelled (train + validation) files, written into `report`.

    Not `required` (an ordinary training run): a folder too small for the folds gets an empty
    list and a note instead of an error."""
    labels = [e.label for e in examples]
    short = too_few_for_folds(labels, class_names)
    if short and not required:
        return not_ranked(report, f"{FOLDS}-fold out-of-fold predictions need {FOLDS} labelled files per class; "
                                   f"{', '.join(f'{n!r} has {c}' for n, c in short)}")
    if not np.isfinite(features).all():
        # Training will stop on the NaN loss with its own message; a ranking on such features means nothing.
        reason = "the backbone's features of some files are not finite (NaN or inf)"
        if required:
            raise UserError(f"Label issues cannot be ranked: {reason}. Check the backbone and its --weights.")
        return not_ranked(report, reason)
    ranking = find_label_issues([e.path for e in examples], labels, features, class_names, seed)
    report["label_issues"] = [issue.to_dict() for issue in ranking.issues]
    report["label_issues_fold_accuracy"] = round(ranking.fold_accuracy, 6)
    report["label_issues_note"] = (f"confident learning on {FOLDS}-fold out-of-fold probabilities of "
                                   f"logistic-regression heads on the frozen backbone features, over "
                                   f"{ranking.num_files} train + validation files (out-of-fold accuracy "
                                   f"{ranking.fold_accuracy:.3f}); most likely first"
                                   + (f"; {ranking.caution}" if ranking.caution else ""))
    return ranking.issues


def not_ranked(report: dict, reason: str) -> list[LabelIssue]:
    """An empty list, and the reason in `report` (data_report.json's label_issues_note)."""
    report["label_issues"] = []
    report["label_issues_note"] = f"not ranked: {reason}"
    logger.info("Label issues %s.", report["label_issues_note"])
    return []


def check_label_issues(config, scan, examples, report: dict) -> list[LabelIssue]:
    """`train.py --check --label-issues`: the backbone's features (cached) and the ranking, no training."""
    from app.backbone_choice import resolve_backbone
    from app.features import cached_features, feature_store_key

    labelled = [e for e in examples if e.split in ("train", "val")]
    require_enough_for_folds([e.label for e in labelled], scan.class_names)  # before building the backbone
    backbone = resolve_backbone(config, scan.modality)
    # A finished run's backbone (--backbone RUN_DIR) takes that run's resize mode, as training does (app/training.py):
    # with --resize's default instead, a folder of non-square images was ranked on other features than a run then
    # ranks, so --check listed other files than --exclude-label-issues N leaves out.
    resize = backbone.resize if backbone.reused is not None else config.resize
    # Seeded as train.py seeds it before building the backbone: a randomly initialised one (--weights none,
    # conv4) otherwise gave another feature set, so another list, on every call, and not the list a run with
    # --exclude-label-issues N then leaves out.
    import keras

    keras.utils.set_random_seed(config.seed)
    extractor = backbone.spec.build_features(backbone.size, backbone.weights, backbone.pooling)
    key = (feature_store_key(extractor, backbone.name, backbone.weights, scan.modality, backbone.size, resize,
                             backbone.pooling) if config.cache_features else None)
    features = cached_features(extractor, labelled, scan.modality, backbone.size, config.batch_size, resize, key)
    return rank_label_issues(report, labelled, features, scan.class_names, config.seed, required=True)


def exclude_label_issues(report: dict, issues: list[LabelIssue], setting: str, train_examples,
                         train_features: np.ndarray, val_examples, val_features: np.ndarray):
    """Train and validation examples (and features) without the excluded label issues (`setting`: 0, N or auto),
    as chosen by `choose_left_out`; the files left out go into `report` (data_report.json's label_issues_excluded)."""
    if setting == "0":
        return train_examples, train_features, val_examples, val_features
    if not issues:  # said, or the user could not tell an empty list from a setting that was ignored
        logger.info("--exclude-label-issues %s: the ranking lists no likely mislabelled file, so none is left out.",
                    setting)
        return train_examples, train_features, val_examples, val_features
    train_keep, val_keep = choose_left_out(issues, setting, train_examples, val_examples)
    left_out = sorted(_left_out_paths(train_examples, train_keep, val_examples, val_keep))
    report["label_issues_excluded"] = left_out
    logger.info("--exclude-label-issues %s: %d file(s) left out of training and validation (listed in "
                "data_report.json).", setting, len(left_out))
    train_rows, val_rows = np.flatnonzero(train_keep), np.flatnonzero(val_keep)
    return ([train_examples[i] for i in train_rows], train_features[train_rows],
            [val_examples[i] for i in val_rows], val_features[val_rows])


def choose_left_out(issues: list[LabelIssue], setting: str, train_examples, val_examples) -> tuple[list[bool], list[bool]]:
    """Which training and validation examples --exclude-label-issues `setting` keeps (True) and leaves out (False).

    The ranking covers both labelled splits, so both lose their listed files: a wrong label in the
    validation split misleads early stopping, the temperature and the unknown-class threshold, and
    the refit trains on it. The test split is never ranked, so never touched. Two guards keep the
    run trainable: a class keeps at least one training file, and the validation split is not
    emptied (its listed files stay, with a warning); the same files are chosen again on --resume,
    because the ranking is deterministic on the cached features. `train.py --check` calls this too,
    to show what a run would leave out, so the choice and its warnings are one piece of code."""
    chosen = excluded_paths(issues, setting)
    kept_for_class = []
    train_keep = [e.path not in chosen for e in train_examples]
    for label in sorted({e.label for e in train_examples}):
        rows = [i for i, e in enumerate(train_examples) if e.label == label]
        if not any(train_keep[i] for i in rows):  # every training file of the class is listed: keep the last one
            train_keep[rows[-1]] = True
            kept_for_class.append(train_examples[rows[-1]].path)
    val_keep = [e.path not in chosen for e in val_examples]
    val_kept = not any(val_keep) and bool(val_examples)
    if val_kept:
        val_keep = [True] * len(val_examples)
    if kept_for_class:
        logger.warning("--exclude-label-issues %s: kept %d listed file(s), each its class's last training file: %s",
                       setting, len(kept_for_class), ", ".join(kept_for_class))
    if val_kept:
        logger.warning("--exclude-label-issues %s: every validation file is listed; they stay in validation "
                       "(early stopping needs them)", setting)
    given = {issue.path: issue.given for issue in issues}  # class names, as the issues name them
    kept_labels = {e.label for e, keep in zip(val_examples, val_keep) if keep}
    lost = sorted({given[e.path] for e, keep in zip(val_examples, val_keep) if not keep and e.label not in kept_labels})
    if lost:
        logger.warning("--exclude-label-issues %s: no validation file is left for %d class(es) (%s): early "
                       "stopping, the temperature and the unknown-class threshold are fitted without them",
                       setting, len(lost), ", ".join(lost[:10]))
    return train_keep, val_keep


def _left_out_paths(train_examples, train_keep: list[bool], val_examples, val_keep: list[bool]) -> set[str]:
    return ({e.path for e, keep in zip(train_examples, train_keep) if not keep}
            | {e.path for e, keep in zip(val_examples, val_keep) if not keep})


def format_left_out(setting: str, issues: list[LabelIssue], train_examples, val_examples) -> str:
    """`train.py --check --exclude-label-issues N`: what a training run with that setting would leave out."""
    if setting == "0" or not issues:
        return f"--exclude-label-issues {setting}: a training run would leave out no file."
    train_keep, val_keep = choose_left_out(issues, setting, train_examples, val_examples)
    left_out = _left_out_paths(train_examples, train_keep, val_examples, val_keep)
    ordered = [issue.path for issue in issues if issue.path in left_out]  # in the ranking's order, as listed above
    lines = [f"--exclude-label-issues {setting}: a training run would leave out {len(ordered)} file(s) of training "
             f"and validation" + (":" if ordered else ".")]
    lines += [f"  {path}" for path in ordered[:SHOWN]]
    if len(ordered) > SHOWN:
        lines.append(f"  ... and {len(ordered) - SHOWN} more")
    return "\n".join(lines)


def format_label_issues(issues: list[LabelIssue], note: str, shown: int = SHOWN) -> str:
    if not issues:
        return f"Label issues: none found ({note})."
    lines = [f"Label issues: {len(issues)} file(s) listed, the likeliest mislabelled first ({note}). "
             f"The first {min(shown, len(issues))}:"]
    lines += [f"  {issue.score:.3f}  {issue.path}: labelled {issue.given}, looks like {issue.suggested}"
              for issue in issues[:shown]]
    return "\n".join(lines)


def log_label_issues(log_dir: Path, issues: list[LabelIssue], modality: str, size: int, resize: str) -> None:
    """The first label issues: a captioned image grid, or a table of texts."""
    if not issues:
        return
    import tensorflow as tf

    from app import tensorboard_logging as tb
    from data.pipeline import read_texts

    top = issues[:SHOWN]
    captions = [f"{i.given} -> {i.suggested} {i.score:.2f}" for i in top]
    with tb._writer(log_dir).as_default():
        if modality == "image":
            grid = tb.image_grid([i.path for i in top], captions, (size, size), resize)
            tf.summary.image("label_issues", grid[None], step=0,
                             description="Training files that look mislabelled: given -> suggested label, score.")
        else:
            texts = read_texts([i.path for i in top])
            rows = ["| given -> suggested, score | file | text |", "|---|---|---|"]
            rows += [f"| {markdown_cell(c)} | {markdown_cell(Path(i.path).name)} | {markdown_cell(tb.excerpt(t))} |"
                     for c, i, t in zip(captions, top, texts)]
            tf.summary.text("label_issues", "\n".join(rows), step=0)


LABEL_ISSUES_IMAGE = "label_issues.png"


def label_issues_section(run_path: Path, modality: str, size: int, resize: str, out_dir: Path) -> str:
    """report.md's view of the run's training-data label issues (from its data_report.json): a table
    and, for images, a captioned thumbnail grid (label_issues.png in `out_dir`)."""
    from PIL import Image

    from app import run_dir as rd

    report_path = Path(run_path) / rd.DATA_REPORT_FILE
    report = rd.read_json(report_path) if report_path.is_file() else {}
    if "label_issues" not in report:
        return ""
    issues = [LabelIssue(**entry) for entry in report["label_issues"]]
    lines = ["## Likely label errors in the training data", "",
             f"{len(issues)} file(s) listed in data_report.json ({report.get('label_issues_note', '')})."]
    # A run trained with --exclude-label-issues must say so: without it the reader takes the listed files
    # for files the model trained on (data_report.json's label_issues_excluded).
    excluded = report.get("label_issues_excluded")
    if excluded is not None:
        lines[-1] += (f" {len(excluded)} of them were left out of training and validation "
                      "(train.py --exclude-label-issues; data_report.json's label_issues_excluded).")
    existing = [i for i in issues[:SHOWN] if Path(i.path).is_file()]
    if existing:
        left_out = set(excluded or ())
        extra_header, extra_rule = (" left out of training |", "---|") if excluded is not None else ("", "")
        lines += ["", f"| score | file | given | looks like |{extra_header}", f"|---:|---|---|---|{extra_rule}"]
        lines += [f"| {i.score:.3f} | {markdown_cell(i.path)} | {markdown_cell(i.given)} | "
                  f"{markdown_cell(i.suggested)} |" + ((" yes |" if i.path in left_out else " no |")
                                                       if excluded is not None else "") for i in existing]
    shown = _readable_images(existing) if modality == "image" else []
    if shown:
        from app import tensorboard_logging as tb

        grid = tb.image_grid([i.path for i in shown], [f"{i.given} -> {i.suggested} {i.score:.2f}" for i in shown],
                             (size, size), resize)
        write_atomically(out_dir / LABEL_ISSUES_IMAGE, lambda temporary: Image.fromarray(grid).save(temporary, format="PNG"))
        lines += ["", f"![label issues]({LABEL_ISSUES_IMAGE})"]
    return "\n".join(lines) + "\n"


def _readable_images(issues: list[LabelIssue]) -> list[LabelIssue]:
    """The listed files that still decode as images, for the thumbnails. They were read at training time, but a file
    rewritten since (a fix in progress, a truncated copy, no read permission) made evaluate.py's report a Pillow
    traceback after the whole prediction pass; such a file keeps its table row and is named in a warning."""
    from data.images import check_image

    readable, unreadable = [], []
    for issue in issues:
        ok, reason = check_image(issue.path)
        (readable if ok else unreadable).append(issue if ok else f"{issue.path} ({reason})")
    if unreadable:
        logger.warning("report.md's label-issue thumbnails leave out %d listed file(s) that no longer read as an "
                       "image: %s", len(unreadable), "; ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else ""))
    return readable
