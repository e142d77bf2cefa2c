"""Configuration and command-line leftovers: an empty .json --config got JSON's own "Expecting value: line 1
column 1 (char 0)" while an empty .yaml (and a `null` one, JSON's too) trained with every default without a word;
number flags took other scripts' digits (`--epochs ٣` trained 3 epochs) which a config file refuses;
`train.py DATA --check --distribute multi-worker` was refused for lacking --output though --check writes no run;
and each --resume repeated, as warnings, the unused-option warnings the run's start had given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
import predict
import train
from app import run_dir as rd
from app.checkpoints import Checkpoints
from app.config_cli import build_parser, config_from_args
from app.errors import UserError
from colour_folders import write_colour_folder
from error_lines import one_error_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    return write_colour_folder(tmp_path_factory.mktemp("leftovers") / "data")


def _one_line_exit_2(capsys, code: int, *fragments: str) -> str:
    assert code == 2
    return one_error_line(capsys.readouterr().err, *fragments)


# ---------------------------------------------------------------- 1. empty or non-mapping config files

@pytest.mark.parametrize("name, content, what", [
    ("run.json", b"", "is empty (no text)"),
    ("run.json", b"  \n\t\n", "is empty (only blank space)"),
    ("run.json", b"\xef\xbb\xbf", "is empty (no text)"),  # a byte-order mark alone
    ("run.yaml", b"", "is empty (no text)"),
    ("run.yml", b" \n\n", "is empty (only blank space)"),
])
def test_an_empty_config_file_is_one_error_line_saying_so(tmp_path, capsys, name, content, what):
    path = tmp_path / name
    path.write_bytes(content)
    line = _one_line_exit_2(capsys, train.main([str(tmp_path), "--config", str(path)]),
                            f"Config file {str(path)!r} {what}", "leave out --config to train with the defaults")
    assert "Expecting value" not in line and not any(tmp_path.glob("runs"))


@pytest.mark.parametrize("name, content, received", [
    ("run.json", "null", "Received: null"), ("run.yaml", "null\n", "Received: null"), ("run.yml", "~\n", "Received: null"),
    ("run.json", "[]", "Received: [] (list)"), ("run.yaml", "[]\n", "Received: [] (list)"),
    ("run.json", "3", "Received: 3 (int)"), ("run.yml", "2.5\n", "Received: 2.5 (float)"),
])
def test_a_config_file_of_null_a_list_or_a_number_is_refused(tmp_path, capsys, name, content, received):
    path = tmp_path / name
    path.write_text(content)
    _one_line_exit_2(capsys, train.main([str(tmp_path), "--config", str(path)]),
                     f"Config file {str(path)!r} must hold a mapping of option names to values", received)


def test_a_yaml_file_of_commented_out_settings_still_sets_nothing(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("# epochs: 5\n\n  # backbone: conv4\n")
    config, _ = config_from_args([str(tmp_path), "--config", str(path)])
    assert config.epochs == 100 and config.backbone is None


def test_an_emptied_config_json_of_a_run_gets_the_resume_advice(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.CONFIG_FILE).write_text("")
    _one_line_exit_2(capsys, train.main(["--resume", str(run)]), "is empty (no text)",
                     "The run cannot be resumed without it", f"--resume {run}")


# ---------------------------------------------------------------- 2. number flags in ASCII digits only

@pytest.mark.parametrize("script, argv, flag, value", [
    ("train", ["DATA", "--epochs", "٣"], "--epochs", "٣"),  # Arabic-Indic three
    ("train", ["DATA", "--image-size", "３２"], "--image-size", "３２"),  # full-width digits
    ("train", ["DATA", "--learning-rate", "١e-3"], "--learning-rate", "١e-3"),
    ("train", ["DATA", "--mixup", "٠.٥"], "--mixup", "٠.٥"),  # a float | None option
    ("evaluate", ["RUN", "DATA", "--episodes", "٣"], "--episodes", "٣"),
    ("evaluate", ["RUN", "DATA", "--episodes", "3", "--seed", "٧"], "--seed", "٧"),
    ("evaluate", ["RUN", "DATA", "--top-k", "٣"], "--top-k", "٣"),
    ("evaluate", ["RUN", "DATA", "--bootstrap", "٣"], "--bootstrap", "٣"),
    ("predict", ["RUN", "a.png", "--batch-size", "٣٢"], "--batch-size", "٣٢"),
    ("export", ["RUN", "--representative-files", "٥"], "--representative-files", "٥"),
])
def test_a_number_in_other_digits_is_refused_naming_the_flag_and_value(capsys, script, argv, flag, value):
    import export

    module = {"train": train, "evaluate": evaluate, "predict": predict, "export": export}[script]
    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    line = one_error_line(err, f"argument {flag}:", "ASCII digits 0-9", f"Received: {value!r}")
    assert err.strip().splitlines() == [line]


def test_ascii_numbers_negatives_and_exponents_still_parse():
    args = build_parser().parse_args(["DATA", "--epochs", "3", "--learning-rate", "1e-3", "--mixup", "0.5",
                                      "--dropout", "-0.1", "--seed", "-1"])  # validation refuses the last two, later
    assert (args.epochs, args.learning_rate, args.mixup, args.dropout, args.seed) == (3, 0.001, 0.5, -0.1, -1)
    args = evaluate.build_parser().parse_args(["RUN", "DATA", "--episodes", "600", "--seed", "-3", "--top-k", "2"])
    assert (args.episodes, args.seed, args.top_k) == (600, -3, 2)
    assert predict.build_parser().parse_args(["RUN", "a.png", "--batch-size", "64"]).batch_size == 64


def test_no_entry_script_parses_a_number_with_plain_int_or_float():
    """A new `type=int` option would take `٣` again: the scripts use app.cli's whole_number / number."""
    import export

    for parser in (build_parser(), evaluate.build_parser(), predict.build_parser(), export.build_parser()):
        kinds = [action.type for action in parser._actions]
        assert int not in kinds and float not in kinds, parser.prog


