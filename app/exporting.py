"""export.py's steps: check the request, write the artifact under a temporary name, check its
parity with model.keras on the run's held-out files, write parity.json, rename into place.

Nothing is presented as done before its parity check passed: the artifact is built in a
hidden sibling folder (`.tmp-<pid>-<name>`, the temporary names every run file uses:
data/atomic_write.py) and renamed to the requested path only after
parity.json says it passed; a failed check removes it and raises with the numbers.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.artifacts import PARITY_FILE, TFLITE_FILE, InputSpec
from app.errors import UserError
from app.escaping import visible
from app.evaluation import LoadedRun, load_run
from app.parity import ParityReport, compare, compare_unknown
from app.run_manifest import read_manifest
from data.atomic_write import dead_temporaries, temporary_name
from data.doctor import inspect_file
from data.images import load_image
from data.records import Example
from data.scan import RENAME_HINT, is_utf8_name, shown_path
from data.tf_decode import graph_decodable

logger = logging.getLogger(__name__)
FORMATS = ("savedmodel", "litert")
REJECTS = ("auto", "none")  # as predict.py --reject
LABELS_FILE = "labels.txt"
PROBE_SCRIPT = Path(__file__).resolve().parent / "savedmodel_probe.py"
# int8 calibration: TensorFlow's guide suggests a few hundred samples; fewer than this many
# training files cannot give activation ranges to trust.
MIN_REPRESENTATIVE_FILES = 20
# Measured on the bundled sample (EfficientNet-Lite0): 200 calibration files lost 2.5 accuracy
# points, all 240 training files 2.0; TensorFlow's guide suggests a few hundred.
DEFAULT_REPRESENTATIVE_FILES = 500
# The scratch folders beside the staging folder: `.tmp-<pid>-<name>-scratch-` and tempfile's 8 random characters.
SCRATCH_SUFFIX = "-scratch-"
TEMPFILE_RANDOM_CHARACTERS = 8


@dataclass(frozen=True)
class ExportRequest:
    run_dir: str
    format: str
    quantize: str = "none"
    output: str | None = None
    representative_files: int = DEFAULT_REPRESENTATIVE_FILES
    batch_size: int = 32
    reject: str = "auto"  # none: a SavedModel without the unknown-class outputs (and no detector read)

    @property
    def label(self) -> str:
        return "savedmodel" if self.format == "savedmodel" else f"litert-{'float32' if self.quantize == 'none' else self.quantize}"

    @property
    def quantized(self) -> bool:
        return self.quantize in ("dynamic", "int8")


@dataclass
class ExportResult:
    path: Path
    report: ParityReport


def export_run(request: ExportRequest) -> ExportResult:
    from app.litert_export import QUANTIZATIONS

    if request.representative_files != DEFAULT_REPRESENTATIVE_FILES and request.quantize != "int8":
        logger.warning("--representative-files calibrates --quantize int8 only; ignored with --quantize %s.",
                       request.quantize)
    if request.format not in FORMATS:
        raise UserError(f"Unknown export format. Received: --format {request.format!r}. Choose one of {list(FORMATS)}.")
    if request.quantize not in QUANTIZATIONS:
        raise UserError(f"Unknown quantization. Received: --quantize {request.quantize!r}. Choose one of {list(QUANTIZATIONS)}.")
    if request.reject not in REJECTS:
        raise UserError(f"Unknown rejection mode. Received: --reject {request.reject!r}. "
                        f"Choose one of {list(REJECTS)}.")
    if request.reject == "none" and request.format == "litert":
        logger.warning("--reject none changes nothing with --format litert: LiteRT exports carry probabilities only.")
    if request.output is not None and not str(request.output).strip():  # a script's unset variable: --output "$OUT"
        raise UserError("--output is empty. Received: --output ''. Give the folder to create, or leave --output out for "
                        "RUN_DIR/export/<format>.")
    if request.format == "savedmodel" and request.quantize != "none":
        raise UserError(f"--quantize applies to LiteRT exports only. Received: --format savedmodel --quantize "
                        f"{request.quantize}. Use --format litert, or drop --quantize.")
    run = load_run(request.run_dir)
    if request.format == "litert" and run.modality != "image":
        raise UserError(
            "LiteRT export is for image runs only: this is a text run, and its tokenizer (keras-hub's WordPiece, "
            "tensorflow-text ops) is not a LiteRT builtin op, so the .tflite would need TensorFlow ops (the Flex "
            "delegate) that phones and microcontrollers do not have. Export it with --format savedmodel (serve it "
            "with TF Serving built with tensorflow-text ops, or load it with `import tensorflow_text`).")
    # Absolute: the SavedModel check runs in another process, in a scratch folder (a relative RUN_DIR or --output
    # would not point at the export there). Normalised: an --output ending in `..` or `.` named no new folder (its
    # staging folder `.tmp-PID-..` was built and checked, then renaming it onto `..` was an EBUSY traceback).
    given = Path(request.output).expanduser() if request.output else run.path / "export" / request.label
    output = Path(os.path.abspath(given))
    # lexists: a symbolic link to a missing path is a name in use too (the final rename onto it failed with a
    # NotADirectoryError traceback after the whole export and its check had run).
    if os.path.lexists(output):
        given = _received(output, request.output)
        dangling = "" if output.exists() else " (a symbolic link to a missing path)"
        raise UserError(f"The output path already exists{dangling}. Received: {given}. Choose a new path with "
                        "--output, or delete the old export first.")
    _check_export_path(output, request.output)
    if _drops_detector(run, request):  # said, or the phone app silently names a known class for every input
        logger.warning("--format litert: %s", _LITERT_NO_DETECTOR)
    examples, files_note = held_out_examples(run)
    representative = representative_paths(run, request.representative_files) if request.quantize == "int8" else []

    staging = _make_staging(output, request.output)
    try:
        if request.format == "savedmodel":
            report = _export_savedmodel(run, staging, examples, request)
        else:
            report = _export_litert(run, staging, examples, representative, request)
        report.files = files_note
        report.artifact = str(output if request.format == "savedmodel" else output / TFLITE_FILE)
        rd.write_json(staging / PARITY_FILE, report.to_json())
        for check in [*report.checks, *report.unknown_checks]:
            logger.info("Parity %s", check.summary())
        if not report.passed:
            failed = "; ".join(c.summary() for c in [*report.checks, *report.unknown_checks] if not c.passed)
            # The report of a refused export stays, beside where the export would have been, so the
            # numbers and the files that disagreed can be looked at; the artifact itself is removed.
            kept = failed_report_path(output)
            rd.write_json(kept, report.to_json())
            raise UserError(f"The {request.label} export failed its parity check and was not written ({failed}). "
                            f"Its report: {kept}. "
                            + ("Try a milder quantization (--quantize dynamic or float16)." if request.quantized
                               else "Please report this with the run's metadata.json."))
        try:
            os.replace(staging, output)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise UserError(f"{str(output)!r} was written by another export while this one ran (two exports to one "
                            "place at once); that one is kept. Choose another --output for this one.") from None
        # An earlier try at this path that failed its check left its report: it no longer describes what is there.
        failed_report_path(output).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(output, report)


def _received(output: Path, given: str | None) -> str:
    """How an ERROR line quotes the export's path: the --output given, or the default place."""
    # Not repr(shown_path(...)): repr doubles the backslash of each \\xNN that shown_path writes for a non-UTF-8 byte.
    shown = repr(str(output)) if is_utf8_name(output) else f"'{shown_path(output)}'"
    return f"--output {shown}" if given else f"{shown} (the default place; no --output)"


