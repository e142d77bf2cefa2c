"""--unfreeze N above the backbone's block count: one WARNING before any work, and config.json records what trains.

It was capped silently (phase 2's INFO line only) and config.json kept the N. Checked on the steps before training
(the data doctor, the backbone, the run directory's files): no epoch needs to run for either."""

import logging
from contextlib import ExitStack

import pytest

from app import run_dir as rd
from app import training
from app.config import TrainConfig
from colour_folders import write_colour_folder


def _prepared(tmp_path, caplog, **options):
    config = TrainConfig(data_dir=str(tmp_path / "data"), backbone="tiny_image", image_size=16, **options).validate()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepared = training._prepare(config)
    # The cap's warning only (linear's --unfreeze gets app/unused_options.py's: tests/app/test_unused_options.py).
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "--unfreeze" in r.getMessage()
                and "no effect with --strategy" not in r.getMessage()]
    return config, prepared, warnings


def test_more_blocks_than_the_backbone_has_warns_once_and_config_json_records_what_trains(tmp_path, caplog):
    write_colour_folder(tmp_path / "data")
    config, prepared, warnings = _prepared(tmp_path, caplog, strategy="finetune", unfreeze="10",
                                           output=str(tmp_path / "run"))
    assert len(warnings) == 1, warnings
    assert "--unfreeze 10" in warnings[0] and "tiny_image has (2)" in warnings[0]  # what was asked, what there is
    with ExitStack() as locks:
        run = training._open_run_directory(config, prepared, None, locks)
    assert rd.read_json(run.run_dir / rd.CONFIG_FILE)["unfreeze"] == "2"


@pytest.mark.parametrize("options", [{"strategy": "finetune", "unfreeze": "2"}, {"strategy": "finetune",
                                                                                 "unfreeze": "all"},
                                     {"strategy": "linear", "unfreeze": "10"}])  # linear unfreezes nothing
def test_no_warning_where_nothing_is_capped(tmp_path, caplog, options):
    write_colour_folder(tmp_path / "data")
    config, _, warnings = _prepared(tmp_path, caplog, **options)
    assert warnings == [] and config.unfreeze == options["unfreeze"]
