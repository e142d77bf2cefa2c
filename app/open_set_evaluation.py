"""evaluate.py --unknown DIR: how well the run's unknown-class detector tells files of classes it
never saw from the evaluation files of its own classes (metrics.json `open_set`, a histogram in
report.md, TensorBoard under logs/eval_<name>/)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.errors import UserError
from app.escaping import markdown_code
from app.input_files import collect_inputs
from app.open_set import embed_examples, head_weights
from app.report import save_figure
from app.run_manifest import read_manifest
from app.unknown_scores import SCORES, UnknownScorer, auroc, fpr_at_tpr, percent
from app.unknown_selection import UnknownDetector
from app.unknown_store import load_detector
from data.records import Example
from data.scan import SPLIT_NAMES, walk_visible

logger = logging.getLogger(__name__)
HISTOGRAM_FILE = "open_set_histogram.png"


@dataclass
class UnknownSet:
    scorer: UnknownScorer
    detector: UnknownDetector
    examples: list[Example]
    folder: str
    left_out: list[str]  # subfolders named like one of the run's classes (not unknown to it)
    left_out_copies: int = 0  # files byte-identical to known ones (the run's manifest's, the evaluated files)


def _known_class_folders(folder: Path, class_names: list[str]) -> list[Path]:
    """Folders named like a class the run knows: the folder itself (`--unknown DATA/red`) and its subfolders
    at any depth (`other/red`, `test/red`), as collect_inputs searches them (symlinked folders followed).
    Only the top level was looked at, so a known class one level down, or given as the folder itself, was
    scored as unknown."""
    known = set(class_names)
    if folder.resolve().name in known:  # resolved: `--unknown .` inside a class's folder has the name ""
        return [folder]
    found = []
    for current, dirs, _ in walk_visible(folder):  # as collect_inputs walks it: symlink loops walked once
        found += [current / d for d in dirs if d in known]
        dirs[:] = [d for d in dirs if d not in known]  # everything below a known class's folder goes with it
    return sorted(found)


def prepare_unknown_set(run, unknown_dir: str, evaluated: frozenset[str] = frozenset()) -> UnknownSet:
    """Check the run and the folder before anything expensive; the files to score as unknown. `evaluated`: the
    content hashes of the known files evaluated beside them (a copy of one is not unknown either)."""
    detected = load_detector(run.path, head_weights(run.model)[0].shape)
    if detected is None:
        raise UserError(f"{str(run.path)!r} has no unknown-class detector (unknown.json; runs trained before it "
                        "existed lack it). Train the run again to evaluate --unknown.")
    folder = Path(unknown_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"--unknown needs a folder of files of classes the model does not know. "
                        f"Received: --unknown {unknown_dir} (not a folder)")
    shared = _known_class_folders(folder, run.class_names)
    if shared:
        logger.warning("--unknown %s has folders named like classes the model knows: %s. Their files are left out of "
                       "the unknown set (they are not unknown to the model).", unknown_dir,
                       ", ".join(str(p.relative_to(folder)) if p != folder else "the folder itself" for p in shared))
    examples, _ = collect_inputs([str(folder)], run.modality)
    examples = [e for e in examples if not any(Path(e.path).is_relative_to(p) for p in shared)]
    examples, copies = _without_known_files(run.path, examples, evaluated)
    if copies:
        logger.warning("--unknown %s: %d file(s) are byte-identical to files of classes the run knows (of its %s or "
                       "of the folder evaluated, e.g. %s); they are left out of the unknown set.", unknown_dir,
                       len(copies), rd.MANIFEST_FILE, copies[0].path)
    if not examples:
        reasons = (("lies in a folder named like a known class", shared),
                   (f"is byte-identical to a file of a class it knows (in the run's {rd.MANIFEST_FILE} or the folder "
                    "evaluated)", copies))
        why = " or ".join(text for text, found in reasons if found)
        raise UserError(f"--unknown {unknown_dir} holds no readable {run.modality} files of classes the model does "
                        "not know" + (f" (every file {why})" if why else "") + ". Put files of other classes in it.")
    # Under the resolved folder, as `unknown_dir` is recorded: paths as typed (`red`, `../par/red`) were relative to
    # wherever evaluate.py was started, and metrics.json named no folder a later reader could find.
    return UnknownSet(*detected, examples, str(folder.resolve()),
                      [str(folder.resolve() / p.relative_to(folder)) for p in shared], len(copies))


def _without_known_files(run_path: Path, examples: list[Example],
                         evaluated: frozenset[str]) -> tuple[list[Example], list[Example]]:
    """(kept, left out): the unknown files without those byte-identical to a file of the run's manifest (any
    split) or to a known file evaluated beside them. Those are files of classes the run knows, most of them files
    it trained on: a copy of its training folder under another name (`--unknown backup/`) was scored as unknown,
    and the AUROC measured how unfamiliar the model finds its own training files; a copy of an evaluated file was
    scored both ways. A run trained before manifests existed has only the evaluated files to compare with."""
    known = set(evaluated)
    if (Path(run_path) / rd.MANIFEST_FILE).is_file():
        known |= read_manifest(run_path).hashes()
    copies = [e for e in examples if e.sha256 and e.sha256 in known]
    return [e for e in examples if not (e.sha256 and e.sha256 in known)], copies


def check_unknown_apart(unknown_dir: str, data_dir: str) -> None:
    """Refuse an --unknown folder inside one of DATA_DIR's class folders (`--unknown DATA/bag/extra`, or
    DATA/test/bag/extra): DATA_DIR's evaluation takes its files as files of that class, and they were scored as
    unknown too, so the AUROC compared files with themselves. The folder-name check (_known_class_folders) sees
    only the folder's own name and those below it; DATA_DIR itself, a split folder of it or a class folder given
    as --unknown is left to it, and a parent of DATA_DIR is fine (its known class folders are left out by name)."""
    unknown, data = Path(unknown_dir).expanduser().resolve(), Path(data_dir).expanduser().resolve()
    if not unknown.is_relative_to(data):
        return
    parts = unknown.relative_to(data).parts
    if parts and parts[0] in SPLIT_NAMES:  # DATA_DIR/{train,val,test}/<class>/...
        parts = parts[1:]
    if len(parts) >= 2:
        raise UserError(f"--unknown must be a folder apart from DATA_DIR's class folders: its files are evaluated as "
                        f"known files of the class {parts[0]!r}. Received: --unknown {unknown_dir}, which lies inside "
                        f"{data}. Put the files of classes the model does not know in a folder outside DATA_DIR.")


def open_set_metrics(known_scores, unknown_scores, threshold: float, known_correct) -> dict:
    """Detection and accuracy with rejection at the stored threshold."""
    known_scores, unknown_scores = np.asarray(known_scores), np.asarray(unknown_scores)
    known_correct = np.asarray(known_correct, bool)
    accepted = known_scores <= threshold
    rejected_unknown = unknown_scores > threshold
    return {
        "auroc": auroc(known_scores, unknown_scores),
        "fpr_at_95_tpr": fpr_at_tpr(known_scores, unknown_scores, 0.95),
        "threshold": threshold,
        "num_known": int(len(known_scores)),
        "num_unknown": int(len(unknown_scores)),
        "known_accepted": float(accepted.mean()),
        "unknown_rejected": float(rejected_unknown.mean()),
        "known_accuracy": float(known_correct.mean()),  # closed set: rejection does not change the argmax
        # None (null in metrics.json, n/a in report.md) when no known file is accepted: there is no accuracy to give.
        "known_accuracy_when_accepted": float(known_correct[accepted].mean()) if accepted.any() else None,
        # Every file counts: a known file is right when accepted and correctly classified, an unknown one when rejected.
        "accuracy_with_rejection": float((np.sum(known_correct & accepted) + np.sum(rejected_unknown))
                                         / (len(known_scores) + len(unknown_scores))),
    }


def plot_score_histogram(known_scores, unknown_scores, threshold: float, score: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    values = np.concatenate([known_scores, unknown_scores])
    bins = np.linspace(values.min(), values.max(), 41) if np.ptp(values) > 0 else 10
    axis.hist(known_scores, bins=bins, alpha=0.6, density=True, label=f"known classes ({len(known_scores)})")
    axis.hist(unknown_scores, bins=bins, alpha=0.6, density=True, label=f"unknown folder ({len(unknown_scores)})")
    if np.isfinite(threshold):  # infinite: the run's detector rejects nothing (too few validation files)
        axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    axis.set_xlabel(f"unknown-class score ({score})\nhigher: more likely unknown")  # two lines: long score names
    axis.set_ylabel("density")
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


def _shown(value, spec: str) -> str:
    """A metric in report.md: "n/a" where it has no value (None, or a NaN such as the AUROC of one kind of file)."""
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def _threshold_shown(result: dict) -> str:
    threshold, recall = result["threshold"], percent(result["reject_recall"])
    if threshold is None or not np.isfinite(threshold):  # null in metrics.json: see unknown_scores.detector_threshold
        return (f"No threshold (the run had too few validation files to set one that keeps {recall}% of known "
                f"files: its detector rejects nothing)")
    return f"Threshold {threshold:.4g} (keeps {recall}% of known validation files)"


def render_open_set(result: dict) -> str:
    others = ", ".join(f"{name} {_shown(value, '.3f')}" for name, value in result["auroc_by_score"].items())
    return "\n".join([
        "## Unknown classes",
        "",
        # markdown_code(): a newline or a backtick in the folder's name would end the list item or the code span.
        f"- Unknown folder: {markdown_code(result['unknown_dir'])} ({result['num_unknown']} files), against the "
        f"{result['num_known']} evaluation files above",
        f"- Score: {result['score']} (chosen at training time), AUROC **{_shown(result['auroc'], '.3f')}**, "
        f"FPR at 95% TPR {_shown(result['fpr_at_95_tpr'], '.3f')}",
        f"- {_threshold_shown(result)}: known files accepted {100 * result['known_accepted']:.1f}%, unknown files rejected "
        f"{100 * result['unknown_rejected']:.1f}%",
        f"- Accuracy with rejection (known and unknown files): {result['accuracy_with_rejection']:.4f}; known files "
        f"only: {result['known_accuracy']:.4f} (closed set), {_shown(result['known_accuracy_when_accepted'], '.4f')} "
        "on the accepted ones",
        f"- AUROC of every candidate score on these files (for comparison; the choice was made before): {others}",
        "",
        f"![unknown-class score histogram]({HISTOGRAM_FILE})",
        "",
    ])


def _log_tensorboard(log_dir: Path, name: str, result: dict, known_scores, unknown_scores, histogram: Path) -> None:
    import tensorflow as tf
    from PIL import Image

    writer = tf.summary.create_file_writer(str(log_dir / f"eval_{name}"))
    with writer.as_default():
        for key in ("auroc", "fpr_at_95_tpr", "accuracy_with_rejection", "unknown_rejected", "known_accepted"):
            tf.summary.scalar(f"open_set/{key}", result[key], step=0)
        tf.summary.histogram("open_set/known_scores", np.asarray(known_scores), step=0)
        tf.summary.histogram("open_set/unknown_scores", np.asarray(unknown_scores), step=0)
        image = np.asarray(Image.open(histogram).convert("RGB"))[None]
        tf.summary.image("open_set/score_histogram", image, step=0)
    writer.flush()


def evaluate_unknown(run, unknown: UnknownSet, known_embeddings, known_correct, out_dir: Path, batch_size: int) -> dict:
    """metrics.json `open_set`: score the unknown files, compare with the known ones, plot, log."""
    logger.info("Scoring %d files of unknown classes from %s", len(unknown.examples), unknown.folder)
    unknown_embeddings, _ = embed_examples(run, unknown.examples, batch_size=batch_size)
    known_scores = unknown.scorer.score(unknown.detector.score, known_embeddings)
    unknown_scores = unknown.scorer.score(unknown.detector.score, unknown_embeddings)
    result = {"score": unknown.detector.score, "reject_recall": unknown.detector.reject_recall,
              "unknown_dir": unknown.folder, "left_out_folders": unknown.left_out,
              "left_out_known_copies": unknown.left_out_copies,
              **open_set_metrics(known_scores, unknown_scores, unknown.detector.threshold, known_correct)}
    # Every candidate on the same embeddings (reported, never used to choose: the choice was made at training).
    result["auroc_by_score"], result["fpr_at_95_tpr_by_score"] = {}, {}
    for name in filter(unknown.scorer.available, SCORES):
        known_by, unknown_by = unknown.scorer.score(name, known_embeddings), unknown.scorer.score(name, unknown_embeddings)
        result["auroc_by_score"][name] = auroc(known_by, unknown_by)
        result["fpr_at_95_tpr_by_score"][name] = fpr_at_tpr(known_by, unknown_by, 0.95)
    plot_score_histogram(known_scores, unknown_scores, unknown.detector.threshold, unknown.detector.score,
                         out_dir / HISTOGRAM_FILE)
    _log_tensorboard(run.path / "logs", out_dir.name, result, known_scores, unknown_scores, out_dir / HISTOGRAM_FILE)
    return result
