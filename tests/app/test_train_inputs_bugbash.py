"""train.py's DATA_DIR and --config bug-bash: a run directory given as (or kept inside) the data folder was scanned
as classes ("has 1 class: ['logs']"), a run directory placed inside the data folder (--output, or the default runs/
of a command started there) became a class of the next run, a split layout with no training files ended in a
TensorFlow traceback after the run directory was made, split folders spelt Train/ or validation/ were trained on
as classes, two class folders that are one folder (a symlink) trained every file under both labels, `--config
FOLDER` was told its extension was wrong, `epochs: 1e3` was refused as `1000.0` without saying why, and a data
folder link in a loop (or to nothing) was said not to exist."""

from __future__ import annotations

import json

import pytest

import train
from app import run_dir as rd
from app.config import TrainConfig
from app.config_cli import config_from_args
from app.data_folder import refuse_output_inside_data
from app.errors import UserError
from data.errors import DataError
from data.scan import scan_folder
from error_lines import one_error_line

FAST = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "1"]


def _data(root, make_image, classes=("cats", "dogs"), per_class=3):
    for c in classes:
        for i in range(per_class):
            make_image(root / c / f"{i}.png")
    return root


def _fake_run(folder, make_image, finished=True):
    """A folder laid out as train.py leaves a run: what makes it one (config.json with its model and metadata, or
    its INCOMPLETE marker), the logs/ whose sprite image was scanned as a class, and an evaluation's eval/."""
    folder.mkdir(parents=True)
    (folder / rd.CONFIG_FILE).write_text(json.dumps({"data_dir": "/elsewhere"}))
    (folder / (rd.METADATA_FILE if finished else rd.INCOMPLETE_MARKER)).write_text("{}")
    make_image(folder / rd.LOGS_DIR / "sprite.png")
    make_image(folder / "eval" / "test" / "confusion.png")
    return folder


def _snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------------------- a run directory as the data


@pytest.mark.parametrize("mode", [["--strategy", "linear"], ["--strategy", "finetune"], ["--check"]])
def test_a_run_directory_given_as_the_data_folder_says_what_to_do_with_a_run(tmp_path, make_image, capsys, mode):
    run = _fake_run(tmp_path / "run", make_image)
    before = _snapshot(run)
    assert train.main([str(run), *FAST, *mode, "--output", str(tmp_path / "new")]) == 2
    line = one_error_line(capsys.readouterr().err, "is a run directory", "evaluate.py", "predict.py",
                          f"--backbone {run}")
    assert "'logs'" not in line and "class" not in line.split("not a data folder")[0]
    assert not (tmp_path / "new").exists()
    assert _snapshot(run) == before


def test_an_unfinished_run_directory_given_as_the_data_folder_is_sent_to_resume(tmp_path, make_image, capsys):
    run = _fake_run(tmp_path / "run", make_image, finished=False)
    assert train.main([str(run), *FAST, "--output", str(tmp_path / "new")]) == 2
    one_error_line(capsys.readouterr().err, "unfinished run directory", f"--resume {run}")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["run", "runs/20260101-000000-data-tiny_image-linear", "cats/run"])
def test_a_data_folder_holding_a_run_directory_is_refused_naming_it(tmp_path, make_image, capsys, where):
    """Its sprite became a class ('run': 1 file, "too few training examples"); with two runs under runs/, a class
    trained on without a word; under a class folder, an image of that class."""
    data = _data(tmp_path / "data", make_image)
    _fake_run(data / where, make_image)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "new")]) == 2
    one_error_line(capsys.readouterr().err, "holds a run directory", str(data / where), "Move runs out")
    assert not (tmp_path / "new").exists()


