"""`train.py --resume RUN_DIR` bug-bash: what a user does around a resume, not the crash-safety machinery
(tests/test_fault_injection.py). `--resume ''` resumed the run in the current folder and `--resume A --resume B`
resumed B alone; a data folder moved (config.json's data_dir set to its new place) was told its seed had been
edited; a changed data folder was not told which files changed; manifest.json deleted by hand let the run finish
without it (evaluate.py and export.py then refused it) and a manifest.json that is a JSON list was a traceback;
so was a `checkpoints` file; a run whose INCOMPLETE marker was removed by hand was called finished; a config.json of
a newer metatune (or a model folder's own config.json) was refused as a misspelt --config file; `--resume RUN --output
X` suggested a command with two --output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import train
from app import run_dir as rd
from app.checkpoints import Checkpoints
from app.config import TrainConfig
from app.config_cli import config_from_args
from app.errors import UserError
from colour_folders import write_colour_folder
from error_lines import one_error_line

OPTIONS = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "2", "--refit", "no", "--batch-size", "8",
           "--seed", "3", "--patience", "5"]


class Crash(BaseException):
    """Stands for the process dying here (nothing in metatune catches a BaseException)."""


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run killed once its first head epoch is checkpointed (before the second one's checkpoint)."""
    root = tmp_path_factory.mktemp("resume-inputs")
    data, run = write_colour_folder(root / "data"), root / "run"
    real = Checkpoints.save

    def dies_at_the_second_epoch(self, state, *args, **kwargs):
        if state.epoch >= 2:
            raise Crash()
        return real(self, state, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpoints, "save", dies_at_the_second_epoch)
        with pytest.raises(Crash):
            train.main([str(data), "--output", str(run), *OPTIONS])
    assert Checkpoints(run).latest().state.epoch == 1
    return run, data


def _copy(interrupted, tmp_path) -> tuple[Path, Path]:
    """The interrupted run and its data folder copied under tmp_path, as if the run had started there."""
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(interrupted[0], run)
    shutil.copytree(interrupted[1], data)
    _edit(run / rd.CONFIG_FILE, data_dir=str(data), output=str(run))
    _edit(run / rd.MANIFEST_FILE, root=str(data))
    return run, data


def _edit(path: Path, **values) -> None:
    payload = json.loads(path.read_text()) | values
    path.write_text(json.dumps({key: value for key, value in payload.items() if value is not None}))


def _refused(run: Path, capsys, *fragments: str) -> str:
    """The resume stops with one ERROR line (exit status 2), the run left INCOMPLETE and without a model."""
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err, *fragments)
    assert not (run / rd.MODEL_FILE).exists()
    return line


# ---------------------------------------------------------------- the command line

def test_an_empty_resume_is_a_usage_error_not_the_current_folder(tmp_path, monkeypatch, capsys):
    """`--resume "$RUN"` with RUN unset resumed whatever run the current folder was."""
    (tmp_path / rd.CONFIG_FILE).write_text(json.dumps(TrainConfig(data_dir="d").to_dict()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["--resume", ""])
    assert exit_.value.code == 2
    assert "argument --resume: is empty. Received: ''" in capsys.readouterr().err


def test_two_different_resumes_are_a_usage_error_and_the_same_one_twice_is_not(tmp_path, capsys):
    """`--resume A --resume B` resumed B without a word about A."""
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.CONFIG_FILE).write_text(json.dumps(TrainConfig(data_dir="d").to_dict()))
    with pytest.raises(SystemExit) as exit_:
        config_from_args(["--resume", str(tmp_path / "other"), "--resume", str(run)])
    assert exit_.value.code == 2
    assert "argument --resume: given twice" in capsys.readouterr().err
    assert config_from_args(["--resume", str(run), "--resume", str(run)])[1].resume == str(run)


def test_resume_with_output_suggests_one_output(tmp_path):
    """The suggestion read `python train.py --config RUN/config.json --output RUN --output NEW_DIR`."""
    with pytest.raises(UserError) as error:
        config_from_args(["--resume", "RUN", "--output", "RUN", "--epochs", "3"])
    message = str(error.value)
    assert "Received: --output RUN --epochs 3" in message
    assert message.endswith("python train.py --config RUN/config.json --epochs 3 --output NEW_DIR")


@pytest.mark.parametrize("edit, fragments", [
    ({"future_option": 3}, ["has setting(s) this metatune does not know: future_option", "newer metatune"]),
    ({"data_dir": None}, ["names no data_dir"]),  # it said "data_dir is required" without naming the file
])
def test_a_config_json_this_metatune_cannot_continue_names_the_file(tmp_path, edit, fragments):
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.INCOMPLETE_MARKER).write_text("")
    (run / rd.CONFIG_FILE).write_text(json.dumps(TrainConfig(data_dir="d").to_dict()))
    _edit(run / rd.CONFIG_FILE, **edit)
    with pytest.raises(UserError) as error:
        config_from_args(["--resume", str(run)])
    message = str(error.value)
    assert str(run / rd.CONFIG_FILE) in message and message.endswith(f"Received: --resume {run}")
    assert all(fragment in message for fragment in fragments), message


