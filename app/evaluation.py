"""Evaluate a saved run on a data folder: choose the files, predict, write eval/<name>/."""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.errors import UserError
from app.calibration import apply_temperature
from app.metrics import bootstrap_ci95, classification_metrics, reliability_bins
from app.report import plot_confusion_matrix, plot_reliability, render_comparison, render_report
from app.explanations import explanations_section
from app.label_issue_run import label_issues_section
from app.open_set import embed_examples
from app.open_set_evaluation import check_unknown_apart, evaluate_unknown, prepare_unknown_set, render_open_set
from data.atomic_write import write_atomically
from data.images import IMAGE_EXTENSIONS
from data.records import Example, SkippedFile
from app.data_folder import refuse_runs_inside
from data.scan import scan_folder, with_article
from app.run_integrity import open_run
from app.backbone_lineage import RECORDED_DIGEST, backbone_lineage, files_digest
from app.run_manifest import read_manifest, read_source_manifest
from app.report_staging import METRICS_FILE, refuse_if_being_written, staged_report_dir
from app.run_metadata import LoadedRun, RunMetadata

logger = logging.getLogger(__name__)
WORST_EXAMPLES = 10


def load_run(path: str | Path) -> LoadedRun:
    """A finished run, its files checked (app/run_integrity.py): damage is one UserError naming the file."""
    return LoadedRun(*open_run(path))


@dataclass
class EvaluationSet:
    examples: list[Example]  # labels index class_names
    description: str
    name_suffix: str
    class_names: list[str]  # the run's classes (with any_classes: and the folder's)
    # Files of the scored part of the folder that the scan could not read: not scored, and said so in metrics.json
    # and report.md (the accuracy of a test folder with unreadable files was over fewer files without a word).
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.examples]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def choose_evaluation_set(run: LoadedRun, data_dir: str | Path, allow_missing_classes: bool = False,
                          any_classes: bool = False) -> EvaluationSet:
    """Pick the files to evaluate on and map their labels to the run's class order.

    Order of preference: the folder's test/ split; for the run's own training
    folder without test/, the validation files held out at training time (from
    the manifest: its test files, else its validation files; never training
    files); a val/ split; otherwise every file. `any_classes` (few-shot
    evaluation): classes the run never saw are welcome, and labels index the sorted
    union of the run's and the folder's classes. Whatever the folder, files whose
    bytes equal a file of the run's training or validation split (its manifest's
    hashes) are left out, with a warning: a copied or moved training folder must not
    be scored as new data.
    """
    chosen = _leave_out_training_files(run, _choose(run, data_dir, allow_missing_classes, any_classes),
                                                allow_missing_classes or any_classes)
    if chosen.skipped:  # the description goes into metrics.json ("split"), report.md and the episodes' messages
        chosen = replace(chosen, description=f"{chosen.description}; {len(chosen.skipped)} unreadable file(s) "
                                             "skipped, not scored")
    return chosen


def _leave_out_training_files(run: LoadedRun, chosen: EvaluationSet, classes_may_go: bool) -> EvaluationSet:
    """`chosen` without the files byte-identical to the run's training or validation files, said in its description.
    `classes_may_go`: a class left with no file is allowed (else a UserError)."""
    kept, seen, caveat = _without_training_files(run, chosen)
    if caveat:  # the description goes into metrics.json ("split") and report.md
        chosen = replace(chosen, description=f"{chosen.description}; {caveat}")
    left_out = len(chosen.examples) - len(kept)
    if not left_out:
        return chosen
    lost = sorted({chosen.class_names[e.label] for e in chosen.examples} - {chosen.class_names[e.label] for e in kept})
    if lost and not classes_may_go:
        raise UserError(f"Without the files byte-identical to the run's {seen} files, no file of {lost} is left to "
                        "evaluate. Add files the run never saw, or pass --allow-missing-classes to evaluate on the "
                        "other classes.")
    # The description goes into metrics.json ("split") and report.md: the count is part of what was evaluated.
    return replace(chosen, examples=kept,
                   description=f"{chosen.description}, without {left_out} file(s) byte-identical to the run's "
                               f"{seen} files")


