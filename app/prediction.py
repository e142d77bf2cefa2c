"""Predict classes for files and folders with a saved run."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.errors import UserError
from app.evaluation import load_run
from app.explanations import (explain_folder, read_again_error, refuse_input_folder, text_attributor,
                              write_overlays, write_text_attributions)
from app.open_set import embed_examples, embedding_model, head_weights
from app.unknown_scores import percent
from app.unknown_store import load_detector
from app.input_files import collect_inputs
from app.run_metadata import LoadedRun
from data.images import IMAGE_EXTENSIONS
from data.records import Example, SkippedFile
from data.scan import TEXT_EXTENSIONS, with_article
from data.text import INVISIBLE_ONLY, holds_words, inspect_text_bytes

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]]
    unknown: bool | None = None  # None: no rejection (--reject none, or a run without a detector)
    unknown_score: float | None = None


TEXT_NAME_CHARS = 60


def _decoded_argument(text: str, number: int, count: int) -> str:
    """A --text string as the words it holds. Python hands over bytes that are not UTF-8 (a Latin-1 terminal, a
    variable read from a cp1252 file) as lone surrogates, which TensorFlow cannot take (a traceback): they are
    decoded as a text file's would be (data/text.py), or refused."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
    inspection = inspect_text_bytes(raw)
    if not inspection.usable:
        raise UserError(f"--text number {number} of {count} is not UTF-8 text: {inspection.reason}. Received: "
                        f"{raw!r}. Pass it in UTF-8 (or put it in a .txt file).")
    logger.warning("--text number %d of %d: %s.", number, count, "; ".join(inspection.notes))
    return raw.decode(inspection.encoding)


def text_name(text: str) -> str:
    """How a --text string is named in predict.py's output: its first TEXT_NAME_CHARS characters, with "…" when it
    goes on (cut without a mark, a long text's name read as the whole text)."""
    return f"text: {text[:TEXT_NAME_CHARS]}{'…' if len(text) > TEXT_NAME_CHARS else ''}"


# Inputs predicted at a time: predict.py prints each group's lines as soon as they are known (the first after
# seconds, not after the whole folder), and the embeddings the unknown-class score needs (8 kB per input for a
# 2048-wide one) are held for one group only. Probabilities, a few numbers per input, are kept for all.
CHUNK_INPUTS = 512


@dataclass
class PredictionJob:
    """What predict.py checked and loaded before the first prediction (`prepare_prediction`): every error about
    the inputs, the run or --explain comes before any output."""
    run: LoadedRun
    examples: list[Example]  # the readable files, in the order given
    texts: list[str]  # --text strings
    skipped: list[SkippedFile]
    top_k: int
    batch_size: int
    detector: tuple | None  # (scorer, settings) of the run's unknown-class detector; None: no rejection
    explain: str | None
    attributor: object | None = None  # text runs with --explain: the token attribution, built once when checked

    @property
    def names(self) -> list[str]:
        return [e.path for e in self.examples] + [text_name(t) for t in self.texts]


def _no_readable_inputs(modality: str, skipped: list[SkippedFile]) -> str:
    """The error when nothing given can be predicted: what to pass instead, above all when every input is of the other
    kind (images given to a text run, or .txt files to an image run), which the line did not say."""
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS if modality == "image" else TEXT_EXTENSIONS))
    or_text = ", or --text STRING" if modality == "text" else ""
    other_kind = f"not {with_article(modality)} file (extension"
    line = f"No readable {modality} files among the inputs ({len(skipped)} skipped; see the warnings above)"
    if skipped and all(item.reason.startswith(other_kind) for item in skipped):
        return (f"{line}: this run is {with_article(modality)} model and every input is another kind of file. Pass "
                f"{modality} files ({extensions}){or_text}; predict those files with a run trained on their kind.")
    return f"{line}. Pass {modality} files ({extensions}) that exist and are readable{or_text}."


