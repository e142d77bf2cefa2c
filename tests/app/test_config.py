import dataclasses
import json
import os
from pathlib import Path
import re
from pathlib import Path

import pytest

from app.config import TrainConfig
from app.config_cli import build_parser, config_from_args
from app.errors import UserError


def test_cli_flags_map_to_config_and_round_trip_through_dict():
    config, modes = config_from_args(["data", "--epochs", "3", "--learning-rate", "0.01", "--image-size", "64"])
    assert modes.check is False
    assert (config.data_dir, config.epochs, config.learning_rate, config.image_size) == (os.path.abspath("data"), 3, 0.01, 64)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_every_field_has_help_text():
    help_text = build_parser().format_help()
    for flag in ("--backbone", "--val-fraction", "--batch-size", "--seed", "--patience"):
        assert flag in help_text


@pytest.mark.parametrize("key,value", [("epochs", 0), ("val_fraction", 1.5), ("learning_rate", -1.0),
                                       ("dropout", 1.0), ("image_size", 4), ("mixup", 1.5),
                                       ("mixup", -0.2), ("pair_loss", -0.5), ("pair_loss", float("inf")),
                                       ("output", ""), ("output", "  "), ("seed", -1), ("seed", 2**32),
                                       ("batch_size", 10**20), ("epochs", 2**31)])
def test_invalid_values_name_the_key_and_value(key, value):
    with pytest.raises(UserError, match=f"{key}={value!r}"):
        TrainConfig.from_dict({"data_dir": "d", key: value})


@pytest.mark.parametrize("key", ["meta_data", "init", "backbone"])
def test_an_empty_path_is_refused_not_taken_as_left_out(key):
    """--meta-data "" (a script's unset variable) meta-trained on the target's own split, --init "" started from
    scratch and --backbone "" took the default backbone, each without a word; now refused as --output "" is."""
    for value in ("", "  "):
        with pytest.raises(UserError, match=f"{key} must be .* or left out .*Received: {key}={value!r}"):
            TrainConfig.from_dict({"data_dir": "d", "strategy": "protonet", key: value})
    with pytest.raises(UserError, match=f"{key}=''"):
        config_from_args(["d", "--strategy", "protonet", f"--{key.replace('_', '-')}", ""])


@pytest.mark.parametrize("key,value,strategy", [("unfreeze", "²", "finetune"), ("adapt", "²", "reptile"),
                                                ("exclude_label_issues", "③", "linear")])
def test_counts_given_as_text_take_ascii_digits_only(key, value, strategy):
    """'²'.isdigit() is true: --unfreeze ² was int()'s traceback, --adapt ² and --exclude-label-issues ③ passed
    validation to fail later."""
    with pytest.raises(UserError, match=f"{key}={value!r}"):
        TrainConfig.from_dict({"data_dir": "d", "strategy": strategy, key: value})


def test_adapt_is_refused_where_there_is_no_inner_loop():
    """--adapt was ignored without a word with protonet or a transfer strategy."""
    for strategy in ("protonet", "linear", "finetune"):
        with pytest.raises(UserError, match="adapt applies to --strategy reptile, fomaml or maml"):
            TrainConfig.from_dict({"data_dir": "d", "strategy": strategy, "adapt": "all"})
    assert TrainConfig.from_dict({"data_dir": "d", "strategy": "maml", "adapt": "2"}).adapt == "2"


def test_unknown_keys_are_rejected():
    with pytest.raises(UserError, match="epoch_count"):
        TrainConfig.from_dict({"data_dir": "d", "epoch_count": 3})


# ---------------------------------------------------------------- value types (config files arrive untyped)

@pytest.mark.parametrize("key,value", [("epochs", 2.5), ("epochs", "ten"), ("epochs", True), ("augment", "yes"),
                                       ("augment", 1), ("learning_rate", True), ("learning_rate", "0.1"),
                                       ("learning_rate", float("nan")), ("image_size", "64"), ("backbone", 3),
                                       ("data_dir", None), ("unfreeze", 2.0)])
