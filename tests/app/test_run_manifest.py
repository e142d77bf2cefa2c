"""app/run_manifest.py: the one reader of manifest.json / meta_manifest.json reads what the writer wrote, and names
a damaged file instead of a KeyError (or, in the leak checks, silently nothing)."""

import json
from pathlib import Path

import pytest

from app import run_dir as rd
from app.data_report import build_manifest
from app.errors import UserError
from app.run_manifest import read_manifest, read_source_manifest
from data.scan import scan_folder


@pytest.fixture()
def run_with_manifest(tmp_path):
    data = tmp_path / "data"
    for split, per_class in (("train", 3), ("test", 2)):
        for name in ("ant", "bee"):
            folder = data / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{i}.txt").write_text(f"{split} {name} {i}", encoding="utf-8")
    scan = scan_folder(data)
    run = tmp_path / "run"
    rd.write_json(run / rd.MANIFEST_FILE, build_manifest(scan, scan.examples))
    return run, scan


def test_reads_back_what_the_writer_wrote(run_with_manifest):
    run, scan = run_with_manifest
    manifest = read_manifest(run)
    assert manifest.root == Path(scan.root)
    assert len(manifest.entries) == len(scan.examples) == 10
    assert manifest.hashes("test") == {e.sha256 for e in scan.examples if e.split == "test"}
    assert manifest.hashes() == {e.sha256 for e in scan.examples}
    held_out, split = manifest.held_out(["ant", "bee"])
    assert split == "test" and sorted(e.path for e in held_out) == [
        "test/ant/0.txt", "test/ant/1.txt", "test/bee/0.txt", "test/bee/1.txt"]
    assert read_source_manifest(run) is None  # not a --meta-data run


def test_without_test_files_the_held_out_files_are_the_validation_files(run_with_manifest):
    run, _ = run_with_manifest
    payload = rd.read_json(run / rd.MANIFEST_FILE)
    for entry in payload["files"]:
        entry["split"] = "val" if entry["split"] == "test" else entry["split"]
    rd.write_json(run / rd.MANIFEST_FILE, payload)
    held_out, split = read_manifest(run).held_out(["ant", "bee"])
    assert split == "val" and len(held_out) == 4


@pytest.mark.parametrize("damage, named", [
    (lambda m: [m], "no list of files"),
    (lambda m: m | {"files": {"a": 1}}, "no list of files"),
    (lambda m: m | {"root": 7}, "its root is not a path: 7"),
    (lambda m: m | {"class_splits": ["ant"]}, "its class_splits is not a mapping"),
    (lambda m: m | {"files": [{k: v for k, v in m["files"][0].items() if k != "label"}]}, "an entry without"),
    (lambda m: m | {"files": [m["files"][0] | {"sha256": 12}]}, "an entry without"),
])
def test_a_damaged_manifest_is_one_error_naming_the_file_and_the_remedy(run_with_manifest, damage, named):
    run, _ = run_with_manifest
    (run / rd.MANIFEST_FILE).write_text(json.dumps(damage(rd.read_json(run / rd.MANIFEST_FILE))), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_manifest(run)
    message = str(caught.value)
    assert f"{str(run / rd.MANIFEST_FILE)!r} is damaged" in message and named in message
    assert "train.py --config" in message


def test_held_out_files_of_a_class_the_run_does_not_know_are_named_as_damage(run_with_manifest):
    run, _ = run_with_manifest
    with pytest.raises(UserError, match=r"held-out files labelled \['bee'\], not classes of the run"):
        read_manifest(run).held_out(["ant", "cat"])


def test_a_missing_root_falls_back_to_the_one_given(run_with_manifest, tmp_path):
    run, _ = run_with_manifest
    payload = rd.read_json(run / rd.MANIFEST_FILE)
    del payload["root"]
    rd.write_json(run / rd.MANIFEST_FILE, payload)
    assert read_manifest(run, tmp_path / "elsewhere").root == tmp_path / "elsewhere"
    assert read_manifest(run).root is None


def test_the_source_manifest_gives_its_hashes_and_classes(run_with_manifest):
    run, scan = run_with_manifest
    payload = rd.read_json(run / rd.MANIFEST_FILE) | {"class_splits": {"ant": "meta_train", "bee": "meta_val"}}
    rd.write_json(run / rd.META_MANIFEST_FILE, payload)
    source = read_source_manifest(run)
    assert source.hashes() == {e.sha256 for e in scan.examples}
    assert set(source.class_splits) == {"ant", "bee"}


def test_a_meta_data_run_without_its_meta_manifest_is_damaged(tmp_path):
    """Its source's files (which meta-trained it) could no longer be left out of what evaluate.py scores: they were
    scored as new data without a word. A run without --meta-data needs no meta_manifest.json."""
    rd.write_json(tmp_path / rd.CONFIG_FILE, {"strategy": "protonet", "meta_data": "/data/source"})
    with pytest.raises(UserError, match=r"meta_manifest.json' is missing, but the run meta-trained on --meta-data "
                                        r"/data/source.*Train the run again"):
        read_source_manifest(tmp_path)
    rd.write_json(tmp_path / rd.CONFIG_FILE, {"strategy": "protonet", "meta_data": None})
    assert read_source_manifest(tmp_path) is None  # no source: nothing to leave out
    (tmp_path / rd.CONFIG_FILE).unlink()
    assert read_source_manifest(tmp_path) is None  # runs written before config.json named it