def _seen_hashes(run_path: Path, splits: tuple[str, ...], recorded: bool = False) -> set[str]:
    """sha256 of the manifest's files in `splits`. `recorded`: metadata.json says the run wrote a manifest, so a
    missing one is damage (a UserError): without it, the run's training files would be scored as new data."""
    if not (run_path / rd.MANIFEST_FILE).is_file():
        if recorded:
            raise UserError(f"{str(run_path)!r} is a damaged run directory: {rd.MANIFEST_FILE} (the list of the files "
                            f"it trained on, recorded in {rd.METADATA_FILE}) is missing, so evaluate.py cannot leave "
                            f"the run's training files out of what it scores. {rd.retrain_remedy(run_path)}")
        return set()  # a run trained before manifests existed
    return read_manifest(run_path).hashes(*splits)


def backbone_training_files(run: LoadedRun) -> set[str]:
    """sha256 of the files that trained the run's backbone when it is an earlier run's (`--backbone RUN_DIR`,
    metadata.json's `backbone_run`, followed down the chain): each such run's training and validation files and
    its --meta-data source. That run may have split the same folder differently (another --seed), so this run's
    test files can be files its backbone trained on."""
    return _backbone_files_and_caveat(run)[0]


def _backbone_files_and_caveat(run: LoadedRun) -> tuple[set[str], str | None]:
    """backbone_training_files, and what the evaluation's description must say when they cannot all be known (the
    run of the chain is gone, damaged, or trained again at its path): said in a warning only, report.md and
    metrics.json presented a score that may include the backbone's own training files as an honest one."""
    record = run.metadata.backbone_run
    if not record:
        return set(), None
    lineage = backbone_lineage(record)
    if not lineage.complete:  # that run's damage is its own: a warning, not this run's error
        logger.warning("The run's backbone came from the run %s (--backbone RUN_DIR), whose files cannot be "
                       "read (%s): the files that trained that backbone cannot be left out of this evaluation.",
                       lineage.broken_at, lineage.problem)
        return lineage.hashes, (f"the files that trained its --backbone run could not all be left out (the run "
                                f"{lineage.broken_at} cannot be read), so this may be optimistic")
    recorded = record.get(RECORDED_DIGEST)
    if recorded is not None and recorded != files_digest(lineage.hashes):
        # A run trained again at the same path (or another run put there) lists other files: leaving those out
        # would drop files that never trained this backbone and keep the ones that did, silently.
        logger.warning("The run's backbone came from the run %s (--backbone RUN_DIR), which has changed since this "
                       "run trained (it, or a run down its chain, was trained again or replaced at its path): the "
                       "files it lists now are not the ones that trained this backbone, so those cannot be left "
                       "out of this evaluation. Evaluate on files that run never saw.", record.get("path"))
        return set(), (f"the files that trained its --backbone run could not be left out (the run {record.get('path')} "
                       "changed since), so this may be optimistic")
    return lineage.hashes, None


def source_files(run_path: Path) -> tuple[set[str], set[str]]:
    """The sha256 and the class names of the `--meta-data` source a meta run meta-trained and meta-validated on
    (meta_manifest.json; empty sets without one)."""
    source = read_source_manifest(run_path)
    return (set(), set()) if source is None else (source.hashes(), set(source.class_splits))