def test_values_of_the_wrong_type_are_rejected_with_key_value_and_expected_type(key, value):
    with pytest.raises(UserError, match=rf"{key} must be .*Received: {key}={re.escape(repr(value))}"):
        TrainConfig.from_dict({"data_dir": "d", key: value})


def test_accepted_types_are_normalised():
    config = TrainConfig.from_dict({"data_dir": "d", "learning_rate": 1, "image_size": None, "backbone": None,
                                    "unfreeze": 3, "augment": False})
    assert isinstance(config.learning_rate, float) and config.learning_rate == 1.0
    assert (config.image_size, config.backbone, config.unfreeze, config.augment) == (None, None, "3", False)


# ---------------------------------------------------------------- --config FILE

def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_yaml_file_sets_values_and_typed_flags_override_it(tmp_path):
    path = write(tmp_path / "run.yaml", "data_dir: from_file\nepochs: 5\nbatch_size: 8\nlearning_rate: 1e-3\n"
                                        "augment: false\nunfreeze: 3\n")
    config, modes = config_from_args(["--config", path, "--epochs", "7"])
    assert (config.data_dir, config.epochs, config.batch_size) == (os.path.abspath("from_file"), 7, 8)
    # PyYAML alone reads 1e-3 as a string; the loader reads it as the float everyone means.
    assert (config.learning_rate, config.augment, config.unfreeze) == (0.001, False, "3")
    assert (modes.check, modes.resume) == (False, None)


def test_a_flag_typed_at_its_default_value_still_overrides_the_file(tmp_path):
    path = write(tmp_path / "run.yml", "data_dir: d\nbatch_size: 8\naugment: false\n")
    config, _ = config_from_args(["--config", path, "--batch-size", "32", "--augment"])
    assert (config.batch_size, config.augment) == (32, True)


def test_positional_data_dir_overrides_the_file(tmp_path):
    path = write(tmp_path / "run.json", json.dumps({"data_dir": "from_file", "seed": 1}))
    config, _ = config_from_args(["from_cli", "--config", path])
    assert (config.data_dir, config.seed) == (os.path.abspath("from_cli"), 1)


def test_missing_data_dir_everywhere_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="DATA_DIR"):
        config_from_args([])
    path = write(tmp_path / "run.yaml", "epochs: 3\n")
    with pytest.raises(UserError, match=r"DATA_DIR.*run\.yaml.*sets no data_dir"):
        config_from_args(["--config", path])


def test_resolved_config_json_reruns_the_same_configuration(tmp_path):
    original = TrainConfig.from_dict({
        "data_dir": "some/data", "backbone": "tiny_image", "strategy": "finetune", "weights": "none",
        "output": "runs/old", "image_size": 32, "hidden_units": 8, "epochs": 3, "unfreeze": "all",
        "learning_rate": 0.01, "augment": False, "cache_features": False, "precision": "float32",
        "balanced_sampler": True, "seed": 7,
    })
    path = tmp_path / "config.json"
    path.write_text(json.dumps(original.to_dict(), indent=2))
    config, _ = config_from_args(["--config", str(path), "--output", "x"])
    assert config == dataclasses.replace(original, output="x", data_dir=os.path.abspath("some/data"))


@pytest.mark.parametrize("text,received", [
    ("epochs: ten", "epochs='ten'"),
    ("epochs: 2.5", "epochs=2.5"),
    ('augment: "yes"', "augment='yes'"),
    ("learning_rate: -1", "learning_rate=-1"),
    ("strategy: bogus", "strategy='bogus'"),
    ("image_size: .inf", "image_size=inf"),
    # An integer past float's range was an OverflowError traceback.
    (f"learning_rate: {'1' * 400}", f"learning_rate={'1' * 40}..."),
])
def test_invalid_file_values_name_the_file_key_value_and_what_is_valid(tmp_path, text, received):
    path = write(tmp_path / "bad.yaml", f"data_dir: d\n{text}\n")
    with pytest.raises(UserError) as error:
        config_from_args(["--config", path])
    message = str(error.value)
    assert "bad.yaml" in message and f"Received: {received}" in message
    assert "must be" in message