def test_evaluate_and_a_meta_source_refuse_a_folder_holding_a_run_directory(tmp_path, make_image, capsys):
    """evaluate.py scanned the run kept in its data folder as a class: "classes the model was not trained on:
    ['run']"; --meta-data read it as a source class."""
    import evaluate

    data = _data(tmp_path / "data", make_image, per_class=4)
    run = tmp_path / "run"
    assert train.main([str(data), *FAST, "--output", str(run)]) == 0
    _fake_run(data / "run", make_image)
    assert evaluate.main([str(run), str(data)]) == 2
    one_error_line(capsys.readouterr().err, "holds a run directory", str(data / "run"), "files to evaluate",
                   "Move runs out")
    source = _data(tmp_path / "source", make_image, classes=("birds", "fish", "frogs"))
    _fake_run(source / "runs" / "old", make_image)
    target = _data(tmp_path / "target", make_image, per_class=4)
    assert train.main([str(target), *FAST, "--strategy", "protonet", "--meta-data", str(source),
                       "--output", str(tmp_path / "meta")]) == 2
    one_error_line(capsys.readouterr().err, "holds a run directory", str(source / "runs" / "old"), "--meta-data")
    assert not (tmp_path / "meta").exists()


def test_a_new_run_inside_another_run_directory_is_refused(tmp_path, make_image, capsys, monkeypatch):
    """--output RUN/eval/sub was accepted: a later `evaluate.py RUN DATA --name sub` replaced that folder, and the run
    kept in it with it. So was the default runs/ of a command started in a run directory."""
    data = _data(tmp_path / "data", make_image)
    run = _fake_run(tmp_path / "run", make_image)
    before = _snapshot(run)
    for output in ("eval/sub", "logs/new"):
        assert train.main([str(data), *FAST, "--output", str(run / output)]) == 2
        one_error_line(capsys.readouterr().err, "inside the run directory", str(run), f"--output {str(run / output)!r}")
    monkeypatch.chdir(run)
    assert train.main([str(data), *FAST]) == 2
    one_error_line(capsys.readouterr().err, "inside the run directory", "default run directory")
    assert _snapshot(run) == before


def test_a_class_called_runs_and_a_data_set_metadata_file_are_still_data(tmp_path, make_image, capsys):
    data = _data(tmp_path / "data", make_image, classes=("runs", "logs"))
    (data / "runs" / rd.METADATA_FILE).write_text("{}")  # a data set's own metadata, no config.json: not a run
    assert train.main([str(data), "--check"]) == 0
    assert "runs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the run directory inside the data


@pytest.mark.parametrize("output", ["data/run", "data", "data/cats/run"])
def test_an_output_inside_the_data_folder_is_refused_before_any_work(tmp_path, make_image, capsys, output):
    data = _data(tmp_path / "data", make_image)
    before = _snapshot(data)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / output)]) == 2
    place = "the data folder itself" if output == "data" else "inside the data folder"
    one_error_line(capsys.readouterr().err, place, f"Received: --output {str(tmp_path / output)!r}", "outside")
    assert _snapshot(data) == before


def test_the_default_run_directory_of_a_command_started_in_the_data_folder_is_refused(
        tmp_path, make_image, capsys, monkeypatch):
    data = _data(tmp_path / "data", make_image)
    monkeypatch.chdir(data)
    assert train.main([".", *FAST]) == 2
    one_error_line(capsys.readouterr().err, "the default run directory", "Run the command from another folder")
    assert not (data / "runs").exists()


def test_an_output_beside_the_data_folder_is_not_inside_it(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "data")
    config = TrainConfig(data_dir=str(tmp_path / "data"))
    refuse_output_inside_data(config, tmp_path / "data-run", typed=True)  # a shared prefix is not inside
    refuse_output_inside_data(config, tmp_path / "runs", typed=False)
    with pytest.raises(UserError, match="inside the data folder"):  # through a symlink, still inside
        refuse_output_inside_data(config, tmp_path / "linked" / "run", typed=True)
    meta = TrainConfig(data_dir=str(tmp_path / "data"), meta_data=str(tmp_path / "source"))
    with pytest.raises(UserError, match=r"\(--meta-data "):
        refuse_output_inside_data(meta, tmp_path / "source" / "run", typed=True)


# ----------------------------------------------------------------------------- split layouts