def prepare_prediction(run_dir: str, targets: list[str], top_k: int = 3, batch_size: int = 32,
                       texts: list[str] | None = None, reject: str = "auto",
                       explain: str | None = None) -> PredictionJob:
    """Check the inputs, load the run and its detector (`predict` says what the arguments mean)."""
    texts = [_decoded_argument(text, i + 1, len(texts)) for i, text in enumerate(texts or [])]
    blank = [i + 1 for i, text in enumerate(texts) if not holds_words(text)]
    if blank:  # as an empty or whitespace-only file is unusable: there is nothing to classify
        first = texts[blank[0] - 1]
        what = "is empty or whitespace only" if not first.strip() else f"holds {INVISIBLE_ONLY}"
        raise UserError(f"--text needs words to classify; text number {', '.join(map(str, blank))} of "
                        f"{len(texts)} {what}. Received: {first!r}")
    if not targets and not texts:
        raise UserError("Give at least one file or folder to predict (or --text STRING for a text model). Received: "
                        "no file, no folder and no --text.")
    run = load_run(run_dir)
    if texts and run.modality != "text":
        raise UserError(f"--text needs a text model; this run is an {run.modality} model. Pass image files instead.")
    examples, skipped = collect_inputs(targets, run.modality)
    if not examples and not texts:
        raise UserError(_no_readable_inputs(run.modality, skipped))
    attributor = None
    if explain is not None:  # before the prediction pass: refused in seconds, and before any line is printed
        refuse_input_folder(explain, targets)
        explain_folder(explain)
        if run.modality == "text":
            attributor = text_attributor(run, explain)
    detector = load_detector(run.path, head_weights(run.model)[0].shape) if reject == "auto" else None
    if reject == "auto" and detector is None:
        logger.info("%s has no unknown-class detector (trained by an older metatune): no rejection.", run.path)
    elif detector is not None and math.isinf(detector[1].threshold):
        logger.warning("%s's unknown-class detector rejects nothing: the run had too few validation files to set a "
                       "threshold that keeps %s%% of known files (its training log says how many it needs).",
                       run.path, percent(detector[1].reject_recall))
    return PredictionJob(run, examples, texts, skipped, max(1, min(top_k, len(run.class_names))), batch_size,
                         detector, explain, attributor)


def predictions_in_chunks(job: PredictionJob) -> Iterator[tuple[list[Prediction], np.ndarray]]:
    """(predictions, their probabilities) for CHUNK_INPUTS inputs at a time, files first, then --text strings,
    in the order given."""
    embedder = embedding_model(job.run.model) if job.detector is not None else None
    names = job.names
    groups = [(start, job.examples[start:start + CHUNK_INPUTS], [])
              for start in range(0, len(job.examples), CHUNK_INPUTS)]
    groups += [(len(job.examples) + start, [], job.texts[start:start + CHUNK_INPUTS])
               for start in range(0, len(job.texts), CHUNK_INPUTS)]
    for start, examples, texts in groups:
        probabilities, scores, rejected = _probabilities(job, examples, texts, embedder)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :job.top_k]
        yield [Prediction(names[start + i], [(job.run.class_names[j], float(probabilities[i, j])) for j in order[i]],
                          None if rejected is None else bool(rejected[i]), None if scores is None else float(scores[i]))
               for i in range(len(probabilities))], probabilities


def _probabilities(job: PredictionJob, examples, texts, embedder):
    """(probabilities, unknown scores, rejected) of one group of inputs; the last two None without a detector."""
    if job.detector is not None:
        scorer, settings = job.detector
        embeddings, probabilities = embed_examples(job.run, examples, texts, job.batch_size, embedder)
        scores = scorer.score(settings.score, embeddings)
        return probabilities, scores, scores > settings.threshold
    if examples:
        return job.run.predict_examples(examples, job.batch_size), None, None
    return job.run.predict_texts(texts, job.batch_size), None, None


def _text_read_again(example: Example) -> str:
    """A text file's words for its explanation, read after its prediction (read_again_error when it cannot be:
    deleted, or rewritten in another encoding, in between)."""
    from data.pipeline import read_texts

    try:
        return read_texts([example.path], [example.encoding])[0]
    except (OSError, UnicodeDecodeError) as error:
        raise read_again_error(example.path, error) from None


def write_explanations(job: PredictionJob, probabilities: np.ndarray, unknown: list | None = None) -> None:
    """--explain's files for every input (`probabilities`: all of them, in order; `unknown`: each prediction's
    `unknown`, to say so in a text's file)."""
    run, examples = job.run, job.examples
    if run.modality == "text":
        contents = [_text_read_again(example) for example in examples] + list(job.texts)
        write_text_attributions(run, job.names, contents, probabilities, job.explain, job.attributor, unknown)
    else:
        write_overlays(run, [e.path for e in examples], probabilities[:len(examples)].argmax(axis=1), job.explain)


def predict(run_dir: str, targets: list[str], top_k: int = 3, batch_size: int = 32,
            texts: list[str] | None = None, reject: str = "auto",
            explain: str | None = None) -> tuple[list[Prediction], list[SkippedFile]]:
    """Top-k classes for files/folders (and, for text runs, literal strings given as `texts`), all at once
    (predict.py prints them as they come: `prepare_prediction`, `predictions_in_chunks`).

    reject "auto": each prediction also says whether the run's unknown-class detector rejects
    it (a class the run does not know); "none": no rejection. `explain`: a folder for one Grad-CAM
    overlay per file (image runs) or one Markdown file of token attributions per file and string
    (text runs), for its top class."""
    job = prepare_prediction(run_dir, targets, top_k, batch_size, texts, reject, explain)
    chunks = list(predictions_in_chunks(job))
    predictions = [p for chunk, _ in chunks for p in chunk]
    if explain is not None:
        write_explanations(job, np.concatenate([probabilities for _, probabilities in chunks]),
                           [p.unknown for p in predictions])
    return predictions, job.skipped
