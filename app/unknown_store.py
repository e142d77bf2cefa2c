"""The unknown-class detector in a run directory: `unknown.json` + `unknown.npz`.

unknown.json: {score, threshold, reject_recall, fitted_on, selection}. unknown.npz (numpy only,
no pickles): kernel [dim, classes], bias [classes], centroids [classes, dim], means [classes, dim],
whitening [dim, dim], bank [n, dim], background_mean [dim] and background_whitening [dim, dim]
(relative_mahalanobis; absent from detectors saved before it), standardise_names [m], standardise [m, 2]. All of them
live in the space of the model's embedding, the input of its `head_dense` layer: a consumer runs
the model up to that layer, computes the score as app/unknown_scores.py does, and reports
"unknown" when it exceeds `threshold`. A `threshold` of null rejects nothing: the run had too few validation
files to set one that keeps `reject_recall` of known files (app/unknown_scores.detector_threshold). Both files
are written atomically.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.errors import UserError
from app.unknown_scores import SCORES, UnknownScorer
from app.unknown_selection import UnknownDetector
from data.atomic_write import write_atomically

DETECTOR_FILE = "unknown.json"
ARRAYS_FILE = "unknown.npz"
_MEANWHILE = "(predict.py --reject none predicts, and export.py --reject none exports, without rejection meanwhile)"
_ARRAYS = [f.name for f in fields(UnknownScorer) if f.name != "standardise"]


def save_detector(run_dir: Path, scorer: UnknownScorer, detector: UnknownDetector) -> None:
    names = sorted(scorer.standardise)
    arrays = {name: getattr(scorer, name) for name in _ARRAYS if getattr(scorer, name) is not None}
    arrays["standardise_names"] = np.asarray(names, dtype=str)
    arrays["standardise"] = np.asarray([scorer.standardise[n] for n in names], np.float64).reshape(-1, 2)
    write_atomically(Path(run_dir) / ARRAYS_FILE, lambda temporary: np.savez(temporary, **arrays))
    rd.write_json(Path(run_dir) / DETECTOR_FILE, detector.to_dict())  # last: its presence means both are whole


def load_detector(run_dir: Path, head_shape: tuple[int, int] | None = None) -> tuple[UnknownScorer, UnknownDetector] | None:
    """The run's detector, or None for a run trained without one (an older metatune, whose metadata.json
    names no detector). A detector the metadata names that is missing or damaged is a UserError: serving
    without the rejection the run was trained with must not happen silently. `head_shape`: the model's
    head_dense kernel shape (embedding size, classes), which the stored arrays must fit."""
    run_dir = Path(run_dir)
    path = run_dir / DETECTOR_FILE
    if not path.is_file():
        # Not "trained without one" (no rejection, silently) when the whole run went after it was opened.
        rd.require_still_there(run_dir)
        if _recorded(run_dir):
            raise UserError(f"{str(run_dir)!r} is a damaged run directory: {DETECTOR_FILE} (its unknown-class "
                            f"detector, named in {rd.METADATA_FILE}) is missing. {rd.retrain_remedy(run_dir)} "
                            f"{_MEANWHILE}")
        return None
    try:
        detector = UnknownDetector(**rd.read_json(path, rd.retrain_remedy(run_dir)))
    except TypeError as error:  # keys of another shape
        raise _damaged(run_dir, DETECTOR_FILE, f"unexpected content: {error}") from None
    if detector.score not in SCORES:
        raise UserError(f"{str(path)!r} names an unknown-class score this metatune does not know. "
                        f"Received: score={detector.score!r}; known: {list(SCORES)}")
    if detector.threshold is None:  # null: too few validation files to set one (unknown_scores.detector_threshold)
        detector.threshold = math.inf
    # A threshold that is not a number (hand-edited, another tool's file) failed only at the comparison with
    # the scores, after the prediction pass, as a numpy/TypeError traceback.
    for key in ("threshold", "reject_recall"):
        value = getattr(detector, key)
        rejects_nothing = key == "threshold" and value == math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (rejects_nothing or np.isfinite(value)):
            raise _damaged(run_dir, DETECTOR_FILE, f"unexpected content: {key} must be a finite number"
                                                   f"{' or null' if key == 'threshold' else ''}, received {value!r}")
    # reject_recall outside (0, 1), which train.py never writes, was reported by evaluate.py --unknown as a
    # threshold that "keeps 700% of known validation files".
    if not 0.0 < detector.reject_recall < 1.0:
        raise _damaged(run_dir, DETECTOR_FILE, f"unexpected content: reject_recall must be in (0, 1), received "
                                               f"{detector.reject_recall!r}")
    try:
        with np.load(run_dir / ARRAYS_FILE, allow_pickle=False) as stored:
            # Arrays a later score added are missing from older files: that score is then unavailable (None).
            scorer = UnknownScorer(**{name: stored[name] for name in _ARRAYS if name in stored.files})
            scorer.standardise = {str(n): (float(m), float(s))
                                  for n, (m, s) in zip(stored["standardise_names"], stored["standardise"])}
    except FileNotFoundError:
        raise _damaged(run_dir, ARRAYS_FILE, "missing") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # truncated or overwritten
        # numpy takes bytes that are no .npz for a pickle; its advice, to load it unsafely, is no remedy.
        if "allow_pickle" in str(error):
            raise _damaged(run_dir, ARRAYS_FILE, "unreadable: not a NumPy .npz archive") from None
        raise _damaged(run_dir, ARRAYS_FILE, f"unreadable: {type(error).__name__}: {error}") from None
    except TypeError as error:  # an array every detector has is missing: the constructor lacks an argument
        raise _damaged(run_dir, ARRAYS_FILE, f"incomplete: {error}") from None
    shape = _shape_mismatch(scorer, head_shape)
    mismatch = f"of another shape than the model: {shape}" if shape else _not_finite(scorer)
    if mismatch:  # another run's file, or a damaged one: scoring would be a numpy traceback, or NaN scores
        raise _damaged(run_dir, ARRAYS_FILE, mismatch)
    if not scorer.available(detector.score):  # its score needs arrays or a standardisation the file lacks
        raise _damaged(run_dir, ARRAYS_FILE, f"incomplete: {detector.score} cannot be computed from it (stored "
                                             f"standardisations: {sorted(scorer.standardise)})")
    return scorer, detector


def _not_finite(scorer: UnknownScorer) -> str | None:
    """A NaN or infinite value in the stored arrays (every score would be NaN: every file accepted, and NaN in
    predict.py's JSON), or a standardisation that cannot divide; None when all are finite."""
    for name in _ARRAYS:
        value = getattr(scorer, name)
        if value is not None and not np.all(np.isfinite(np.asarray(value, np.float64))):
            return f"damaged: {name} holds values that are not finite numbers (NaN or infinite)"
    for name, (mean, std) in scorer.standardise.items():
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            return f"damaged: the standardisation of {name} is not a finite mean and positive spread ({mean}, {std})"
    return None


def _shape_mismatch(scorer: UnknownScorer, head_shape: tuple[int, int] | None) -> str | None:
    """What in the stored arrays does not fit the model's head (or each other); None when all fit."""
    kernel = np.asarray(scorer.kernel)
    if kernel.ndim != 2:
        return f"kernel has shape {kernel.shape}, not [embedding size, classes]"
    dim, classes = head_shape or kernel.shape
    if kernel.shape != (dim, classes):
        return f"kernel has shape {kernel.shape}, the model's head {(dim, classes)}"
    expected = {"bias": (classes,), "centroids": (classes, dim), "means": (classes, dim),
                "background_mean": (dim,)}
    for name, shape in expected.items():
        value = getattr(scorer, name)
        if value is not None and np.shape(value) != shape:
            return f"{name} has shape {np.shape(value)}, expected {shape}"
    for name in ("whitening", "background_whitening"):  # [dim, rank]
        value = getattr(scorer, name)
        if value is not None and (np.ndim(value) != 2 or np.shape(value)[0] != dim):
            return f"{name} has shape {np.shape(value)}, expected ({dim}, rank)"
    if np.ndim(scorer.bank) != 2 or np.shape(scorer.bank)[1] != dim:
        return f"bank has shape {np.shape(scorer.bank)}, expected (files, {dim})"
    return None


def _recorded(run_dir: Path) -> bool:
    """Whether metadata.json says the run saved a detector (read loosely: its own checks come elsewhere)."""
    try:
        return bool(rd.read_json(run_dir / rd.METADATA_FILE).get("unknown"))
    except (UserError, AttributeError):
        return False


def _damaged(run_dir: Path, name: str, what: str) -> UserError:
    return UserError(f"{str(run_dir)!r} is a damaged run directory: {name} (its unknown-class detector) is "
                     f"{what[:200]}. {rd.retrain_remedy(run_dir)} {_MEANWHILE}")