def _without_training_files(run: LoadedRun, chosen: EvaluationSet) -> tuple[list[Example], str, str | None]:
    """The chosen examples without those the run saw, which of its splits that means, and a caveat when the files
    that trained a reused backbone cannot all be known (_backbone_files_and_caveat)."""
    # The validation files steered early stopping, the temperature and the unknown threshold (and a refit trained
    # on them): scoring them is optimistic, so they go too, except where they are what was chosen on purpose (the
    # run's own folder without a test split, which says it is optimistic).
    own_validation = chosen.name_suffix == "heldout-val"
    splits = ("train",) if own_validation else ("train", "val")
    trained = _seen_hashes(run.path, splits, recorded=run.metadata.manifest_sha256 is not None)
    fitted = "training or validation"
    # The --meta-data source's files trained the embedding (or chose its epoch and source stage): few-shot
    # evaluation on the source folder scored them as new classes.
    chosen_hashes = {e.sha256 for e in chosen.examples}
    if (source := source_files(run.path)[0]) & chosen_hashes:
        trained |= source
        fitted += " (or --meta-data source)"
    backbone, caveat = _backbone_files_and_caveat(run)
    if backbone & chosen_hashes:
        trained |= backbone
        fitted += " (or --backbone run's training)"
    if own_validation:
        fitted = fitted.replace("training or validation", "training", 1)
    leaked = [e for e in chosen.examples if e.sha256 and e.sha256 in trained]
    if not leaked:
        return chosen.examples, fitted, caveat
    kept = [e for e in chosen.examples if not (e.sha256 and e.sha256 in trained)]
    if not kept:
        raise UserError(f"Every one of the {len(leaked)} files chosen ({chosen.description}) is byte-identical to a "
                        f"file of the run's {fitted} split (by the manifest's hashes): scoring them "
                        "would measure memory, not accuracy. Evaluate on files the run never saw.")
    logger.warning("%d of %d files chosen (%s) are byte-identical to files of the run's %s split (by "
                   "the manifest's hashes; e.g. %s): left out of the evaluation, which scores the other %d.",
                   len(leaked), len(chosen.examples), chosen.description, fitted, leaked[0].path, len(kept))
    return kept, fitted, caveat


def _files_of(modality: str) -> str:
    if modality == "text":
        return ".txt, one example per file"
    return ", ".join(sorted(extension.lstrip(".") for extension in IMAGE_EXTENSIONS))  # what the scan accepts


def _choose(run: LoadedRun, data_dir: str | Path, allow_missing_classes: bool, any_classes: bool) -> EvaluationSet:
    # The run's kind: a folder that also holds files of the other kind is evaluated on the run's (an image run on
    # 12 .txt and 6 .png files warned that each PNG was "not a text file", then refused the folder as text).
    if rd.holds_a_run(Path(data_dir).expanduser()):
        # Scanned as data, its eval/ and logs/ were "classes the model was not trained on" to remove or rename.
        raise UserError(f"DATA_DIR {str(data_dir)!r} is a run directory (written by train.py), not a data folder. "
                        "Pass the folder of class subfolders to evaluate on: evaluate.py RUN_DIR DATA_DIR (to "
                        "compare runs: evaluate.py RUN_DIR DATA_DIR --compare OTHER_RUN_DIR).")
    refuse_runs_inside(str(data_dir), "files to evaluate")
    scan = scan_folder(data_dir, modality=run.modality)
    if scan.modality != run.modality:
        # Few-shot evaluation takes any classes: naming the run's there sent the user after the wrong fix.
        folders = "one subfolder per class" if any_classes else "class folders named as the run's classes"
        raise UserError(f"The run expects {run.modality} data but {str(data_dir)!r} holds {scan.modality} files. "
                        f"Evaluate it on a folder of {run.modality} files ({_files_of(run.modality)}) in {folders}.")
    run_classes = run.class_names
    folder_classes = sorted({scan.class_names[e.label] for e in scan.examples})
    if any_classes:
        run_classes = sorted(set(run_classes) | set(folder_classes))
    unknown = sorted(set(folder_classes) - set(run_classes))
    missing = sorted(set(run_classes) - set(folder_classes))
    if unknown:
        raise UserError(
            f"The folder has classes the model was not trained on: {unknown} (the run knows {run_classes}). "
            "Remove or rename those folders."
        )
    if missing and not (allow_missing_classes or any_classes):
        raise UserError(
            f"The folder lacks classes the model was trained on: {missing}. Add them, or pass "
            "--allow-missing-classes to evaluate on the classes present."
        )
    to_run_index = {name: run_classes.index(name) for name in folder_classes}

    def collect(split):
        return [replace(e, label=to_run_index[scan.class_names[e.label]]) for e in scan.examples if e.split == split]

    def split_set(split: str, description: str) -> EvaluationSet:
        examples = collect(split)
        lacking = sorted(set(run_classes) - {run_classes[e.label] for e in examples})
        if lacking and not (allow_missing_classes or any_classes):
            raise UserError(f"The folder's {split}/ split lacks classes the model was trained on: {lacking}. Add "
                            "them, or pass --allow-missing-classes to evaluate on the classes present.")
        split_root = Path(scan.root) / split
        skipped = [item for item in scan.skipped if Path(item.path).is_relative_to(split_root)]
        return EvaluationSet(examples, description, split, run_classes, skipped)

    if "test" in scan.splits_present():
        return split_set("test", "test/ split of the folder")
    if _same_folder(scan.root, run.metadata.data_dir):
        held_out, split = read_manifest(run.path).held_out(run_classes)
        description, suffix = "test files held out at training time (from the run manifest)", "heldout-test"
        if split == "val":
            if run.metadata.refit_applied:
                raise UserError(
                    f"The run has no test split of {scan.root!r} to evaluate on, and its validation files are "
                    "training files: the run refitted on train + validation (metadata.json, 'refit'). Evaluate "
                    "on a folder with a test/ split or on files the run never saw, or train with "
                    "--test-fraction above 0 (or --refit no) to keep files out of training.")
            # They also set the temperature and the unknown-class threshold (evaluate.py --unknown's "known files
            # accepted" is then reject_recall by construction): the description said early stopping only.
            description = ("validation files held out at training time (from the run manifest; the run had no "
                           "test split and used these for early stopping, the temperature and the unknown-class "
                           "threshold, so this is optimistic)")
            suffix = "heldout-val"
        scanned = {e.path: e for e in scan.examples}
        paths = [str(Path(scan.root) / entry.path) for entry in held_out]
        absent = [p for p in paths if p not in scanned]
        if absent:
            raise UserError(f"{len(absent)} held-out files of the run's manifest are missing or unreadable in "
                            f"{scan.root!r}, e.g. {absent[0]!r}.")
        examples = [replace(scanned[p], label=run_classes.index(entry.label)) for p, entry in zip(paths, held_out)]
        return EvaluationSet(examples, description, suffix, run_classes)
    if "val" in scan.splits_present():
        return split_set("val", "val/ split of the folder")
    return EvaluationSet(collect(None), "all files of the folder", "all", run_classes, list(scan.skipped))