def _check_export_path(output: Path, given: str | None) -> None:
    """Refuse, before any work, an export path that TensorFlow's writers or the export's own files beside it
    cannot use: each was a traceback after the artifact had been built (and, for the report folder, after it had
    been renamed into place)."""
    received = _received(output, given)
    if not is_utf8_name(output):  # TensorFlow takes paths as UTF-8 strings only
        raise UserError(f"The export's path is not UTF-8, which TensorFlow's SavedModel and LiteRT writers cannot "
                        f"take. Received: {received}. Choose an --output PATH in UTF-8, or {RENAME_HINT}.")
    report = failed_report_path(output)
    if report.is_dir() and not report.is_symlink():
        raise UserError(f"{str(report)!r} is a folder, where the export keeps its parity report if the check "
                        f"fails (and removes an old one when it passes). Received: {received}. Move that folder "
                        "away, or choose another --output.")
    longest = max(len(name.encode("utf-8")) for name in _sibling_names(output))
    limit = _name_max(output.parent)
    if longest > limit:
        extra = longest - len(output.name.encode("utf-8"))
        raise UserError(f"The export's folder name is too long: beside it the export writes names {extra} bytes "
                        f"longer (its temporary folders, NAME.parity-failed.json), and this file system allows "
                        f"{limit}. Received: {received} ({len(output.name.encode('utf-8'))} bytes). Choose a name "
                        f"of at most {limit - extra} bytes.")