def test_an_invalid_flag_value_is_not_blamed_on_the_file(tmp_path):
    path = write(tmp_path / "ok.yaml", "data_dir: d\nepochs: 5\n")
    with pytest.raises(UserError, match=r"^Invalid configuration: epochs must be at least 1\. Received: epochs=0$"):
        config_from_args(["--config", path, "--epochs", "0"])


def test_unknown_file_key_suggests_the_closest_valid_one(tmp_path):
    path = write(tmp_path / "typo.yaml", "data-dir: d\nepoch: 3\n")
    with pytest.raises(UserError) as error:
        config_from_args(["--config", path])
    message = str(error.value)
    assert "typo.yaml" in message
    assert "'epoch' (did you mean 'epochs'?)" in message and "'data-dir' (did you mean 'data_dir'?)" in message
    assert "Valid keys: data_dir, backbone" in message


@pytest.mark.parametrize("name,text,expected", [
    ("list.yaml", "- epochs\n- 3\n", r"must hold a mapping.*Received: \['epochs', 3\] \(list\)"),
    ("scalar.json", "3", r"must hold a mapping.*Received: 3 \(int\)"),
    ("broken.yaml", "epochs: [1\nstrategy: linear\n",
     r"could not be read as YAML: line 2, column 9: expected ',' or '\]', but got ':' \(while parsing a flow "
     r"sequence that starts at line 1, column 9\)\. Fix the file"),
    ("tab.yaml", "a: 1\n\tb: 2\n", r"could not be read as YAML: line 2, column 1: found character '\\t'"),
    ("broken.json", '{"epochs": 3,}', r"could not be read as JSON"),
    ("run.toml", "epochs = 3", r"must be YAML \(\.yaml, \.yml\) or JSON \(\.json\)\. Received the extension '\.toml'"),
])
def test_unreadable_files_are_clear_errors_naming_the_path(tmp_path, name, text, expected):
    path = write(tmp_path / name, text)
    with pytest.raises(UserError, match=expected) as error:
        config_from_args(["d", "--config", path])
    assert name in str(error.value)
    assert "\n" not in str(error.value)  # one ERROR line, PyYAML's multi-line messages included


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"Config file not found: .*nope\.yaml"):
        config_from_args(["d", "--config", str(tmp_path / "nope.yaml")])
    (tmp_path / "settings.yaml").mkdir()  # it exists: "not found" was wrong
    with pytest.raises(UserError, match=r"Config file is a folder, not a file: .*settings\.yaml"):
        config_from_args(["d", "--config", str(tmp_path / "settings.yaml")])


def test_an_empty_yaml_file_sets_nothing(tmp_path):
    path = write(tmp_path / "empty.yaml", "# nothing yet\n")
    config, _ = config_from_args(["d", "--config", path])
    assert config == TrainConfig(data_dir=os.path.abspath("d"))


# ---------------------------------------------------------------- --resume RUN_DIR

@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(data_dir="data", output=str(run), epochs=4, augment=False)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    return run, config


def test_resume_reads_the_runs_own_config(run_dir):
    run, saved = run_dir
    config, modes = config_from_args(["--resume", str(run)])
    assert config == saved
    assert (modes.resume, modes.check, modes.list_backbones) == (str(run), False, False)


@pytest.mark.parametrize("extra,received,options", [
    (["--epochs", "3"], "Received: --epochs 3", "--epochs 3"),
    (["data"], "Received: data", "data"),
    (["--config", "x.yaml"], "Received: --config x.yaml", "OPTIONS"),
    (["--no-augment", "--check"], "Received: --no-augment --check", "--no-augment"),
    (["--distribute", "mirrored"], "Received: --distribute mirrored", "--distribute mirrored"),
])
def test_resume_takes_no_other_options(run_dir, extra, received, options):
    run, _ = run_dir
    with pytest.raises(UserError, match="it takes no other options") as error:
        config_from_args(["--resume", str(run), *extra])
    assert f"{received}. Continue it with python train.py --resume {run} alone" in str(error.value)
    # What to do to change them (other devices: --distribute): a new run from the run's config.json.
    assert str(error.value).endswith(f"python train.py --config {run}/config.json {options} --output NEW_DIR")


