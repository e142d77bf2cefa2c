"""Bad input gets one clear error line (exit status 2) or a reported skip, never a traceback."""

import json

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from app import run_dir as rd
from error_lines import one_error_line

FAST = ["--weights", "none", "--image-size", "32", "--epochs", "2"]


def write_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def make_folder(root, classes=("cats", "dogs"), per_class=4):
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", 40 * c + i)
    return root


def assert_clean_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_folder(tmp_path, capsys):
    assert train.main([str(tmp_path / "nope")]) == 2
    assert_clean_error(capsys, "does not exist", "nope")


def test_empty_folder(tmp_path, capsys):
    assert train.main([str(tmp_path)]) == 2
    assert_clean_error(capsys, "No files found")


def test_single_class(tmp_path, capsys):
    make_folder(tmp_path, classes=("only",))
    assert train.main([str(tmp_path), *FAST, "--output", str(tmp_path / "out")]) == 2
    assert_clean_error(capsys, "at least 2 classes", "only")
    assert not (tmp_path / "out").exists()


def test_classes_of_identical_copies_are_told_why_no_validation_file_was_held_out(tmp_path, capsys):
    """Four byte-identical copies per class were told that "every class needs at least 2 training files"."""
    for c, name in enumerate(("cats", "dogs")):
        for i in range(4):
            write_png(tmp_path / "data" / name / f"{i}.png", 40 * c)
    assert train.main([str(tmp_path / "data"), *FAST, "--output", str(tmp_path / "out")]) == 2
    assert_clean_error(capsys, "not byte-identical copies", "'cats': 4 file(s) (1 distinct); 'dogs': 4 file(s) (1 distinct)")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unusable_files_are_skipped_and_reported(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    (data / "cats" / "notes.txt").write_text("a note")
    (data / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    run = tmp_path / "run"
    assert train.main([str(data), *FAST, "--output", str(run)]) == 0
    report = rd.read_json(run / rd.DATA_REPORT_FILE)
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"notes.txt", "broken.png"}
    assert "not an image file" in reasons["notes.txt"]
    assert "not a readable image" in reasons["broken.png"]
    assert report["num_examples"] == 8
    err = capsys.readouterr().err
    assert "Skipped" in err and "broken.png" in err


@pytest.mark.slow
def test_evaluate_rejects_unknown_classes_and_unfinished_runs(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert train.main([str(data), *FAST, "--output", str(run)]) == 0
    other = make_folder(tmp_path / "other", classes=("cats", "horses"))
    assert evaluate.main([str(run), str(other)]) == 2
    assert_clean_error(capsys, "horses", "dogs")
    (run / rd.INCOMPLETE_MARKER).write_text("")
    assert evaluate.main([str(run), str(data)]) == 2
    assert_clean_error(capsys, "unfinished run")
    assert predict.main([str(tmp_path / "missing_run"), str(data)]) == 2
    assert_clean_error(capsys, "Run directory not found")


@pytest.mark.slow
def test_evaluate_on_training_folder_uses_held_out_files_only(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=5)
    run = tmp_path / "run"
    assert train.main([str(data), *FAST, "--output", str(run)]) == 0
    assert evaluate.main([str(run), str(data), "--name", "own"]) == 0
    metrics = json.loads((run / "eval" / "own" / "metrics.json").read_text())
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    assert metrics["num_examples"] == sum(f["split"] == "test" for f in manifest["files"]) == 2
    held_out = {f["path"] for f in manifest["files"] if f["split"] == "test"}
    assert not held_out & {f["path"] for f in manifest["files"] if f["split"] == "train"}
    assert "held out" in metrics["split"]


def test_output_directory_with_files_is_not_overwritten(tmp_path, capsys, monkeypatch):
    data = make_folder(tmp_path / "data")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep")

    def no_scan(*args, **kwargs):  # a used --output is refused before the data scan (minutes on a big folder)
        raise AssertionError("the data folder was scanned")

    monkeypatch.setattr("app.training.scan_folder", no_scan)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "run")]) == 2
    assert_clean_error(capsys, "not empty")
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep"


def test_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    assert train.main([str(data), *FAST, "--output", str(afile)]) == 2
    assert_clean_error(capsys, "is a file", "Choose a folder path")
    assert train.main([str(data), *FAST, "--output", str(afile / "run")]) == 2
    assert_clean_error(capsys, "which is a file")
    assert afile.read_text() == "keep"


