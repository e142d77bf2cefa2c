"""metadata.json: what a finished run says about itself, written and read in this one module.

Training writes a `RunMetadata`; evaluation, prediction, export and `--backbone RUN_DIR` read
it back as the same type (`LoadedRun.metadata`), so a field is named in one place instead
of as a string key at every reader.

Runs written by earlier versions load: only `class_names`, `modality` and `input_spec` are
required (evaluation cannot run without them); any other field may be missing and gets its
default. Keys this version does not know (a newer metatune's) are kept in `extra` and
written back unchanged. A file that is not a JSON object, or whose fields have the wrong
types, is refused with one UserError naming the file and the value received.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app import run_dir as rd
from app.errors import UserError
from app.inputs import example_dataset
from data.pipeline import text_dataset
from data.records import Example
from data.resize import RESIZE_MODES

FORMAT_VERSION = 1
MODALITIES = ("image", "text")


@dataclass
class RunMetadata:
    """The fields of metadata.json, in the order they are written."""

    class_names: list[str]
    modality: str  # "image" or "text"
    input_spec: dict  # app/backbone_choice.py::input_spec: what model.keras takes
    backbone: str | None = None
    weights: str | None = None
    backbone_run: dict | None = None  # --backbone RUN_DIR: where the backbone came from
    strategy: str | None = None
    class_digest: str | None = None  # ties the class list to model.keras (app/run_integrity.py); older runs lack it
    metrics: dict = field(default_factory=dict)  # val_accuracy, val_loss, epochs_trained, wall_time_s (all sessions;
    # a resumed run adds wall_time_this_session_s and wall_time_earlier_sessions_s)
    calibration: dict = field(default_factory=dict)  # temperature, fitted_on
    precision: str | None = None
    distribute: dict | None = None  # app/distribution.py's DistributeInfo: strategy, replicas, workers; older runs lack it
    meta: dict | None = None  # meta strategies: episodes, inner loop, source stage, episode learner
    refit: dict = field(default_factory=dict)  # applied, reason (app/refit.py)
    unknown: dict | None = None  # the unknown-class detector: score, threshold, reject_recall, file
    resumed: bool = False
    data_dir: str | None = None
    manifest_sha256: str | None = None
    seed: int | None = None
    versions: dict = field(default_factory=dict)
    created: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # keys this version does not know: kept, written back, never read

    @property
    def input_size(self) -> int:
        """The image side or the sequence length model.keras takes."""
        spec = self.input_spec
        return int(spec["image_size"][0]) if self.modality == "image" else int(spec["sequence_length"])

    @property
    def image_size(self) -> tuple[int, int] | None:
        return tuple(self.input_spec["image_size"]) if self.modality == "image" else None

    @property
    def resize(self) -> str:
        return self.input_spec.get("resize", "stretch")

    @property
    def temperature(self) -> float | None:
        """The calibration temperature fitted at training time (None in runs older than calibration)."""
        return self.calibration.get("temperature")

    @property
    def refit_applied(self) -> bool:
        return bool(self.refit.get("applied"))

    def to_dict(self) -> dict:
        """The JSON object, in the order written; optional sections a run does not have are left out."""
        written = {"format_version": self.format_version}
        for item in dataclasses.fields(self):
            if item.name in ("format_version", "extra"):
                continue
            value = getattr(self, item.name)
            if item.name in _OMITTED_WHEN_NONE and value is None:
                continue
            written[item.name] = value
        return written | self.extra

    @classmethod
    def from_dict(cls, data, source: str = "metadata.json") -> "RunMetadata":
        """The metadata in `data` (a parsed metadata.json); UserError naming `source` when it is unusable."""
        if problem := _problem(data):
            raise UserError(f"{source!r} is damaged: {problem}.")
        known = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        return cls(**{key: value for key, value in data.items() if key in known},
                   extra={key: value for key, value in data.items() if key not in known})

    @classmethod
    def read(cls, run_dir: Path) -> "RunMetadata":
        """The run's metadata.json, checked; one UserError naming the file when missing or damaged."""
        path = Path(run_dir) / rd.METADATA_FILE
        data = rd.read_json(path, rd.retrain_remedy(Path(run_dir)))
        try:
            return cls.from_dict(data, str(path))
        except UserError as error:
            raise UserError(f"{error} {rd.retrain_remedy(Path(run_dir))}") from None

    def write(self, run_dir: Path) -> None:
        rd.write_json(Path(run_dir) / rd.METADATA_FILE, self.to_dict())  # atomic (data/atomic_write.py)


_OMITTED_WHEN_NONE = ("backbone_run", "meta", "distribute")  # present only in runs that have them

# The types a present field must have (None is accepted for the optional ones).
_TYPES = {"input_spec": dict, "backbone": str, "weights": str, "backbone_run": dict, "strategy": str,
          "class_digest": str, "metrics": dict, "calibration": dict, "precision": str, "distribute": dict, "meta": dict, "refit": dict,
          "unknown": dict, "resumed": bool, "data_dir": str, "manifest_sha256": str, "seed": int, "versions": dict,
          "created": str, "format_version": int}
_REQUIRED = ("class_names", "modality", "input_spec")


def _problem(data) -> str | None:
    """What makes `data` unusable as metadata, or None."""
    if not isinstance(data, dict):
        return f"it holds {type(data).__name__}, not an object"
    names = data.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        return f"class_names must be a list of 2+ names. Received: {names!r:.200}"
    if len(set(names)) != len(names):
        return f"class_names repeats a name. Received: {names!r:.200}"
    if data.get("modality") not in MODALITIES:
        return f"modality must be one of {list(MODALITIES)}. Received: {data.get('modality')!r}"
    for key, kind in _TYPES.items():
        value = data.get(key)
        if (value is not None or key in _REQUIRED) and not isinstance(value, kind):
            return f"{key} must be {'an object' if kind is dict else f'a {kind.__name__}'}. Received: {value!r:.200}"
    temperature = (data.get("calibration") or {}).get("temperature")
    if temperature is not None and not _positive_finite(temperature):
        # Divides every logit (evaluate.py --apply-temperature) and labels the reliability plot: a string was a
        # traceback there, and 0, a negative or NaN gave metrics of garbage probabilities with exit status 0.
        return f"calibration's temperature must be a positive number. Received: {temperature!r:.100}"
    spec = data["input_spec"]
    # An image run's size is [height, width], a text run's sequence length one number: anything else was a
    # traceback later (unpacking the size, or the model refusing the pixels).
    if data["modality"] == "image":
        size = spec.get("image_size")
        usable = isinstance(size, list) and len(size) == 2 and all(_positive_int(s) for s in size)
    else:
        usable = _positive_int(spec.get("sequence_length"))
    if not usable:
        return f"input_spec lacks the {data['modality']} input size. Received: {spec!r:.200}"
    if data["modality"] == "image" and spec.get("resize", "stretch") not in RESIZE_MODES:
        return f"input_spec's resize must be one of {list(RESIZE_MODES)}. Received: {spec.get('resize')!r:.100}"
    return None


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class LoadedRun:
    """A finished run, opened and checked (app/evaluation.py::load_run): its metadata and model."""

    path: Path
    metadata: RunMetadata
    model: object

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def modality(self) -> str:
        return self.metadata.modality

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def resize(self) -> str:
        return self.metadata.resize

    def predict_examples(self, examples: list[Example], batch_size: int = 32) -> np.ndarray:
        dataset = example_dataset(examples, self.modality, self.input_size, batch_size, self.resize)
        return self.model.predict(dataset, verbose=0)

    def predict_texts(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.model.predict(text_dataset(texts, None, batch_size), verbose=0)
