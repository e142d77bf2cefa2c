"""Predict classes for files and folders with a saved run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from app.errors import UserError
from app.evaluation import load_run
from app.explanations import explain_folder, write_overlays, write_text_attributions
from app.open_set import embed_examples, head_weights
from app.unknown_store import load_detector
from app.input_files import collect_inputs
from data.records import SkippedFile
from data.text import inspect_text_bytes

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


def predict(run_dir: str, targets: list[str], top_k: int = 3, batch_size: int = 32,
            texts: list[str] | None = None, reject: str = "auto",
            explain: str | None = None) -> tuple[list[Prediction], list[SkippedFile]]:
    """Top-k classes for files/folders (and, for text runs, literal strings given as `texts`).

    reject "auto": each prediction also says whether the run's unknown-class detector rejects
    it (a class the run does not know); "none": no rejection. `explain`: a folder for one Grad-CAM
    overlay per file (image runs) or one Markdown file of token attributions per file and string
    (text runs), for its top class."""
    texts = [_decoded_argument(text, i + 1, len(texts)) for i, text in enumerate(texts or [])]
    blank = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if blank:  # as an empty or whitespace-only file is unusable: there is nothing to classify
        raise UserError(f"--text needs words to classify; text number {', '.join(map(str, blank))} of "
                        f"{len(texts)} is empty or whitespace only. Received: {texts[blank[0] - 1]!r}")
    if not targets and not texts:
        raise UserError("Give at least one file or folder to predict (or --text STRING for a text model).")
    run = load_run(run_dir)
    if texts and run.modality != "text":
        raise UserError(f"--text needs a text model; this run is an {run.modality} model. Pass image files instead.")
    examples, skipped = collect_inputs(targets, run.modality)
    if not examples and not texts:
        raise UserError(f"No readable {run.modality} files among the inputs ({len(skipped)} skipped; see the warnings above).")
    if explain is not None:
        explain_folder(explain)  # before the prediction pass: an unwritable folder is refused in seconds
    names = [e.path for e in examples] + [text_name(t) for t in texts]
    detector = load_detector(run.path, head_weights(run.model)[0].shape) if reject == "auto" else None
    if reject == "auto" and detector is None:
        logger.info("%s has no unknown-class detector (trained by an older metatune): no rejection.", run.path)
    if detector is not None:
        scorer, settings = detector
        embeddings, probabilities = embed_examples(run, examples, texts, batch_size)
        scores = scorer.score(settings.score, embeddings)
        rejected = scores > settings.threshold
    else:
        parts = []
        if examples:
            parts.append(run.predict_examples(examples, batch_size))
        if texts:
            parts.append(run.predict_texts(texts, batch_size))
        probabilities, scores, rejected = np.concatenate(parts, axis=0), None, None
    k = max(1, min(top_k, len(run.class_names)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    predictions = [
        Prediction(name, [(run.class_names[j], float(probabilities[i, j])) for j in order[i]],
                   None if rejected is None else bool(rejected[i]), None if scores is None else float(scores[i]))
        for i, name in enumerate(names)
    ]
    if explain is not None and run.modality == "text":
        from data.pipeline import read_texts

        contents = list(read_texts([e.path for e in examples], [e.encoding for e in examples])) + list(texts)
        write_text_attributions(run, names, contents, probabilities, explain)
    elif explain is not None:
        write_overlays(run, [e.path for e in examples], probabilities[:len(examples)].argmax(axis=1), explain)
    return predictions, skipped
