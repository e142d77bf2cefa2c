"""What `train.py --resume RUN_DIR` checks before it continues a run: that it is an interrupted run (not a finished
one, nor one whose INCOMPLETE marker was removed by hand), and that the data still gives the split it started with
(the same files, or the same files in a moved folder). app/training.py opens and locks the run; this says why a
run cannot be continued, in words that name what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from app import run_dir as rd
from app.config import TrainConfig
from app.data_report import without_exclusion_marks
from app.errors import UserError

logger = logging.getLogger(__name__)

START_AGAIN = "The run cannot be resumed; start a new run (python train.py --config RUN_DIR/config.json --output NEW_DIR)."


def manifest_sha256(manifest: dict) -> str:
    """What a resume compares with the data's manifest now (without the run's own exclusion marks)."""
    return hashlib.sha256(json.dumps(without_exclusion_marks(manifest), sort_keys=True).encode()).hexdigest()


def check_same_split(config: TrainConfig, run_dir: Path, saved: dict, manifest: dict) -> None:
    """A resume continues the split the run started with. The data changing and config.json's split settings
    (seed, val_fraction, test_fraction) edited by hand both change it; the message said "the data changed"
    for both, sending the user to look for files that were never touched."""
    if not (isinstance(saved, dict) and isinstance(saved.get("files"), list)):  # was an AttributeError traceback
        raise UserError(f"{str(run_dir / rd.MANIFEST_FILE)!r} is damaged (no list of files). {START_AGAIN}")
    if manifest_sha256(saved) == manifest_sha256(manifest):
        return
    if manifest_sha256(saved | {"root": manifest["root"]}) == manifest_sha256(manifest):
        _record_moved_data_folder(run_dir, saved, manifest["root"])
        return

    def files(of: dict) -> set:
        return {(f.get("path"), f.get("sha256"), f.get("label")) for f in of.get("files", [])
                if isinstance(f, dict)}

    if files(saved) == files(manifest):
        raise UserError(f"The same files of {config.data_dir!r} now split differently from when {str(run_dir)!r} "
                        "started: its config.json's seed, val_fraction or test_fraction were changed since. Put them "
                        f"back as they were to continue it (Received: seed {config.seed}, val_fraction "
                        f"{config.val_fraction}, test_fraction {config.test_fraction}), or start a new run with the "
                        "new values (--config RUN_DIR/config.json --output NEW_DIR).")
    raise UserError(f"The data in {config.data_dir!r} changed since {str(run_dir)!r} started "
                    f"({_data_changes(saved, manifest)}), so its split cannot be continued. Put the files back as "
                    "they were and resume again, or start a new run on the current data.")


def _data_changes(saved: dict, manifest: dict) -> str:
    """Which files differ, counted with a few named: "files added, removed or edited" left a user with thousands of
    files to compare by hand (a class folder renamed reads as its files removed and others added)."""
    def by_path(of: dict) -> dict:
        return {f.get("path"): (f.get("sha256"), f.get("label")) for f in of.get("files", []) if isinstance(f, dict)}

    before, now = by_path(saved), by_path(manifest)
    changes = {"added": sorted(set(now) - set(before), key=str),
               "removed": sorted(set(before) - set(now), key=str),
               "edited": sorted((path for path in set(now) & set(before) if now[path] != before[path]), key=str)}
    parts = [f"{len(paths)} file(s) {what}, e.g. " + ", ".join(repr(p) for p in paths[:3])
             for what, paths in changes.items() if paths]
    return "; ".join(parts) or "its list of files differs"


def _record_moved_data_folder(run_dir: Path, saved: dict, root: str) -> None:
    """The same files, splits and classes under another folder: the data folder was moved and config.json's
    data_dir set to its new place (the resume said the seed had been edited). The split continues; manifest.json
    names the new folder, where export.py finds the held-out files."""
    logger.info("The run's data folder moved from %s to %s (the same files): continuing, and manifest.json now names "
                "the new folder", saved.get("root"), root)
    rd.write_json(run_dir / rd.MANIFEST_FILE, saved | {"root": root})


def refuse_unmarked_run(run_dir: Path) -> None:
    """A run without its INCOMPLETE marker is finished, unless its model was never written: then the marker was
    removed by hand, and "a finished run" sent the user looking for a model that does not exist."""
    missing = [name for name in (rd.MODEL_FILE, rd.METADATA_FILE) if not (run_dir / name).is_file()]
    if not missing:
        raise UserError(f"{str(run_dir)!r} is a finished run; there is nothing to resume. Received: --resume {run_dir}")
    raise UserError(f"{str(run_dir)!r} has no {rd.INCOMPLETE_MARKER} marker, so it is not an interrupted run, yet "
                    f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, so it is not a finished "
                    f"one either. If it was interrupted and the marker removed by hand, create an empty "
                    f"{str(run_dir / rd.INCOMPLETE_MARKER)!r} and resume again; otherwise start a new run (python "
                    f"train.py --config {rd.shell_path(run_dir)}/config.json --output NEW_DIR). Received: --resume "
                    f"{run_dir}")