# ---------------------------------------------------------------- 3. --check under --distribute multi-worker

def test_check_with_multi_worker_needs_no_output_but_training_still_does(colour_data):
    config, modes = config_from_args([str(colour_data), "--check", "--distribute", "multi-worker"])
    assert modes.check and config.distribute == "multi-worker" and config.output is None
    with pytest.raises(UserError, match="distribute multi-worker needs --output RUN_DIR"):
        config_from_args([str(colour_data), "--distribute", "multi-worker"])


def test_check_with_multi_worker_and_an_unreachable_cluster_checks_the_data_and_exits(colour_data, tmp_path):
    """The other worker's port answers nothing: --check joins no cluster, so it must neither wait nor hang."""
    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:9"]}, "task": {"type": "worker", "index": 1}}
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "METATUNE_WORKERS_WAIT_S": "5",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), str(colour_data), "--check", "--distribute",
                             "multi-worker"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR" not in result.stderr and all(name in result.stdout for name in ("blue", "green", "red"))
    assert not any(tmp_path.iterdir())  # no run written


# ---------------------------------------------------------------- 4. unused-option warnings and --resume

class Crash(BaseException):
    """Stands for the process dying here (nothing in metatune catches a BaseException)."""


def test_a_resume_does_not_repeat_the_unused_option_warnings_as_warnings(colour_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real = Checkpoints.save

    def dies_at_the_second_epoch(self, state, *args, **kwargs):
        if state.epoch >= 2:
            raise Crash()
        return real(self, state, *args, **kwargs)

    monkeypatch.setattr(Checkpoints, "save", dies_at_the_second_epoch)
    with pytest.raises(Crash):
        train.main([str(colour_data), "--output", str(run), "--backbone", "tiny_image", "--image-size", "16",
                    "--epochs", "2", "--refit", "no", "--batch-size", "8", "--ways", "3", "--mixup", "0.2"])
    started = capsys.readouterr().err
    unused = [line for line in started.splitlines() if "has no effect" in line]
    assert len(unused) == 2 and all(" WARNING " in line for line in unused), started
    monkeypatch.setattr(Checkpoints, "save", real)

    assert train.main(["--resume", str(run)]) == 0
    resumed = capsys.readouterr().err
    assert not [line for line in resumed.splitlines() if " WARNING " in line and "no effect" in line], resumed
    once = [line for line in resumed.splitlines() if "As warned when this run started" in line]
    assert len(once) == 1 and " INFO " in once[0] and "--ways 3" in once[0] and "--mixup 0.2" in once[0]
    assert not (run / rd.INCOMPLETE_MARKER).exists()