@pytest.mark.parametrize("splits", [("val", "test"), ("val",)])
def test_a_split_layout_without_training_files_is_refused_before_the_run_directory(
        tmp_path, make_image, capsys, splits):
    """Only val/ and test/ (or an empty train/): a traceback ("buffer_size must be greater than zero") after the
    run directory was made, left INCOMPLETE."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for split in splits:
        _data(data / split, make_image)
    assert train.main([str(data), *FAST, "--output", str(tmp_path / "new")]) == 2
    one_error_line(capsys.readouterr().err, "train/ holds no usable file", "DATA_DIR/train/<class>/<files>")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("folders,renames", [
    (("Train", "Test"), "Rename Test/ to test/, Train/ to train/"),  # a download's capitalised splits
    (("train", "validation"), "Rename validation/ to val/"),  # was told to rename its class folder `train`
    (("training", "valid", "testing"), "testing/ to test/, training/ to train/, valid/ to val/"),
])
def test_split_folders_spelt_otherwise_are_refused_with_their_renames(tmp_path, make_image, folders, renames):
    for folder in folders:
        _data(tmp_path / folder, make_image, per_class=1)
    with pytest.raises(DataError, match="spelt otherwise") as error:
        scan_folder(tmp_path, check_files_content=False, quiet=True)
    assert renames in str(error.value)


def test_classes_that_only_resemble_split_names_stay_classes(tmp_path, make_image):
    _data(tmp_path, make_image, classes=("valid", "invalid"), per_class=1)
    scan = scan_folder(tmp_path, check_files_content=False, quiet=True)
    assert (scan.layout, scan.class_names) == ("flat", ["invalid", "valid"])


@pytest.mark.parametrize("target", ["data", "nowhere"])
def test_a_data_folder_link_that_leads_nowhere_is_not_called_missing(tmp_path, target):
    """A link to itself (a loop) or to a missing folder was told "Data folder does not exist"."""
    (tmp_path / "data").symlink_to(tmp_path / target)
    with pytest.raises(DataError, match=rf"symbolic link that leads to no folder.* a link to '{tmp_path / target}'"):
        scan_folder(tmp_path / "data")


# ----------------------------------------------------------------------------- class folders linked to each other


@pytest.mark.parametrize("split", [None, "train"])
def test_two_class_folders_that_are_one_folder_are_refused(tmp_path, make_image, split):
    """The same files under two labels trained with only a duplicates warning: a class the model cannot learn."""
    root = tmp_path / split if split else tmp_path
    _data(root, make_image, classes=("cats", "dogs"))
    (root / "kittens").symlink_to(root / "cats", target_is_directory=True)
    with pytest.raises(DataError, match=r"The class folders 'cats', 'kittens'.* are one folder \('kittens' is a link"):
        scan_folder(tmp_path, check_files_content=False, quiet=True)


# ----------------------------------------------------------------------------- --config


def test_config_given_a_run_directory_is_told_to_pass_its_config_json(tmp_path, make_image):
    run = _fake_run(tmp_path / "run", make_image)
    with pytest.raises(UserError, match=r"is a folder, not a file") as error:
        config_from_args(["--config", str(run)])  # was: "must be YAML ... Received the extension '(none)'"
    assert f"--config {run / rd.CONFIG_FILE} --output NEW_DIR" in str(error.value)
    with pytest.raises(UserError, match=r"is a folder, not a file") as error:
        config_from_args(["--config", str(tmp_path)])
    assert "repeat" not in str(error.value)


@pytest.mark.parametrize("text,written", [("epochs: 1e3", "1000"), ("seed: 7.0", "7")])
def test_a_whole_number_written_as_a_float_is_told_how_to_write_it(tmp_path, text, written):
    path = tmp_path / "run.yaml"
    path.write_text(f"data_dir: {tmp_path}\n{text}\n")
    with pytest.raises(UserError, match=rf"must be an integer \(written without a decimal point or exponent: "
                                        rf"{written}\)"):
        config_from_args(["--config", str(path)])