def default_eval_name(data_dir: str | Path, suffix: str) -> str:
    """<folder>-<suffix>: the data folder's name cleaned to letters, digits, '_', '.' and '-', without leading dots
    (a folder named .tmp-1-x gave a report name the next evaluation removed as a killed one's leftover) and cut so
    that the whole, numbered -2, -3, ... by rd.default_report_dir, stays a name the file system takes (a folder
    name of 250 characters failed with "File name too long" once the evaluation was done)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data_dir).expanduser().resolve().name).lstrip(".")
    room = rd.REPORT_NAME_MAX_BYTES - len(f"-{suffix}") - len("-999")
    return f"{base[:max(room, 1)] or 'data'}-{suffix}"


def _mistakes(chosen: EvaluationSet, probabilities: np.ndarray, class_names: list[str]) -> list[dict]:
    """Every misclassified example, most confident first."""
    predicted = probabilities.argmax(axis=1)
    order = sorted((i for i in range(len(chosen.examples)) if predicted[i] != chosen.labels[i]),
                   key=lambda i: -probabilities[i, predicted[i]])
    return [
        {"file": chosen.paths[i], "true": class_names[chosen.labels[i]],
         "predicted": class_names[predicted[i]], "confidence": float(probabilities[i, predicted[i]])}
        for i in order
    ]


def _write_mistakes_csv(mistakes: list[dict], path: Path) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "true", "predicted", "confidence"])
            writer.writeheader()
            writer.writerows({**m, "confidence": f"{m['confidence']:.6f}"} for m in mistakes)

    write_atomically(path, write)


def evaluate_run(run_path: str | Path, data_dir: str | Path, name: str | None = None,
                 batch_size: int = 32, top_k: int = 5, allow_missing_classes: bool = False,
                 apply_temperature_scaling: bool = False, bootstrap_resamples: int = 1000,
                 artifact: str | Path | None = None, unknown_dir: str | None = None) -> tuple[dict, Path]:
    """Metrics and reports of the run's model.keras, or of an exported `artifact` (SavedModel / .tflite)."""
    if artifact is not None and unknown_dir is not None:
        raise UserError(f"--unknown scores files with the run's model.keras (its embedding); it does not combine with "
                        f"--artifact. Received: --unknown {unknown_dir} with --artifact {artifact}. Evaluate them "
                        "in two calls.")
    if unknown_dir is not None:  # before the model loads: a folder inside DATA_DIR would score its files twice
        check_unknown_apart(unknown_dir, data_dir)
    run = load_run(run_path)
    chosen = _chosen_files(run, data_dir, allow_missing_classes)
    return _evaluate(run, chosen, data_dir, name, batch_size, top_k, apply_temperature_scaling, bootstrap_resamples,
                     artifact, unknown_dir)


