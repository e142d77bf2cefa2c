"""The files that trained a reused backbone (`--backbone RUN_DIR`), followed down the chain of runs it came from.

A run built on an earlier run's backbone records that run in metadata.json's `backbone_run`; that run may itself
have reused another. Each run of the chain trained the backbone on its training and validation files (and its
--meta-data source), so an honest evaluation of the last run leaves all of them out. The runs of the chain live on
their own: they can be moved, deleted, damaged, or trained again at the same path after the run that reused them
finished. `training_files_sha256` (recorded in `backbone_run` when the run trains) tells the last case apart: the
chain then lists other files than the ones that trained the backbone, and would silently leave out the wrong ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from app import run_dir as rd
from app.errors import UserError
from app.run_manifest import read_manifest, read_source_manifest

RECORDED_DIGEST = "training_files_sha256"  # the key in metadata.json's `backbone_run`


@dataclass
class Lineage:
    hashes: set[str] = field(default_factory=set)  # sha256 of every file that trained the backbone, as far as known
    broken_at: Path | str | None = None  # the run of the chain whose files could not be read (None: all read)
    problem: str = ""  # why, in words for a warning

    @property
    def complete(self) -> bool:
        return self.broken_at is None


def files_digest(hashes: set[str]) -> str:
    """One SHA-256 over the sorted file hashes: what `backbone_run` records, compared by evaluate.py."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode("ascii")).hexdigest()


def backbone_lineage(record) -> Lineage:
    """The files that trained the backbone `record` (a `backbone_run` mapping, or None) names, down the chain while
    its run directories can be read; where one cannot, `broken_at` and `problem` say which and why."""
    lineage, visited = Lineage(), set()
    while record is not None:
        path = record.get("path") if isinstance(record, dict) else None
        if not isinstance(path, str) or not path:
            # Hand-edited or damaged metadata: `Path(5)` was a TypeError traceback in evaluate.py.
            lineage.broken_at = repr(path)
            lineage.problem = f"a metadata.json's backbone_run names no run directory: {str(record)[:120]}"
            break
        if path in visited:
            break  # a chain that loops (edited by hand): every run of it is already counted
        visited.add(path)
        source = Path(path)
        try:
            record = _add_run_files(source, lineage.hashes)
        except UserError as error:
            lineage.broken_at, lineage.problem = source, str(error)
            break
    return lineage


def _add_run_files(source: Path, hashes: set[str]):
    """Add the training, validation and --meta-data files of the run at `source` to `hashes`; its own
    `backbone_run` record (None without one). UserError when its files cannot be read."""
    if not source.is_dir():
        raise UserError("it is gone: moved or deleted")
    if not (source / rd.MANIFEST_FILE).is_file():
        raise UserError(f"it has no {rd.MANIFEST_FILE}")
    hashes |= read_manifest(source).hashes("train", "val")
    if (meta_source := read_source_manifest(source)) is not None:
        hashes |= meta_source.hashes()
    metadata = rd.read_json(source / rd.METADATA_FILE) if (source / rd.METADATA_FILE).is_file() else {}
    return metadata.get("backbone_run") if isinstance(metadata, dict) else None