def test_output_with_a_tilde_is_under_the_home_folder(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"data_dir: {data}\noutput: ~/runs/first\n")  # a config file's "~" is not the shell's
    assert train.main(["--config", str(config), *FAST]) == 0
    assert (tmp_path / "home" / "runs" / "first" / rd.METADATA_FILE).is_file()
    assert not (tmp_path / "~").exists()


def test_an_output_folder_this_user_cannot_write_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A read-only parent was a PermissionError traceback, after the data scan and the backbone build. (Tests run
    as root here, whom permissions do not stop: os.access stands in for a user they do.)"""
    data = make_folder(tmp_path / "data")
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("app.run_dir.os.access", lambda path, mode: str(path) != str(locked))
    monkeypatch.setattr("app.training.scan_folder", lambda *a, **k: pytest.fail("the data folder was scanned"))
    assert train.main([str(data), *FAST, "--output", str(locked / "deep" / "run")]) == 2
    assert_clean_error(capsys, f"{str(locked)!r} is not writable by this user",
                       f"Received: --output {str(locked / 'deep' / 'run')!r}")
    assert list(locked.iterdir()) == []


def test_a_permission_error_anywhere_is_one_line_naming_the_path(capsys):
    import errno

    from app.cli import run_safely, setup_logging

    setup_logging()

    def denied():
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/runs/run/.lock")

    assert run_safely(denied) == 2
    assert_clean_error(capsys, "Permission denied: /srv/runs/run/.lock. Give this user access to it")


def test_resuming_a_run_whose_data_folder_moved_says_to_put_it_back(tmp_path, capsys):
    """It said to pass another folder, which --resume does not take."""
    from app.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    moved = tmp_path / "data"  # gone: moved elsewhere since the run started
    (run / rd.CONFIG_FILE).write_text(json.dumps(TrainConfig(data_dir=str(moved), output=str(run)).to_dict()))
    (run / rd.INCOMPLETE_MARKER).write_text("")
    assert train.main(["--resume", str(run)]) == 2
    assert_clean_error(capsys, f"The data folder this run trained on is gone (or not a folder): {str(moved)!r}",
                       "put the folder back at that path, then resume again")


@pytest.mark.parametrize("script, argv, flag", [
    ("predict", ["RUN", ""], "inputs"),  # predicted every image under the current folder
    ("predict", ["", "a.png"], "run_dir"),
    ("predict", ["RUN", "--files-from", ""], "--files-from"),
    ("evaluate", ["RUN", "DATA", "--unknown", ""], "--unknown"),  # scored the current folder as unknown
    ("evaluate", ["RUN", ""], "data_dir"),
    ("evaluate", ["RUN", "DATA", "--compare", "OTHER", ""], "--compare"),
    ("evaluate", ["RUN", "DATA", "--artifact", ""], "--artifact"),
    ("export", [""], "run_dir"),
])
def test_an_empty_path_argument_is_a_usage_error_not_the_current_folder(script, argv, flag, capsys):
    import export

    module = {"predict": predict, "evaluate": evaluate, "export": export}[script]
    with pytest.raises(SystemExit) as exit_:
        module.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert f"argument {flag}: is empty. Received: ''. Pass a path" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, fragment", [
    ("train", ["DATA", "--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    ("train", ["DATA", "--bogus"], "unrecognized arguments: --bogus"),
    ("evaluate", [], "the following arguments are required: run_dir, data_dir"),
    ("predict", ["RUN", "a.png", "--reject", "sometimes"], "argument --reject: invalid choice: 'sometimes'"),
    ("export", ["RUN", "--format", "onnx"], "argument --format: invalid choice: 'onnx'"),
])
def test_a_usage_error_is_one_error_line_naming_the_value_and_help(script, argv, fragment, capsys):
    """argparse printed the whole usage (about 40 lines for train.py) above an error line of its own form."""
    import export

    module = {"train": train, "predict": predict, "evaluate": evaluate, "export": export}[script]
    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    line = one_error_line(err, fragment, f"See python {script}.py --help")
    assert "usage:" not in err and err.strip().splitlines() == [line]
