"""The run-directory format (docs/ARCHITECTURE.md): atomic writes, a completeness marker, loading.

A run directory is created with an `INCOMPLETE` marker that is removed only after
every artifact is written, so a crashed run is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.errors import UserError

INCOMPLETE_MARKER = "INCOMPLETE"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
DATA_REPORT_FILE = "data_report.json"
MANIFEST_FILE = "manifest.json"
META_LEARNER_FILE = "meta_learner.keras"  # meta strategies: the learner (evaluate --episodes, --init)
META_MANIFEST_FILE = "meta_manifest.json"  # --meta-data runs: its files, classes and their meta split
LOGS_DIR = "logs"


def write_json(path: Path, payload) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def create_run_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise UserError(f"Run directory already exists and is not empty. Received: --output {str(path)!r}. Choose a new one.")
    path.mkdir(parents=True, exist_ok=True)
    (path / INCOMPLETE_MARKER).write_text("Training has not finished; this run directory is not usable yet.\n")
    return path


def save_model(model, run_dir: Path) -> None:
    temporary = Path(run_dir) / f".tmp-{MODEL_FILE}"
    model.save(temporary)
    os.replace(temporary, Path(run_dir) / MODEL_FILE)


def mark_complete(run_dir: Path) -> None:
    (Path(run_dir) / INCOMPLETE_MARKER).unlink(missing_ok=True)


def require_complete_run(run_dir: str | Path) -> Path:
    """Check that `run_dir` is a finished run; raise UserError saying what is wrong otherwise."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"Run directory not found. Received: {str(run_dir)!r}. Pass a folder written by train.py.")
    if (run_dir / INCOMPLETE_MARKER).exists():
        raise UserError(f"{str(run_dir)!r} is an unfinished run (training did not complete). Train again or pick another run.")
    missing = [name for name in (MODEL_FILE, METADATA_FILE) if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{str(run_dir)!r} is not a metatune run directory: missing {missing}.")
    return run_dir
