"""`train.py --config FILE` and run reproducibility bug-bash.

A run's config.json records values the run resolved, not only those the user chose: the backbone's weights (a
reused run's `run:<digest>`) and input size, and the finetune recipe filled in for its strategy. Given back with
`--config RUN/config.json` and another `--backbone` or `--strategy` typed, they stayed: `--backbone OTHER_RUN` was
refused for a "--weights none" no one typed, another backbone was refused the `run:` record as a weights file (or
trained from scratch at the old backbone's size), and `--strategy finetune` over a linear run's record trained the
small-set recipe on any data set. A run's metadata.json passed for its config.json was told its keys were unknown,
with did-you-means that led nowhere, and an unquoted date or number for a text option was refused without saying
that YAML had read it so. Also checked: the same command (or a run's config.json) trains the same model bit for bit,
file and flag values are refused alike, flags win over the file, and --config does not go with --resume.
"""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pytest

import train
from app import run_dir as rd
from app.config_cli import config_from_args
from app.errors import UserError
from colour_folders import write_colour_folder
from error_lines import one_error_line

OPTIONS = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "2", "--batch-size", "8", "--seed", "5",
           "--refit", "no"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A finished linear run on a tiny colour folder: (run directory, data folder)."""
    root = tmp_path_factory.mktemp("config-file")
    data, run = write_colour_folder(root / "data"), root / "first"
    assert train.main([str(data), *OPTIONS, "--output", str(run)]) == 0
    return run, data


def _weights(run) -> list[np.ndarray]:
    return keras.saving.load_model(run / rd.MODEL_FILE, safe_mode=True, compile=False).get_weights()


def _warnings(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "app.config_cli")


# ---------------------------------------------------------------- reproducibility

def test_a_runs_config_json_repeats_it_bit_for_bit_and_the_run_records_seed_and_versions(first_run, tmp_path):
    run, _ = first_run
    again = tmp_path / "again"
    assert train.main(["--config", str(run / rd.CONFIG_FILE), "--output", str(again)]) == 0
    first, second = _weights(run), _weights(again)
    assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert rd.read_json(run / rd.HISTORY_FILE) == rd.read_json(again / rd.HISTORY_FILE)
    assert rd.read_json(run / rd.MANIFEST_FILE) == rd.read_json(again / rd.MANIFEST_FILE)  # the same split
    configs = rd.read_json(run / rd.CONFIG_FILE), rd.read_json(again / rd.CONFIG_FILE)
    assert configs[0] | {"output": None} == configs[1] | {"output": None}
    assert configs[1]["output"] == str(again.absolute())
    metadata = rd.read_json(run / rd.METADATA_FILE), rd.read_json(again / rd.METADATA_FILE)
    assert metadata[0]["metrics"]["val_loss"] == metadata[1]["metrics"]["val_loss"]
    assert metadata[0]["seed"] == metadata[1]["seed"] == 5 == configs[0]["seed"]
    assert {"python", "tensorflow", "keras", "numpy"} <= set(metadata[0]["versions"])
    # The README's "fully resolved configuration": every option is there, with the backbone's size filled in.
    assert configs[0]["image_size"] == 16 and configs[0]["weights"] == "none" and configs[0]["unfreeze"] == "2"


def test_a_runs_config_json_without_output_is_refused_not_written_over(first_run, capsys):
    run, _ = first_run
    before = (run / rd.MODEL_FILE).stat().st_mtime_ns
    capsys.readouterr()
    assert train.main(["--config", str(run / rd.CONFIG_FILE)]) == 2
    one_error_line(capsys.readouterr().err, "already exists", "--output NEW_DIR")
    assert (run / rd.MODEL_FILE).stat().st_mtime_ns == before


# ---------------------------------------------------------------- values recorded for a backbone or a strategy

def test_another_backbone_over_a_runs_config_leaves_that_backbones_weights_and_size_out(first_run, tmp_path, caplog):
    run, _ = first_run
    with caplog.at_level(logging.WARNING, logger="app.config_cli"):
        config, _ = config_from_args(["--config", str(run / rd.CONFIG_FILE), "--backbone", "efficientnet_lite0",
                                      "--output", str(tmp_path / "new")])
    # Was weights='none' at 16 px: efficientnet_lite0 trained from scratch on tiny_image's input size.
    assert config.weights is None and config.image_size is None
    warning = _warnings(caplog)
    assert "weights='none'" in warning and "image_size=16" in warning and "--weights none --image-size 16" in warning
    # Typed as well, they win as any flag does, without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.config_cli"):
        config, _ = config_from_args(["--config", str(run / rd.CONFIG_FILE), "--backbone", "efficientnet_lite0",
                                      "--weights", "none", "--output", str(tmp_path / "new")])
    assert config.weights == "none" and config.image_size is None and "weights=" not in _warnings(caplog)


def test_a_run_directory_as_backbone_over_a_runs_config_trains_and_its_record_repeats(first_run, tmp_path, capsys):
    """Was refused: "--weights does not apply to --backbone RUN_DIR ... Received: --weights none", never typed."""
    run, _ = first_run
    reuse = tmp_path / "reuse"
    assert train.main(["--config", str(run / rd.CONFIG_FILE), "--backbone", str(run), "--output", str(reuse)]) == 0
    recorded = rd.read_json(reuse / rd.CONFIG_FILE)
    assert recorded["backbone"] == str(run) and recorded["weights"].startswith("run:")
    # That record typed back with its own run directory (relative here) keeps its weights record; another backbone
    # leaves it out (it was kept and read as a weights file: tiny_image ignores it, a real backbone refused it).
    same, _ = config_from_args(["--config", str(reuse / rd.CONFIG_FILE), "--backbone", str(run),
                                "--output", str(tmp_path / "a")])
    assert same.weights == recorded["weights"]
    other, _ = config_from_args(["--config", str(reuse / rd.CONFIG_FILE), "--backbone", "tiny_image",
                                 "--output", str(tmp_path / "b")])
    assert other.weights is None and other.image_size is None
    assert "Leave --weights out" not in capsys.readouterr().err


def test_another_strategy_over_a_runs_config_gets_its_own_recipe(first_run, tmp_path, caplog):
    run, _ = first_run
    with caplog.at_level(logging.WARNING, logger="app.config_cli"):
        config, _ = config_from_args(["--config", str(run / rd.CONFIG_FILE), "--strategy", "finetune",
                                      "--output", str(tmp_path / "new")])
    # The linear run's record held the recipe filled in for linear (top 2 blocks, no MixUp): on 100 images per
    # class finetune's own is the whole backbone with MixUp (TrainConfig.apply_modality_defaults).
    assert config.apply_modality_defaults("image", 100) == {"unfreeze": "all", "finetune_learning_rate": 3e-4,
                                                            "lr_decay": 0.8, "mixup": 0.2}
    assert "unfreeze='2'" in _warnings(caplog) and "--unfreeze 2" in _warnings(caplog)


def test_a_recipe_of_ones_own_keeps_its_values_under_another_backbone_and_strategy(tmp_path, caplog):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data_dir: d\nbackbone: tiny_image\nweights: none\nimage_size: 24\nstrategy: linear\n"
                      "unfreeze: 3\nmixup: 0.1\n")
    with caplog.at_level(logging.WARNING, logger="app.config_cli"):
        config, _ = config_from_args(["--config", str(recipe), "--backbone", "conv4", "--strategy", "finetune"])
    assert (config.weights, config.image_size, config.unfreeze, config.mixup) == ("none", 24, "3", 0.1)
    assert _warnings(caplog) == ""


# ---------------------------------------------------------------- messages

def test_another_file_of_a_run_is_named_with_the_config_json_to_pass(first_run, capsys):
    run, _ = first_run
    capsys.readouterr()
    assert train.main(["--config", str(run / rd.METADATA_FILE), "--output", "x"]) == 2
    line = one_error_line(capsys.readouterr().err, "metadata.json", f"--config {run / rd.CONFIG_FILE}")
    assert "did you mean" not in line  # was: 'class_names' (did you mean 'class_weight'?), ...


@pytest.mark.parametrize("text, fragment", [("output: 2024-01-01", "output: '2024-01-01'"),
                                            ("backbone: 123", "backbone: '123'")])
def test_an_unquoted_date_or_number_for_a_text_option_says_to_quote_it(tmp_path, text, fragment):
    path = tmp_path / "run.yaml"
    path.write_text(f"data_dir: d\n{text}\n")
    with pytest.raises(UserError, match="quote it") as error:
        config_from_args(["--config", str(path)])
    assert fragment in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("key, value", [("epochs", "0"), ("learning_rate", "2"), ("seed", "4294967296"),
                                        ("val_fraction", "1"), ("inner_steps", "101"), ("unfreeze", "0"),
                                        ("meta_batch_size", "2000"), ("reject_recall", "1")])
def test_file_and_flag_values_are_refused_alike(tmp_path, capsys, key, value):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), key: value if key == "unfreeze" else json.loads(value)}))
    flag = ["--" + key.replace("_", "-"), value]
    messages = []
    for argv in (["--config", str(path)], [str(tmp_path), *flag]):
        capsys.readouterr()
        assert train.main(argv) == 2
        messages.append(one_error_line(capsys.readouterr().err, key, value).split(": ", 2)[-1])
    # The same words after "Invalid configuration" (the file's adds where the value came from).
    assert messages[0] == messages[1]


def test_flags_win_over_the_file_and_data_dir_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data_dir: /nowhere\naugment: true\nepochs: 9\nseed: 3\nlearning_rate: 1e-2\n")
    config, _ = config_from_args([str(tmp_path), "--config", str(path), "--no-augment", "--epochs", "2"])
    assert (config.data_dir, config.augment, config.epochs, config.seed, config.learning_rate) == (
        str(tmp_path), False, 2, 3, 0.01)


def test_config_does_not_go_with_resume(first_run, capsys):
    run, _ = first_run
    capsys.readouterr()
    assert train.main(["--config", str(run / rd.CONFIG_FILE), "--resume", str(run)]) == 2
    one_error_line(capsys.readouterr().err, "takes no other options", f"--resume {run} alone")