def test_resume_of_a_missing_run_or_config_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"Run directory not found: .*missing"):
        config_from_args(["--resume", str(tmp_path / "missing")])
    with pytest.raises(UserError, match=r"has no config\.json"):
        config_from_args(["--resume", str(tmp_path)])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"afile' is a file, not a run directory"):
        config_from_args(["--resume", str(tmp_path / "afile")])


def test_resume_validates_the_saved_config(run_dir):
    run, saved = run_dir
    (run / "config.json").write_text(json.dumps(saved.to_dict() | {"epochs": "four"}))
    with pytest.raises(UserError, match=r"config\.json.*Received: epochs='four'"):
        config_from_args(["--resume", str(run)])


def test_resume_of_a_run_whose_config_json_is_damaged_says_how_to_go_on(run_dir):
    """It said to fix the file or pass the settings as flags, which --resume refuses."""
    run, saved = run_dir
    (run / "config.json").write_text(json.dumps(saved.to_dict())[:40])  # truncated
    with pytest.raises(UserError) as error:
        config_from_args(["--resume", str(run)])
    message = str(error.value)
    assert "could not be read as JSON" in message and "pass the settings as flags" not in message
    assert "restore" in message and "from a backup, or start a new run" in message
    assert message.endswith(f"Received: --resume {run}")


def test_list_backbones_needs_nothing_else():
    config, modes = config_from_args(["--list-backbones"])
    assert config is None and modes.list_backbones and modes.resume is None


def test_the_shipped_small_images_recipe_loads_and_flags_still_override_it():
    recipe = Path(__file__).resolve().parents[2] / "configs" / "finetune_small_images.yaml"
    config, _ = config_from_args(["data", "--config", str(recipe)])
    assert (config.strategy, config.unfreeze, config.finetune_learning_rate, config.lr_decay, config.mixup) == (
        "finetune", "all", 3e-4, 0.8, 0.2)
    assert config.augment  # MixUp comes on top of the default augmentation
    overridden, _ = config_from_args(["data", "--config", str(recipe), "--mixup", "0.4", "--unfreeze", "6"])
    assert (overridden.mixup, overridden.unfreeze, overridden.lr_decay) == (0.4, "6", 0.8)


@pytest.mark.parametrize("strategy, modality, per_class, expected", [
    ("finetune", "image", 80, ("all", 3e-4, 0.8, 0.2)),  # the recipe that won the transfer benchmark
    ("finetune", "image", 8, ("2", 1e-4, 0.5, 0.0)),  # too few files per class for the whole backbone
    ("finetune", "text", 80, ("2", 1e-4, 0.5, 0.0)),
    ("protonet", "image", 80, ("2", 1e-4, 0.5, 0.0)),  # --unfreeze on raw inputs: two blocks, not the whole backbone
    ("linear", "text", 8, ("2", 1e-4, 0.5, 0.0)),
])
def test_finetune_options_left_unset_take_the_recipe_for_the_data(strategy, modality, per_class, expected):
    config = TrainConfig(data_dir="d", strategy=strategy).validate()
    filled = config.apply_modality_defaults(modality, per_class)
    values = (config.unfreeze, config.finetune_learning_rate, config.lr_decay, config.mixup)
    assert values == expected and set(filled) == {"unfreeze", "finetune_learning_rate", "lr_decay", "mixup"}
    assert TrainConfig.from_dict(config.to_dict()) == config  # config.json records the filled-in values


def test_finetune_options_the_user_gave_are_never_replaced():
    config, _ = config_from_args(["data", "--strategy", "finetune", "--unfreeze", "3", "--mixup", "0"])
    filled = config.apply_modality_defaults("image", 100)
    assert (config.unfreeze, config.mixup) == ("3", 0.0) and set(filled) == {"finetune_learning_rate", "lr_decay"}
    assert config.apply_modality_defaults("image") == {}  # a resumed run's config.json: nothing left to fill


