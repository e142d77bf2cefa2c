import json
import os
import zipfile
from pathlib import Path

import pytest

from app import run_dir as rd
from app.errors import UserError


def test_new_run_is_incomplete_until_marked(tmp_path):
    run = rd.create_run_dir(tmp_path / "run")
    (run / rd.MODEL_FILE).write_text("x")
    rd.write_json(run / rd.METADATA_FILE, {"a": 1})
    with pytest.raises(UserError, match="unfinished run"):
        rd.require_complete_run(run)
    with pytest.raises(UserError, match="model.keras.*stays INCOMPLETE"):  # not a zip archive: never marked complete
        rd.mark_complete(run)
    assert (run / rd.INCOMPLETE_MARKER).exists()
    with zipfile.ZipFile(run / rd.MODEL_FILE, "w") as archive:
        archive.writestr("config.json", "{}")
    rd.mark_complete(run)
    assert rd.require_complete_run(run) == run


def test_existing_non_empty_output_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="not empty"):
        rd.create_run_dir(tmp_path / "run")
    assert (tmp_path / "run" / "keep.txt").read_text() == "user data"
    # An unfinished run (killed before its config.json, say): the message says how to go on.
    (tmp_path / "run" / rd.INCOMPLETE_MARKER).write_text("x")
    with pytest.raises(UserError, match=r"is an unfinished run\. Continue it with python train.py --resume .*"
                                        r"delete the folder or choose another --output"):
        rd.create_run_dir(tmp_path / "run")


def test_write_json_is_atomic_and_leaves_no_temporary(tmp_path):
    rd.write_json(tmp_path / "m.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"k": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(UserError, match="not found"):
        rd.require_complete_run(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(UserError, match="model.keras"):
        rd.require_complete_run(tmp_path / "r")


def test_a_run_that_lost_a_file_gets_the_retrain_remedy(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / rd.MODEL_FILE).write_text("x")
    with pytest.raises(UserError, match="not a metatune run directory.*written by train.py"):
        rd.require_complete_run(run)  # no config.json either: not ours
    rd.write_json(run / rd.CONFIG_FILE, {"data_dir": "d"})
    with pytest.raises(UserError, match=r"damaged run directory: metadata.json missing\. Train the run again "
                                        r"\(python train.py --config .*config.json --output NEW_RUN_DIR\)"):
        rd.require_complete_run(run)


def test_an_output_path_that_is_or_lies_under_a_file_is_one_clear_error(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    with pytest.raises(UserError, match=r"--output must be a new or empty folder, but .*notes.txt' is a file"):
        rd.create_run_dir(afile)
    with pytest.raises(UserError, match=r"notes.txt/run' is under .*notes.txt', which is a file"):
        rd.create_run_dir(afile / "run")
    assert afile.read_text() == "keep me"
    rd.check_output_path(tmp_path / "new" / "run")  # nothing there yet: fine
    # The default path (no --output): the message says so and names --output as the way out.
    with pytest.raises(UserError, match=r"^The default run directory .*notes.txt/run' cannot be created: it is under "
                                        r".*notes.txt', which is a file\. Pass --output RUN_DIR"):
        rd.create_run_dir(afile / "run", typed=False)


def test_suggested_commands_quote_paths_with_spaces(tmp_path):
    run = tmp_path / "my runs" / "r"
    run.mkdir(parents=True)
    (run / rd.INCOMPLETE_MARKER).write_text("x")
    with pytest.raises(UserError, match=r"python train.py --resume '.*/my runs/r'"):
        rd.require_complete_run(run)
    assert rd.retrain_remedy(run).startswith(f"Train the run again (python train.py --config '{run}/config.json'")


def test_default_run_directories_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    from app.config import TrainConfig
    from app.training import default_run_dir

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data_dir=str(tmp_path / "my data"))
    first = default_run_dir(config, "efficientnet_lite0")
    assert first.parent == Path("runs") and first.name.endswith("-my_data-efficientnet_lite0-linear")
    first.mkdir(parents=True)
    second = default_run_dir(config, "efficientnet_lite0")
    assert second != first and not second.exists()
    assert second.name in (first.name + "-2",) or second.name[:15] != first.name[:15]  # or the clock moved on


def test_an_export_or_a_file_given_as_the_run_says_what_it_is(tmp_path):
    # predict.py / evaluate.py / export.py given an export said "Run directory not found" for a path that exists.
    exported = tmp_path / "run" / "export" / "litert-float32"
    exported.mkdir(parents=True)
    (exported / "model.tflite").write_bytes(b"TFL3")
    (exported / "parity.json").write_text(json.dumps({"run_dir": str(tmp_path / "run")}))
    for given in (exported, exported / "model.tflite"):
        with pytest.raises(UserError, match=rf"is a model written by export.py, not a run directory\. Pass the run it "
                                            rf"was exported from \('{tmp_path / 'run'}'\).*--artifact"):
            rd.require_complete_run(given)
    saved = tmp_path / "served"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")  # no parity.json: where exports go by default
    with pytest.raises(UserError, match="written by export.py.*RUN_DIR/export/"):
        rd.require_complete_run(saved)
    with pytest.raises(UserError, match="is a file, not a folder"):
        rd.require_complete_run(exported / "parity.json")


def test_a_default_report_name_never_replaces_the_evaluation_of_another_folder(tmp_path):
    """evaluate.py without --name names the report after the folder's (cleaned) name: ~/a/test and ~/b/test, or any two
    names of non-Latin letters (both `_`), took one folder and the second evaluation deleted the first's report."""
    eval_root, first, second = tmp_path / "run" / "eval", tmp_path / "a" / "データ", tmp_path / "b" / "画像"

    def evaluated(name: str, folder: Path) -> Path:
        out = rd.default_report_dir(eval_root, name, folder)
        out.mkdir(parents=True, exist_ok=True)
        rd.write_json(out / "metrics.json", {"data_dir": str(folder.resolve()), "accuracy": 0.5})
        return out

    assert evaluated("_-all", first).name == "_-all"
    assert evaluated("_-all", second).name == "_-all-2"  # the first's report stays
    assert json.loads((eval_root / "_-all" / "metrics.json").read_text())["data_dir"] == str(first.resolve())
    assert evaluated("_-all", second).name == "_-all-2"  # the same folder again: its own report is replaced
    assert evaluated("_-all", first).name == "_-all"
    (eval_root / "_-all" / "metrics.json").unlink()  # an interrupted evaluation: nothing finished to keep
    assert rd.default_report_dir(eval_root, "_-all", second).name == "_-all"


def test_a_look_at_who_trains_a_run_never_refuses_the_trainer(tmp_path):
    """lock_holder takes a shared lock for an instant to see whether a trainer holds the run; a trainer arriving in
    that instant was refused as if another trainer held it. It now waits the look out."""
    import fcntl
    import threading

    from app.run_lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / rd.LOCK_FILE).write_text("")
    assert rd.lock_holder(run) is None  # nobody trains it
    looking = os.open(run / rd.LOCK_FILE, os.O_RDONLY)
    fcntl.flock(looking, fcntl.LOCK_SH)  # a look in progress
    threading.Timer(0.03, os.close, [looking]).start()  # ... that ends a moment later
    with RunLock(run):
        assert rd.lock_holder(run) == str(os.getpid())