def _sibling_names(output: Path) -> list[str]:
    """Every name the export may create in output's folder: the output, its staging and scratch folders, the
    failed check's report and that report's temporary name."""
    staging = temporary_name(output).name
    report = failed_report_path(output)
    return [output.name, staging, staging + SCRATCH_SUFFIX + "x" * TEMPFILE_RANDOM_CHARACTERS, report.name,
            temporary_name(report).name]


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system under `folder`, or its nearest existing ancestor, allows."""
    existing = next((f for f in (folder, *folder.parents) if f.is_dir()), None)
    try:
        return os.pathconf(existing, "PC_NAME_MAX") if existing else 255
    except (OSError, ValueError):  # no such limit reported: Linux's usual
        return 255


def _make_staging(output: Path, given: str | None) -> Path:
    """Create `output`'s parent and the empty staging folder the export is built in, before any work: an --output
    whose parent is a file, cannot be created or is not writable is then one ERROR line in seconds (it was a
    traceback, from mkdir or from TensorFlow's writer after the SavedModel was built)."""
    staging = temporary_name(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(output)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as error:
        raise UserError(f"Cannot create the export folder: {error.strerror or error} ({error.filename or output}). "
                        f"Received: {_received(output, given)}. Choose an --output PATH whose parent is a folder you "
                        "can write to.") from None
    return staging


def remove_stale_staging(output: Path) -> None:
    """Remove what exports to `output` killed before they finished left beside it: their staging folders, scratch
    folders and half-written parity reports (`.tmp-PID-NAME...`), where process PID no longer runs
    (data.atomic_write.dead_temporaries). A live one (another export now) is left alone."""
    ours = (output.name, failed_report_path(output).name)
    for (name, _), leftover in dead_temporaries(output.parent).items():
        if name in ours or name.startswith(output.name + SCRATCH_SUFFIX):
            logger.info("Removing %s, left by an export that did not finish", leftover)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def failed_report_path(output: Path) -> Path:
    """Where the parity report of an export that failed its check is kept (the export is not written)."""
    return output.parent / f"{output.name}.parity-failed.json"


def _spec(run: LoadedRun) -> InputSpec:
    return InputSpec(run.modality, run.metadata.image_size, run.resize)


def held_out_examples(run: LoadedRun) -> tuple[list[Example], str]:
    """The run's test files from its manifest, else its validation files (labels = run class indices)."""
    manifest = read_manifest(run.path, run.metadata.data_dir)
    root = manifest.root
    chosen, split = manifest.held_out(run.class_names)
    note = f"test split of {root} from the run's manifest"
    if split == "val":
        note = f"validation split of {root} from the run's manifest (the run has no test split)"
        if run.metadata.refit_applied:
            note += "; the run refitted on train + validation, so accuracy here is optimistic, agreement is not"
    if not chosen:
        raise UserError(f"The run's manifest lists no test or validation files to check the export on "
                        f"({str(manifest.file)!r}).")
    examples = []
    for entry in chosen:
        path = root / entry.path
        check = inspect_file(str(path), run.modality)
        if not check.usable:
            raise UserError(f"The export is checked on the run's held-out files, but {str(path)!r} is unusable: "
                            f"{check.reason}. Restore the training folder {str(root)!r} as it was when the run was "
                            "trained (export where it is, or copy it along with the run).")
        examples.append(Example(str(path), run.class_names.index(entry.label), entry.split, check.sha256,
                                check.encoding))
    return examples, f"{len(examples)} files: {note}"


def representative_paths(run: LoadedRun, wanted: int) -> list[str]:
    """Up to `wanted` usable training files for int8 calibration, taken class by class in turn (balanced)."""
    manifest = read_manifest(run.path, run.metadata.data_dir)
    root = manifest.root
    by_class: dict[str, list[str]] = {}
    for entry in manifest.in_split("train"):
        if (root / entry.path).is_file():
            by_class.setdefault(entry.label, []).append(str(root / entry.path))
    available = sum(len(paths) for paths in by_class.values())
    if available < MIN_REPRESENTATIVE_FILES:
        raise UserError(
            f"int8 quantization calibrates on the run's training files, and it needs at least "
            f"{MIN_REPRESENTATIVE_FILES}; the manifest lists {available} that still exist under {str(root)!r}. "
            "Use --quantize dynamic or float16 (no calibration), or train on more files.")
    # Each one is checked now: a file that became unreadable since training failed inside the converter, whose
    # error then blamed an operation LiteRT lacks and sent the user to --format savedmodel.
    chosen, unusable = [], []
    for path in _round_robin(list(by_class.values())):
        if len(chosen) == wanted:
            break
        check = inspect_file(path, run.modality)
        if check.usable:
            chosen.append(path)
        else:
            unusable.append(f"{path!r} ({check.reason})")
    if unusable:
        logger.warning("int8 calibration leaves out %d training file(s) that can no longer be read: %s",
                       len(unusable), ", ".join(unusable[:3]) + (", ..." if len(unusable) > 3 else ""))
    if len(chosen) < min(wanted, MIN_REPRESENTATIVE_FILES):
        raise UserError(
            f"int8 quantization calibrates on the run's training files, and it needs at least "
            f"{MIN_REPRESENTATIVE_FILES}; only {len(chosen)} of the {available} under {str(root)!r} can still be "
            f"read ({unusable[0]}, ...). Restore the training folder as it was when the run was trained, or use "
            "--quantize dynamic or float16 (no calibration).")
    return chosen


def _round_robin(groups: list[list[str]]):
    """The groups' items one group at a time: the first of each, then the second of each, ..."""
    for index in range(max((len(group) for group in groups), default=0)):
        yield from (group[index] for group in groups if index < len(group))


def _reference(run: LoadedRun, examples: list[Example], batch_size: int) -> np.ndarray:
    return run.predict_examples(examples, batch_size)


def _export_savedmodel(run: LoadedRun, staging: Path, examples: list[Example], request: ExportRequest) -> ParityReport:
    from app.savedmodel_export import ServingSpec, write_savedmodel

    unknown = _unknown_serving(run) if request.reject == "auto" else None
    spec = ServingSpec.from_metadata(run.metadata, unknown)
    logger.info("Writing the SavedModel (signatures serving_default%s%s)", " and pixels" if run.modality == "image" else "",
                f"; with the unknown-class score {unknown.detector.score}" if unknown else "")
    write_savedmodel(run.model, spec, str(staging))
    reference = _reference(run, examples, request.batch_size)
    reference_scores = _reference_unknown_scores(run, unknown, examples, request.batch_size) if unknown else None
    labels, paths = [e.label for e in examples], [e.path for e in examples]
    checks, notes = [], []
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=staging.name + SCRATCH_SUFFIX) as scratch:
        request_json: dict = {"batch_size": request.batch_size}
        served = list(range(len(examples)))
        if run.modality == "text":
            from data.pipeline import read_texts

            request_json["texts"] = read_texts(paths, [e.encoding for e in examples])
        else:
            served = [i for i, p in enumerate(paths) if graph_decodable(Path(p).read_bytes()) is not None]
            if len(served) < len(paths):
                notes.append(f"{len(paths) - len(served)} of {len(paths)} held-out file(s) are WebP/TIFF, which the "
                             "graph cannot decode: checked through the pixels signature only")
            # Absolute: the probe process runs in the scratch folder, and runs trained before data folders were
            # recorded as absolute paths hold theirs relative to the folder they were trained (and exported) from.
            request_json["files"] = [str(Path(paths[i]).absolute()) for i in served]
            pixels_file = Path(scratch) / "pixels.npy"
            np.save(pixels_file, np.stack([load_image(p, spec.image_size, spec.resize) for p in paths]))
            request_json["pixels"] = str(pixels_file)
        result = _probe(staging, request_json, Path(scratch))
    what = "texts" if run.modality == "text" else "file bytes"
    # No held-out file the graph decodes (all WebP/TIFF): a check on 0 files would say "passed" about nothing (and
    # the empty result's shape was a ValueError traceback); the pixels signature's check below still runs.
    if served:
        checks.append(compare(f"serving_default ({what}, fresh process without metatune or Keras)", reference[served],
                              result["probabilities"], [labels[i] for i in served], [paths[i] for i in served], False))
    top_class = [run.class_names[i] for i in result["probabilities"].argmax(axis=1)]
    if list(result["top_class"]) != top_class:
        raise UserError("The SavedModel's top_class output does not name the class of its highest probability; "
                        "the export is broken. Please report this.")
    if "pixels_probabilities" in result:
        checks.append(compare("pixels (uint8 [batch, H, W, 3])", reference, result["pixels_probabilities"],
                              labels, paths, False))
    unknown_checks = []
    if unknown:
        score, threshold = unknown.detector.score, unknown.detector.threshold
        if served:
            unknown_checks.append(compare_unknown(f"serving_default ({what})", score, threshold,
                                                  reference_scores[served], result["unknown_score"],
                                                  [paths[i] for i in served]))
        if "pixels_unknown_score" in result:
            unknown_checks.append(compare_unknown("pixels (uint8 [batch, H, W, 3])", score, threshold, reference_scores,
                                                  result["pixels_unknown_score"], paths))
        signatures = "serving_default also returns" if run.modality == "text" else "Both signatures also return"
        notes.append(f"{signatures} unknown_score and unknown (score above {threshold:.6g}: a class "
                     f"the run does not know; score {score!r}, as predict.py rejects)." if np.isfinite(threshold) else
                     f"{signatures} unknown_score (score {score!r}) and unknown, always false: the run "
                     "had too few validation files to set a threshold, and predict.py rejects nothing either.")
    elif request.reject == "none":
        notes.append("Exported with --reject none: no unknown_score or unknown outputs; every input gets one of the "
                     "run's classes, as predict.py --reject none.")
    notes.append("Text SavedModels need tensorflow-text's kernels where they are served (`import tensorflow_text`)."
                 if run.modality == "text" else
                 "serving_default decodes JPEG, PNG, GIF and BMP files in the graph, pixel-identical to training.")
    inputs = ({"serving_default": {"inputs": "tf.string [batch] (raw texts)"}} if run.modality == "text" else
              {"serving_default": {"inputs": "tf.string [batch] (encoded JPEG, PNG, GIF or BMP files)"},
               "pixels": {"pixels": f"uint8 [batch, {spec.image_size[0]}, {spec.image_size[1]}, 3] "
                                    f"(resized '{spec.resize}' as in training)"}})
    return ParityReport("savedmodel", "none", "", str(run.path), run.class_names, inputs, "", checks, notes,
                        unknown_checks, run.metadata.class_digest)


_LITERT_NO_DETECTOR = ("model.tflite carries probabilities only, not the run's unknown-class detector (unknown.json): "
                       "it names one of the run's classes for every input, where predict.py and a SavedModel export "
                       "reject files of classes the run does not know. Export --format savedmodel to serve rejection.")


def _drops_detector(run: LoadedRun, request: ExportRequest) -> bool:
    """A LiteRT export (--reject auto) of a run that has an unknown-class detector: the .tflite cannot reject."""
    from app.unknown_store import DETECTOR_FILE

    return request.format == "litert" and request.reject == "auto" and (run.path / DETECTOR_FILE).is_file()


def _unknown_serving(run: LoadedRun):
    """The run's unknown-class detector for the export, or None (a run trained by an older metatune)."""
    from app.unknown_graph import UnknownServing
    from app.open_set import head_weights
    from app.unknown_store import load_detector

    stored = load_detector(run.path, head_weights(run.model)[0].shape)
    if stored is None:
        logger.info("%s has no unknown-class detector (trained by an older metatune): the export does not reject.",
                    run.path)
        return None
    return UnknownServing(*stored)


def _reference_unknown_scores(run: LoadedRun, unknown, examples: list[Example], batch_size: int) -> np.ndarray:
    """What predict.py scores for these files: model.keras's embedding through the numpy detector."""
    from app.open_set import embed_examples

    embeddings, _ = embed_examples(run, examples, batch_size=batch_size)
    return unknown.scorer.score(unknown.detector.score, embeddings)


def _probe(savedmodel: Path, request_json: dict, scratch: Path) -> dict:
    """Run the SavedModel in a fresh Python that imports TensorFlow only (app/savedmodel_probe.py)."""
    request_path, result_path = scratch / "request.json", scratch / "result.npz"
    request_path.write_text(json.dumps(request_json), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"METATUNE_PROBE_PARENT": str(os.getpid())}
    completed = subprocess.run([sys.executable, str(PROBE_SCRIPT), str(savedmodel), str(request_path), str(result_path)],
                               capture_output=True, text=True, env=env, cwd=scratch)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"The exported SavedModel does not run in a plain TensorFlow process ({last[:300]}); "
                        "the export was not written. Please report this.")
    with np.load(result_path) as result:
        return {key: result[key] for key in result.files}


