"""Parity of an exported artifact with the run's model.keras on the same held-out files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Float formats compute what model.keras computes, up to rounding: top-1 must agree on at
# least this share of files. Quantized formats (int8 weights: dynamic, int8) may move
# decisions; their accuracy may drop at most this much (issue: 2 accuracy points).
MIN_FLOAT_AGREEMENT = 0.995
MAX_QUANTIZED_ACCURACY_DROP = 0.02


@dataclass
class ParityCheck:
    """One input path of an artifact compared with model.keras (written into parity.json)."""

    signature: str  # e.g. "serving_default (file bytes)", "pixels", "tflite (uint8 pixels)"
    num_files: int
    top1_agreement: float
    max_abs_probability_difference: float
    accuracy_keras: float
    accuracy_artifact: float
    rule: str
    passed: bool
    disagreements: list[str] = field(default_factory=list)  # a few files where top-1 differs

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"{self.signature}: top-1 agreement {self.top1_agreement:.4f} on {self.num_files} files, max |Δp| "
                f"{self.max_abs_probability_difference:.2e}, accuracy {self.accuracy_artifact:.4f} (model.keras "
                f"{self.accuracy_keras:.4f}) - {self.rule}: {verdict}")


def compare(signature: str, reference: np.ndarray, candidate: np.ndarray, labels: list[int], paths: list[str],
            quantized: bool) -> ParityCheck:
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"probabilities of different shapes: model.keras {reference.shape}, artifact {candidate.shape}")
    labels_array = np.asarray(labels)
    same = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreement = float(same.mean()) if len(same) else 1.0
    accuracy_keras = float((reference.argmax(axis=1) == labels_array).mean()) if len(labels) else 0.0
    accuracy_artifact = float((candidate.argmax(axis=1) == labels_array).mean()) if len(labels) else 0.0
    if quantized:
        rule = f"accuracy at most {100 * MAX_QUANTIZED_ACCURACY_DROP:.0f} points below model.keras"
        passed = accuracy_keras - accuracy_artifact <= MAX_QUANTIZED_ACCURACY_DROP + 1e-9
    else:
        rule = f"top-1 agreement at least {100 * MIN_FLOAT_AGREEMENT:.1f}%"
        passed = agreement >= MIN_FLOAT_AGREEMENT
    return ParityCheck(signature, len(same), agreement,
                       float(np.abs(reference - candidate).max()) if reference.size else 0.0,
                       accuracy_keras, accuracy_artifact, rule, bool(passed),
                       [paths[i] for i in np.flatnonzero(~same)[:10]])


@dataclass
class UnknownParityCheck:
    """The exported unknown-class score against the run's detector (app/unknown_scores.py) on the same files."""

    signature: str
    score: str  # which score the run uses (unknown.json)
    threshold: float
    num_files: int
    verdict_agreement: float  # share of files both call unknown, or both call known
    max_abs_score_difference: float
    rule: str
    passed: bool
    disagreements: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"{self.signature}: unknown-class score ({self.score}) verdicts agree on {self.verdict_agreement:.4f} of "
                f"{self.num_files} files, max |Δscore| {self.max_abs_score_difference:.2e} - {self.rule}: {verdict}")


# A file whose score lies this close to the threshold (relative to the threshold's size) may be
# called either way by float rounding: the threshold itself is one validation file's score
# (app/unknown_scores.threshold_for_recall), so such a tie is certain when the check runs on
# validation files. Those files do not count as disagreements.
BORDERLINE_RELATIVE = 1e-5


def borderline(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The scores too close to the threshold for a verdict to survive float rounding."""
    if not np.isfinite(threshold):  # a detector that rejects nothing: no score is near its threshold
        return np.zeros(np.shape(scores), bool)
    return np.abs(np.asarray(scores, np.float64) - threshold) <= BORDERLINE_RELATIVE * max(1.0, abs(threshold))


def compare_unknown(signature: str, score: str, threshold: float, reference: np.ndarray, candidate: np.ndarray,
                    paths: list[str]) -> UnknownParityCheck:
    """The exported score computes the detector's numpy arithmetic in float64 on the exported model's
    embedding: verdicts must agree as top-1 does (float formats), files on the threshold aside."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    same = ((reference > threshold) == (candidate > threshold)) | borderline(reference, threshold)
    agreement = float(same.mean()) if len(same) else 1.0
    return UnknownParityCheck(signature, score, float(threshold), len(same), agreement,
                              float(np.abs(reference - candidate).max()) if reference.size else 0.0,
                              f"verdict agreement at least {100 * MIN_FLOAT_AGREEMENT:.1f}% (files within "
                              f"{BORDERLINE_RELATIVE:g} of the threshold agree either way)",
                              bool(agreement >= MIN_FLOAT_AGREEMENT), [paths[i] for i in np.flatnonzero(~same)[:10]])


@dataclass
class ParityReport:
    """parity.json: what was exported, on which files it was checked, and every check."""

    format: str
    quantize: str
    artifact: str
    run_dir: str
    class_names: list[str]
    input: dict  # what the artifact takes (signatures / tensor shape and dtype)
    files: str  # which held-out files, and why those
    checks: list[ParityCheck]
    notes: list[str] = field(default_factory=list)
    unknown_checks: list[UnknownParityCheck] = field(default_factory=list)  # a run with an unknown-class detector
    # The exported run's metadata class_digest (its class list and output weights, app/run_integrity.py): what
    # `evaluate.py --artifact` checks an export against, so that another run's export is refused.
    class_digest: str | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in [*self.checks, *self.unknown_checks])

    def to_json(self) -> dict:
        return asdict(self) | {"passed": self.passed}
