"""Reading a run's manifest.json (its files, their splits and hashes) and meta_manifest.json (its --meta-data
source): one validating reader for every command that needs them.

evaluate.py, export.py and the leak checks each read these files with their own `.get` chains, so a garbled
entry was a KeyError traceback in one command and silently nothing in another. Here a damaged manifest is one
UserError naming the file and the remedy, wherever it is read. The files are written by app/data_report.py
(build_manifest) and app/meta_pools.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app import run_dir as rd
from app.errors import UserError


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to the manifest's root
    split: str  # train / val / test (meta_train / meta_val in meta_manifest.json)
    label: str  # the class name
    sha256: str | None


@dataclass(frozen=True)
class RunManifest:
    file: Path  # the manifest read, for messages
    root: Path | None  # the folder the entries' paths are relative to (None: not recorded, none given)
    entries: tuple[ManifestEntry, ...]
    class_splits: dict[str, str]  # class name -> its meta split ({} when the manifest has none)
    remedy: str

    def in_split(self, *splits: str) -> list[ManifestEntry]:
        return [e for e in self.entries if e.split in splits]

    def hashes(self, *splits: str) -> set[str]:
        """The content hashes of the entries in `splits` (every entry without `splits`)."""
        return {e.sha256 for e in self.entries if e.sha256 and (not splits or e.split in splits)}

    def held_out(self, class_names: list[str]) -> tuple[list[ManifestEntry], str]:
        """The files held out at training time: the test split, else the validation split ("test" / "val"),
        every one labelled with a class of the run (a label it does not know was a ValueError traceback)."""
        split = "test" if self.in_split("test") else "val"
        chosen = self.in_split(split)
        strangers = sorted({e.label for e in chosen} - set(class_names))
        if strangers:
            raise self.damaged(f"held-out files labelled {strangers[:5]}, not classes of the run")
        return chosen, split

    def damaged(self, what: str) -> UserError:
        return _damaged(self.file, what, self.remedy)


def _damaged(file: Path, what: str, remedy: str) -> UserError:
    return UserError(f"{str(file)!r} is damaged ({what}). {remedy}")


def read_manifest(run_path: Path, default_root: str | Path | None = None,
                  name: str = rd.MANIFEST_FILE) -> RunManifest:
    """The run's manifest.json (or meta_manifest.json with `name`); a UserError naming the file when it is missing,
    not JSON, or not the shape the writers give it. `default_root`: where the entries lie when the manifest names
    no root (manifests written before it did; the run's data_dir)."""
    run_path = Path(run_path)
    file, remedy = run_path / name, rd.retrain_remedy(run_path)
    payload = rd.read_json(file, remedy)

    def damaged(what: str) -> UserError:
        return _damaged(file, what, remedy)

    if not isinstance(payload, dict) or not isinstance(payload.get("files"), list):
        raise damaged("no list of files")
    root = payload.get("root") if payload.get("root") is not None else default_root
    if root is not None and not isinstance(root, (str, Path)):
        raise damaged(f"its root is not a path: {payload.get('root')!r}")
    class_splits = payload.get("class_splits") or {}
    if not isinstance(class_splits, dict):
        raise damaged(f"its class_splits is not a mapping: {str(class_splits)[:120]}")
    entries = []
    for entry in payload["files"]:
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("path", "split", "label"))
                and isinstance(entry.get("sha256"), (str, type(None)))):
            raise damaged(f"an entry without a path, a split and a label: {str(entry)[:120]}")
        entries.append(ManifestEntry(entry["path"], entry["split"], entry["label"], entry.get("sha256")))
    return RunManifest(file, None if root is None else Path(root), tuple(entries), class_splits, remedy)


def read_source_manifest(run_path: Path) -> RunManifest | None:
    """The --meta-data source a meta run meta-trained and meta-validated on (meta_manifest.json); None for a run
    without one. A run whose config.json names a --meta-data folder but whose meta_manifest.json is gone is
    damaged: without the list, the source's files (which meta-trained it) were scored as new data, silently."""
    run_path = Path(run_path)
    if (run_path / rd.META_MANIFEST_FILE).is_file():
        return read_manifest(run_path, name=rd.META_MANIFEST_FILE)
    config_file = run_path / rd.CONFIG_FILE
    source = rd.read_json(config_file, rd.retrain_remedy(run_path)).get("meta_data") if config_file.is_file() else None
    if source:
        raise UserError(f"{str(run_path / rd.META_MANIFEST_FILE)!r} is missing, but the run meta-trained on "
                        f"--meta-data {source}: without its list of files, that source's files would be scored as "
                        f"new data. {rd.retrain_remedy(run_path)}")
    return None
