"""The unknown-class detector in a run directory: `unknown.json` + `unknown.npz`.

unknown.json: {score, threshold, reject_recall, fitted_on, selection}. unknown.npz (numpy only,
no pickles): kernel [dim, classes], bias [classes], centroids [classes, dim], means [classes, dim],
whitening [dim, dim], bank [n, dim], background_mean [dim] and background_whitening [dim, dim]
(relative_mahalanobis; absent from detectors saved before it), standardise_names [m], standardise [m, 2]. All of them
live in the space of the model's embedding, the input of its `head_dense` layer: a consumer runs
the model up to that layer, computes the score as app/unknown_scores.py does, and reports
"unknown" when it exceeds `threshold`. Both files are written atomically.
"""

from __future__ import annotations

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
_ARRAYS = [f.name for f in fields(UnknownScorer) if f.name != "standardise"]


def save_detector(run_dir: Path, scorer: UnknownScorer, detector: UnknownDetector) -> None:
    names = sorted(scorer.standardise)
    arrays = {name: getattr(scorer, name) for name in _ARRAYS if getattr(scorer, name) is not None}
    arrays["standardise_names"] = np.asarray(names, dtype=str)
    arrays["standardise"] = np.asarray([scorer.standardise[n] for n in names], np.float64).reshape(-1, 2)
    write_atomically(Path(run_dir) / ARRAYS_FILE, lambda temporary: np.savez(temporary, **arrays))
    rd.write_json(Path(run_dir) / DETECTOR_FILE, detector.to_dict())  # last: its presence means both are whole


def load_detector(run_dir: Path) -> tuple[UnknownScorer, UnknownDetector] | None:
    """The run's detector, or None for a run trained without one (an older metatune)."""
    path = Path(run_dir) / DETECTOR_FILE
    if not path.is_file():
        return None
    detector = UnknownDetector(**rd.read_json(path))
    if detector.score not in SCORES:
        raise UserError(f"{str(path)!r} names an unknown-class score this metatune does not know. "
                        f"Received: score={detector.score!r}; known: {list(SCORES)}")
    with np.load(Path(run_dir) / ARRAYS_FILE, allow_pickle=False) as stored:
        # Arrays a later score added are missing from older files: that score is then unavailable (None).
        scorer = UnknownScorer(**{name: stored[name] for name in _ARRAYS if name in stored.files})
        scorer.standardise = {str(n): (float(m), float(s))
                              for n, (m, s) in zip(stored["standardise_names"], stored["standardise"])}
    return scorer, detector