def test_data_folders_are_recorded_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    config, _ = config_from_args(["data/train", "--meta-data", "link/source", "--strategy", "protonet"])
    # Relative to where train.py ran, symlinks kept: --resume, evaluate.py and export.py may run elsewhere.
    here = Path.cwd()  # tmp_path itself may lie behind a symlink (macOS /var)
    assert config.data_dir == str(here / "data" / "train")
    assert config.meta_data == str(here / "link" / "source")
    config, _ = config_from_args(["link/../data"])
    assert config.data_dir == str(here / "link" / ".." / "data")  # ".." after a link is the filesystem's to follow


def test_path_settings_are_recorded_as_absolute_paths_names_stay_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "metadata.json").write_text("{}")
    (tmp_path / "bert").mkdir()
    (tmp_path / "w.weights.h5").write_bytes(b"")
    config, _ = config_from_args(["d", "--backbone", "earlier", "--init", "earlier", "--strategy", "protonet"])
    assert config.backbone == str(here / "earlier") and config.init == str(here / "earlier")  # run directories
    config, _ = config_from_args(["d", "--backbone", "./bert", "--weights", "w.weights.h5"])
    assert config.backbone == str(here / "bert")  # a Hugging Face folder typed as a path
    assert config.weights == str(here / "w.weights.h5")  # an existing file
    config, _ = config_from_args(["d", "--backbone", "bert", "--weights", "imagenet"])
    assert (config.backbone, config.weights) == ("bert", "imagenet")  # a plain word that is no run: a name
    config, _ = config_from_args(["d", "--backbone", "resnet50", "--weights", "missing.h5"])
    assert (config.backbone, config.weights) == ("resnet50", "missing.h5")  # kept for the error that names it


def test_yaml_yes_and_no_unquoted_mean_the_choices(tmp_path):
    # YAML 1.1 reads `refit: no` as false: for a yes/no option that is what the writer meant.
    path = write(tmp_path / "run.yaml", "refit: no\ntarget_finetune: yes\nstrategy: protonet\n")
    config, _ = config_from_args(["d", "--config", path])
    assert (config.refit, config.target_finetune) == ("no", "yes")
    # Not a yes/no option: told its choices and why a word became false, not "must be a string".
    with pytest.raises(UserError, match=r"strategy must be one of linear, .*YAML reads an unquoted yes/no/on/off as "
                                        r"true/false.* Received: strategy=False"):
        config_from_args(["d", "--config", write(tmp_path / "other.yaml", "strategy: no\n")])
    with pytest.raises(UserError, match=r"distribute must be one of auto, none, mirrored, multi-worker;"):
        config_from_args(["d", "--config", write(tmp_path / "off.yaml", "distribute: off\n")])


@pytest.mark.parametrize("name,text,expected", [
    ("twice.yaml", "epochs: 3\nseed: 1\nepochs: 4\n",
     r"line 3, column 1: found the key 'epochs' a second time \(first at line 1\); keep one"),
    ("twice.json", '{"epochs": 3, "epochs": 4}', r"the key\(s\) 'epochs' appear more than once; keep one"),
])
def test_a_key_written_twice_is_refused_not_silently_the_last(tmp_path, name, text, expected):
    with pytest.raises(UserError, match=expected):
        config_from_args(["d", "--config", write(tmp_path / name, text)])


def test_a_byte_order_mark_is_skipped(tmp_path):
    for name, text in (("bom.json", '{"epochs": 3}'), ("bom.yaml", "epochs: 3\n")):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert config_from_args(["d", "--config", str(path)])[0].epochs == 3


def test_the_duplicate_key_check_keeps_yaml_merge_keys_and_refuses_unhashable_keys_cleanly(tmp_path):
    path = write(tmp_path / "merge.yaml", "defaults: &d {epochs: 3}\n")
    import yaml

    from app.config_file import _YamlLoader

    assert yaml.load("c: {<<: {a: 1}, b: 2}\n", Loader=_YamlLoader) == {"c": {"a": 1, "b": 2}}
    with pytest.raises(UserError, match="unknown|Unknown"):  # a mapping as such: its key is not an option
        config_from_args(["d", "--config", path])
    with pytest.raises(UserError, match=r"could not be read as YAML: line 1, column 3: found unhashable key"):
        config_from_args(["d", "--config", write(tmp_path / "list_key.yaml", "? [a, b]\n: 1\n")])