def _chosen_files(run: LoadedRun, data_dir: str | Path, allow_missing_classes: bool) -> EvaluationSet:
    chosen = choose_evaluation_set(run, data_dir, allow_missing_classes)
    if not chosen.paths:
        raise UserError(f"No files to evaluate in {str(data_dir)!r} ({chosen.description}).")
    return chosen


def _evaluate(run: LoadedRun, chosen: EvaluationSet, data_dir: str | Path, name: str | None, batch_size: int,
              top_k: int, apply_temperature_scaling: bool, bootstrap_resamples: int, artifact: str | Path | None = None,
              unknown_dir: str | None = None) -> tuple[dict, Path]:
    """evaluate_run on an opened run and its chosen files."""
    unknown = (prepare_unknown_set(run, unknown_dir, frozenset(e.sha256 for e in chosen.examples if e.sha256))
               if unknown_dir is not None else None)  # checked before the pass
    temperature = run.metadata.temperature
    if apply_temperature_scaling and temperature is None:  # before the pass: it was refused after every prediction
        raise UserError(f"{str(run.path)!r} has no fitted temperature (trained by an older metatune); "
                        "evaluate without --apply-temperature.")
    if name:  # the folder is known before the pass (the default name waits for an --artifact's label)
        refuse_if_being_written(run.path / "eval" / name)
    logger.info("Evaluating %s on %d files: %s", run.path, len(chosen.paths), chosen.description)
    artifact_info = None
    if artifact is not None:
        from app.artifact_evaluation import predict_with_artifact

        probabilities, artifact_info = predict_with_artifact(run, artifact, chosen.examples, batch_size)
    elif unknown is not None:  # one pass gives the probabilities and the embedding the unknown score needs
        known_embeddings, probabilities = embed_examples(run, chosen.examples, batch_size=batch_size)
    else:
        probabilities = run.predict_examples(chosen.examples, batch_size)
    if apply_temperature_scaling:
        probabilities = apply_temperature(probabilities, temperature)
    metrics = classification_metrics(chosen.labels, probabilities, run.class_names, k=top_k)
    metrics["ci95"] = bootstrap_ci95(chosen.labels, probabilities.argmax(axis=1), len(run.class_names),
                                     resamples=bootstrap_resamples)
    metrics["calibration"] = {"fitted_temperature": temperature, "temperature_applied": apply_temperature_scaling,
                              "reliability": reliability_bins(chosen.labels, probabilities)}
    metrics["split"] = chosen.description
    metrics["skipped_files"] = [{"path": item.path, "reason": item.reason} for item in chosen.skipped]
    metrics["data_dir"] = str(Path(data_dir).expanduser().resolve())
    suffix = chosen.name_suffix
    if artifact_info:
        metrics["artifact"] = artifact_info
        suffix += f"-{artifact_info['label']}"

    out_dir = run.path / "eval" / name if name else rd.default_report_dir(run.path / "eval",
                                                                          default_eval_name(data_dir, suffix), data_dir)
    with staged_report_dir(out_dir, run.path) as staging:  # in place of out_dir only once written whole
        mistakes = _mistakes(chosen, probabilities, run.class_names)
        _write_mistakes_csv(mistakes, staging / "misclassified.csv")
        plot_confusion_matrix(metrics["confusion_matrix"], run.class_names, staging / "confusion_matrix.png")
        plot_reliability(metrics["calibration"]["reliability"], metrics["ece"], temperature,
                         staging / "reliability.png")
        report = render_report(metrics, {"run_dir": str(run.path), "data_dir": metrics["data_dir"],
                                         "split_description": chosen.description,
                                         "model": artifact_info["path"] if artifact_info else None},
                               mistakes[:WORST_EXAMPLES])
        if unknown is not None:
            correct = probabilities.argmax(axis=1) == np.asarray(chosen.labels)
            metrics["open_set"] = evaluate_unknown(run, unknown, known_embeddings, correct, staging, batch_size)
            report += "\n" + render_open_set(metrics["open_set"])
        report += "\n" + label_issues_section(run.path, run.modality, run.input_size, run.resize, staging)
        report += "\n" + explanations_section(run, chosen.paths, chosen.labels, probabilities, staging,
                                              [e.encoding for e in chosen.examples])
        rd.write_text(staging / "report.md", report)
        rd.write_json(staging / METRICS_FILE, metrics)  # last: its presence means the evaluation finished
    return metrics, out_dir


