"""train.py's numeric and choice options at their edges (bug-bash): `--learning-rate 1e9` (or 1e30) trained the head to
finite losses of 1e9 (1e30) that the NaN guard never caught, and the run ended "complete" with a model answering at
random with full confidence; `--class-weight auto --balanced-sampler` corrected the imbalance twice (a class with 6
times fewer files weighed 6 times more) without a word; `val_fraction: 1` was told about the sum with the test
fraction, and a sum over 1 showed one of its two terms; `unfreeze: 2.5` was told it "must be a string or null";
`--val-fraction` / `--test-fraction` given for a folder with its own val/ / test/ were ignored without a word;
`--test-fraction 0.001` held out 1 file per class and said "0% of each class"; and the unknown-class detector's
warning told a user of --val-fraction 0.5 (or of a val/ folder) that "the validation split is about 20%"."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import train
from app.config import TrainConfig
from app.config_cli import config_from_args
from app.errors import UserError
from app.training import check_data, held_out_line
from app.unknown_selection import _warn_rejects_nothing
from error_lines import one_error_line

FAST = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "1"]


def _data(root, make_image, splits=("",), per_class=3):
    for split in splits:
        for c in ("cats", "dogs"):
            for i in range(per_class):
                make_image(root / split / c / f"{i}.png", color=(40 * i, 100 if c == "cats" else 200, 7))
    return root


# ----------------------------------------------------------------------------- learning rates past Adam's range

@pytest.mark.parametrize("flag,key", [("--learning-rate", "learning_rate"),
                                      ("--finetune-learning-rate", "finetune_learning_rate"),
                                      ("--meta-learning-rate", "meta_learning_rate")])
def test_an_adam_learning_rate_above_1_is_refused_before_any_run_directory(tmp_path, capsys, flag, key):
    data = tmp_path / "data"
    data.mkdir()
    strategy = ["--strategy", "protonet"] if key == "meta_learning_rate" else ["--strategy", "finetune"]
    assert train.main([str(data), *FAST, *strategy, flag, "1e9", "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, f"{key} must be at most 1", "Adam", f"Received: {key}=1000000000.0")
    assert not (tmp_path / "run").exists()


def test_a_learning_rate_of_1_is_still_taken_and_a_config_file_above_it_is_named(tmp_path):
    assert TrainConfig.from_dict({"data_dir": "d", "learning_rate": 1, "finetune_learning_rate": 1.0}).learning_rate == 1.0
    path = tmp_path / "run.yaml"
    path.write_text("data_dir: d\nlearning_rate: 1e30\n")
    with pytest.raises(UserError, match=r"in config file .*run\.yaml.*learning_rate must be at most 1.*1e\+30"):
        config_from_args(["--config", str(path)])


@pytest.mark.parametrize("flag,key,strategy", [("--hidden-units", "hidden_units", "linear"),
                                               ("--embedding-units", "embedding_units", "protonet")])
def test_a_layer_too_large_for_memory_is_refused_before_any_run_directory(tmp_path, capsys, flag, key, strategy):
    """--hidden-units 1000000000 computed every feature and ranked the label issues, then ran out of memory, leaving an
    INCOMPLETE run whose resume could only fail the same way."""
    data = tmp_path / "data"
    data.mkdir()
    assert train.main([str(data), *FAST, "--strategy", strategy, flag, "1000000000",
                       "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, f"{key} must be from", "to 65536", f"Received: {key}=1000000000")
    assert not (tmp_path / "run").exists()
    assert getattr(TrainConfig.from_dict({"data_dir": "d", key: 65536}).validate(), key) == 65536  # the bound is taken


# ----------------------------------------------------------------------------- imbalance corrected twice

def test_class_weight_auto_with_the_balanced_sampler_is_refused_from_flags_and_files(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    assert train.main([str(data), *FAST, "--class-weight", "auto", "--balanced-sampler",
                       "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "--class-weight auto and --balanced-sampler", "over-correct",
                   "Use one of them", "Received: class_weight='auto', balanced_sampler=True")
    assert not (tmp_path / "run").exists()
    path = tmp_path / "run.yaml"
    path.write_text("data_dir: d\nclass_weight: auto\nbalanced_sampler: true\n")
    with pytest.raises(UserError, match=r"in config file .*run\.yaml.*over-correct"):
        config_from_args(["--config", str(path)])
    # Each alone is fine, and a run started with both before (its config.json) is still resumed as it was.
    assert config_from_args(["d", "--balanced-sampler"])[0].balanced_sampler
    assert TrainConfig.from_dict({"data_dir": "d", "class_weight": "auto", "balanced_sampler": True}).balanced_sampler


# ----------------------------------------------------------------------------- split fractions

@pytest.mark.parametrize("values,received", [
    ({"val_fraction": 1}, "val_fraction must be in (0, 1). Received: val_fraction=1.0"),
    ({"val_fraction": 0.8, "test_fraction": 0.2}, "lower one of them. Received: val_fraction=0.8, test_fraction=0.2"),
    ({"val_fraction": 0.5, "test_fraction": 0.7}, "Received: val_fraction=0.5, test_fraction=0.7"),
])
def test_split_fractions_out_of_range_name_each_value_received(values, received):
    with pytest.raises(UserError) as caught:
        TrainConfig.from_dict({"data_dir": "d", **values})
    assert received in str(caught.value)


def test_a_fraction_given_for_a_split_the_folder_has_is_warned_about_not_ignored(tmp_path, make_image, caplog):
    data = _data(tmp_path / "data", make_image, splits=("train", "val", "test"), per_class=2)
    config = TrainConfig.from_dict({"data_dir": str(data), "val_fraction": 0.5, "test_fraction": 0.1})
    with caplog.at_level(logging.WARNING, logger="app.training"):
        check_data(config)
    said = caplog.text
    assert "--val-fraction 0.5 has no effect" in said and "own val/ split" in said
    assert "--test-fraction 0.1 has no effect" in said and "own test/ split" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.training"):  # the defaults: nothing was given, nothing to say
        check_data(TrainConfig.from_dict({"data_dir": str(data)}))
    assert "has no effect" not in caplog.text


def test_a_tiny_test_fraction_says_what_it_held_out_not_0_percent():
    scan = SimpleNamespace(splits_present=lambda: ["train"])
    line = held_out_line(TrainConfig(data_dir="d", test_fraction=0.001), scan, 2, files_per_class=6)
    assert "(0.1% of each class, at least 1 of every class with 3 files or more" in line and "(0%" not in line
    assert "(20% of each class" in held_out_line(TrainConfig(data_dir="d"), scan, 2, files_per_class=6)


def test_the_detector_warning_does_not_assume_the_default_validation_fraction(caplog):
    with caplog.at_level(logging.WARNING, logger="app.unknown_selection"):
        _warn_rejects_nothing(6, 0.95)
    assert "about 20%" not in caplog.text and "--val-fraction" in caplog.text and "--reject-recall 0.857" in caplog.text


# ----------------------------------------------------------------------------- text options given as numbers

@pytest.mark.parametrize("key,strategy", [("unfreeze", "finetune"), ("adapt", "reptile")])
def test_a_fractional_block_count_says_what_the_option_takes(key, strategy):
    with pytest.raises(UserError) as caught:
        TrainConfig.from_dict({"data_dir": "d", "strategy": strategy, key: 2.5})
    message = str(caught.value)
    assert "whole number" in message and "all" in message and f"Received: {key}=2.5" in message
    assert "a string" not in message


# ----------------------------------------------------------------------------- finetune's schedule

def test_a_warm_up_longer_than_the_patience_or_one_no_schedule_uses_is_warned_about():
    from app.phases import phase2_schedule_warning

    def warning(**values):
        return phase2_schedule_warning(TrainConfig(data_dir="d", strategy="finetune", **values))

    # --finetune-epochs 2147483647: a warm-up of 214 million epochs, the backbone trained at 1e-13 until --patience.
    huge = warning(finetune_epochs=2147483647, patience=1)
    assert "2.15e+08 epochs" in huge and "--patience 1" in huge and "--lr-schedule constant" in huge
    assert warning() is None and warning(finetune_epochs=100, patience=10) is None  # 10 epochs: within patience
    assert "--warmup-fraction 0.5 has no effect with --lr-schedule plateau" in warning(lr_schedule="plateau",
                                                                                         warmup_fraction=0.5)
    assert warning(lr_schedule="constant") is None
    assert phase2_schedule_warning(TrainConfig(data_dir="d", finetune_epochs=2147483647, patience=1)) is None  # linear


def test_an_imbalance_correction_finetune_phase_2_does_not_apply_is_said():
    """--class-weight auto / --balanced-sampler shape the head phase only; finetune's phase 2 was unweighted without a
    word."""
    from app.phases import phase2_imbalance_warning

    for values, given in (({"class_weight": "auto"}, "--class-weight auto"), ({"balanced_sampler": True},
                                                                              "--balanced-sampler")):
        warning = phase2_imbalance_warning(TrainConfig(data_dir="d", strategy="finetune", **values))
        assert warning and warning.startswith(given) and "phase 2" in warning
        assert phase2_imbalance_warning(TrainConfig(data_dir="d", strategy="linear", **values)) is None
    assert phase2_imbalance_warning(TrainConfig(data_dir="d", strategy="finetune")) is None