def test_a_model_folder_with_a_config_json_of_its_own_is_not_taken_for_a_newer_run(tmp_path):
    """A Hugging Face model folder (its own config.json) passed to --resume is not "a newer metatune's run"."""
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / rd.CONFIG_FILE).write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 16}))
    with pytest.raises(UserError) as error:
        config_from_args(["--resume", str(folder)])
    message = str(error.value)
    assert f"{str(folder)!r} is not a metatune run directory" in message and "architectures" in message
    assert "newer metatune" not in message


def test_a_config_json_of_an_older_metatune_without_some_keys_takes_their_defaults(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.CONFIG_FILE).write_text(json.dumps({"data_dir": "d", "epochs": 4}))
    config, _ = config_from_args(["--resume", str(run)])
    assert config == TrainConfig(data_dir="d", epochs=4)


# ---------------------------------------------------------------- the run directory and its data

def test_a_moved_data_folder_named_in_config_json_resumes_and_manifest_names_it(interrupted, tmp_path, capsys):
    """The same files under another folder were told "its config.json's seed, val_fraction or test_fraction were
    changed"; now the split continues, and manifest.json (where export.py finds the held-out files) names the new
    folder, its own entries kept as they were."""
    run, data = _copy(interrupted, tmp_path)
    moved = tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    data.rename(moved)
    before = json.loads((run / rd.MANIFEST_FILE).read_text())
    _refused(run, capsys, "The data folder this run trained on is gone", "setting data_dir in that config.json")
    _edit(run / rd.CONFIG_FILE, data_dir=str(moved))
    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    after = json.loads((run / rd.MANIFEST_FILE).read_text())
    assert after == before | {"root": str(moved)}
    assert json.loads((run / rd.METADATA_FILE).read_text())["data_dir"] == str(moved)
    assert [e["epoch"] for e in json.loads((run / rd.HISTORY_FILE).read_text())["epochs"]] == [1, 2]


def test_a_changed_data_folder_says_which_files_changed(interrupted, tmp_path, capsys):
    """It said "files added, removed or edited", leaving thousands of files to compare by hand."""
    run, data = _copy(interrupted, tmp_path)
    shutil.copy(data / "red" / "0.png", data / "red" / "new.png")
    (data / "blue" / "1.png").rename(data / "blue" / "renamed.png")
    (data / "green" / "2.png").write_bytes((data / "green" / "3.png").read_bytes())
    manifest = (run / rd.MANIFEST_FILE).read_bytes()
    _refused(run, capsys, "2 file(s) added, e.g. 'blue/renamed.png', 'red/new.png'",
             "1 file(s) removed, e.g. 'blue/1.png'", "1 file(s) edited, e.g. 'green/2.png'", "Put the files back")
    assert (run / rd.MANIFEST_FILE).read_bytes() == manifest


def test_a_manifest_json_deleted_by_hand_is_refused_before_training(interrupted, tmp_path, capsys):
    """The split went unchecked and the run completed without manifest.json, which evaluate.py then refused."""
    run, _ = _copy(interrupted, tmp_path)
    (run / rd.MANIFEST_FILE).unlink()
    _refused(run, capsys, f"{str(run / rd.MANIFEST_FILE)!r} is missing", "Restore it from a backup")
    assert (run / rd.INCOMPLETE_MARKER).exists() and Checkpoints(run).latest().state.epoch == 1


def test_a_manifest_json_that_is_not_a_mapping_is_one_error_line(interrupted, tmp_path, capsys):
    """`[]` (valid JSON, another shape) was an AttributeError traceback."""
    run, _ = _copy(interrupted, tmp_path)
    (run / rd.MANIFEST_FILE).write_text("[]")
    _refused(run, capsys, f"{str(run / rd.MANIFEST_FILE)!r} is damaged (no list of files)")


def test_a_checkpoints_file_is_one_error_line(interrupted, tmp_path, capsys):
    """It trained the first epoch, then stopped with a FileExistsError traceback."""
    run, _ = _copy(interrupted, tmp_path)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")
    _refused(run, capsys, "checkpoints' is a file, not the run's checkpoints folder")
    assert (run / "checkpoints").read_text() == "not a folder"


def test_a_run_whose_marker_was_removed_by_hand_is_not_called_finished(interrupted, tmp_path, capsys):
    run, _ = _copy(interrupted, tmp_path)
    (run / rd.INCOMPLETE_MARKER).unlink()
    line = _refused(run, capsys, "model.keras and metadata.json are missing, so it is not a finished one",
                    f"create an empty {str(run / rd.INCOMPLETE_MARKER)!r} and resume again")
    assert "is a finished run" not in line