def _warn_if_other_files(opened: list[tuple]) -> None:
    """A warning for each run that scores other files than the first: on the runs' own training folder each scores
    its own held-out files, which differ between runs split with another --seed (the same count and description:
    only the files tell), and a run leaves out the files byte-identical to its own training files."""
    first_path, _, first = opened[0]
    reference = set(first.paths)
    for path, _, chosen in opened[1:]:
        files = set(chosen.paths)
        if files == reference:
            continue
        # The files in common, not those missing from the first run's: a run scoring a subset of the first's
        # files was reported as "0 of its 4 files are not among the 20".
        logger.warning("%s scores other files than %s: %d files (%s) against %d, %d of them the same, so the table "
                       "compares numbers on different files. For one set of files, evaluate the runs on a folder "
                       "with a test/ split (or one they never saw), or train them with the same --seed.",
                       path, first_path, len(files), chosen.description, len(reference), len(files & reference))


def _same_modality(run_paths: list[str | Path]) -> None:
    """Refuse, before any evaluation, runs of another modality than the first: a --compare image run beside a text
    run failed only after the first run's evaluation was written, with a line about the folder, not the run."""
    modalities = []
    for path in run_paths:
        try:
            modalities.append((path, RunMetadata.read(Path(path)).modality))
        except UserError:  # missing or damaged: evaluate_run says so in its turn
            continue
    first = modalities[0] if modalities else None
    for path, modality in modalities[1:]:
        if modality != first[1]:
            raise UserError(f"--compare needs runs of one modality, evaluated on the same folder: {first[0]} is "
                            f"{with_article(first[1])} run but {path} is {with_article(modality)} run. Received: "
                            f"--compare {path}. Compare it with runs of {modality} data, on a folder of {modality} "
                            "files.")


def compare_runs(run_paths: list[str | Path], data_dir: str | Path, allow_missing_classes: bool = False,
                 **kwargs) -> tuple[str, list[dict]]:
    """Evaluate several runs on the same folder; one Markdown table (a warning when they scored different files)."""
    _same_modality(run_paths)
    # Every run opened and its files chosen before any is evaluated: a missing, unfinished or damaged run (a typo in
    # the list), or one the folder does not fit, failed only after the runs before it were evaluated and written.
    opened = []
    for path in run_paths:
        run = load_run(path)
        opened.append((path, run, _chosen_files(run, data_dir, allow_missing_classes)))
    _warn_if_other_files(opened)
    rows = []
    for path, run, chosen in opened:
        metrics, out_dir = _evaluate(run, chosen, data_dir, **kwargs)
        metadata = run.metadata
        rows.append({"run": str(path), "backbone": metadata.backbone, "strategy": metadata.strategy,
                     "num_examples": metrics["num_examples"], "accuracy": metrics["accuracy"],
                     "macro_f1": metrics["macro_f1"], "ece": metrics["ece"], "ci95": metrics["ci95"],
                     "eval_dir": str(out_dir)})
    return render_comparison(rows), rows
