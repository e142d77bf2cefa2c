import pytest

from app.config import TrainConfig, build_parser, config_from_args
from app.errors import UserError


def test_cli_flags_map_to_config_and_round_trip_through_dict():
    config, modes = config_from_args(["data", "--epochs", "3", "--learning-rate", "0.01", "--image-size", "64"])
    assert modes.check is False
    assert (config.data_dir, config.epochs, config.learning_rate, config.image_size) == ("data", 3, 0.01, 64)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_every_field_has_help_text():
    help_text = build_parser().format_help()
    for flag in ("--backbone", "--val-fraction", "--batch-size", "--seed", "--patience"):
        assert flag in help_text


@pytest.mark.parametrize("key,value", [("epochs", 0), ("val_fraction", 1.5), ("learning_rate", -1.0),
                                       ("dropout", 1.0), ("image_size", 4)])
def test_invalid_values_name_the_key_and_value(key, value):
    with pytest.raises(UserError, match=f"{key}={value!r}"):
        TrainConfig.from_dict({"data_dir": "d", key: value})


def test_unknown_keys_are_rejected():
    with pytest.raises(UserError, match="epoch_count"):
        TrainConfig.from_dict({"data_dir": "d", "epoch_count": 3})