def _export_litert(run: LoadedRun, staging: Path, examples: list[Example], representative: list[str],
                   request: ExportRequest) -> ParityReport:
    from app.litert_export import LiteRTClassifier, convert_to_litert
    from app.savedmodel_export import write_pixels_savedmodel

    spec = _spec(run)
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=staging.name + SCRATCH_SUFFIX) as scratch:
        write_pixels_savedmodel(run.model, spec.image_size, scratch + "/pixels")
        logger.info("Converting to LiteRT (%s)%s", request.label,
                    f", calibrating on {len(representative)} training files" if representative else "")

        def images():
            for path in representative:
                yield load_image(path, spec.image_size, spec.resize)

        try:
            blob = convert_to_litert(scratch + "/pixels", request.quantize, images if representative else None)
        except Exception as error:  # the converter raises ConverterError and friends with long logs
            raise UserError(f"LiteRT conversion failed with builtin ops only ({type(error).__name__}: "
                            f"{str(error).strip().splitlines()[-1][:300]}). The model uses an operation LiteRT "
                            "has no builtin kernel for; export --format savedmodel instead.") from None
    (staging / TFLITE_FILE).write_bytes(blob)
    # One line per class: a class folder's name may hold a newline (or a tab, a name's non-UTF-8 bytes), which split
    # its line in two and shifted every later label by one. Such characters are written as Python escapes, as
    # predict.py prints them.
    (staging / LABELS_FILE).write_text("".join(visible(name) + "\n" for name in run.class_names), encoding="utf-8")
    model = LiteRTClassifier(str(staging / TFLITE_FILE))
    reference = _reference(run, examples, request.batch_size)
    candidate = np.concatenate([
        model.predict(np.stack([load_image(e.path, spec.image_size, spec.resize)
                                for e in examples[start:start + request.batch_size]]))
        for start in range(0, len(examples), request.batch_size)])
    check = compare(f"{TFLITE_FILE} (uint8 pixels, {'ai-edge-litert' if _litert_installed() else 'tf.lite'} interpreter)",
                    reference, candidate, [e.label for e in examples], [e.path for e in examples], request.quantized)
    inputs = {"input": f"uint8 [batch, {spec.image_size[0]}, {spec.image_size[1]}, 3], decoded and resized "
                       f"'{spec.resize}' as in training (Pillow BILINEAR)",
              "output": "float32 probabilities [batch, classes], classes in labels.txt order"}
    notes = [f"{len(representative)} training files calibrated the int8 ranges"] if representative else []
    if _drops_detector(run, request):
        notes.append(_LITERT_NO_DETECTOR)
    return ParityReport("litert", request.quantize, "", str(run.path), run.class_names, inputs, "", [check], notes,
                        class_digest=run.metadata.class_digest)


def _litert_installed() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True

