"""Meta strategies' inputs bug-bash: --inner-steps / --meta-batch-size without an upper bound (hours of graph
building, or a first batch deaf to Ctrl-C), another meta strategy's options ignored without a word, an --init run
whose learner does not fit refused only after the run directory was made, a run directory taken for a --meta-data
folder, a --meta-data folder inside the target folder, a meta phase's divergence sent to the head's learning rate,
and an episode refusal asking for fewer queries, which cannot help."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import train
from app import phases
from app import run_dir as rd
from app.config import MAX_INNER_STEPS, MAX_META_BATCH_SIZE, TrainConfig
from app.errors import UserError
from app.meta_training import META_LEARNER_FILE, check_init_fits
from app.source_stage import dense_embedding
from app.unused_options import unused_strategy_options_warning
from colour_folders import write_colour_folder
from error_lines import one_error_line
from models.meta import build_meta_learner

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}
EPISODES = ["--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "2",
            "--meta-epochs", "1", "--embedding-units", "8", "--epochs", "2", "--seed", "1"]
PROTONET = ["--backbone", "tiny_image", "--image-size", "16", "--strategy", "protonet", "--meta-input", "features"]


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory):
    """One small protonet run (features, an 8-unit embedding): 6 training files per class."""
    root = tmp_path_factory.mktemp("meta-inputs")
    data = write_colour_folder(root / "data", per_class=10, size=12, colours=COLOURS, seed=0)
    run = root / "run"
    assert train.main([str(data), *PROTONET, *EPISODES, "--refit", "no", "--output", str(run)]) == 0
    return {"root": root, "data": data, "run": run}


@pytest.mark.parametrize("key, largest", [("inner_steps", MAX_INNER_STEPS), ("meta_batch_size", MAX_META_BATCH_SIZE)])
def test_inner_steps_and_meta_batch_size_have_an_upper_bound(key, largest):
    TrainConfig.from_dict({"data_dir": "d", "strategy": "reptile", key: largest})
    with pytest.raises(UserError, match=f"{key} must be from 1 to {largest}.*Received: {key}={largest + 1}"):
        TrainConfig.from_dict({"data_dir": "d", "strategy": "reptile", key: largest + 1})


def test_a_million_inner_steps_is_one_error_before_any_work(tmp_path, capsys):
    """It built the unrolled inner loop for days (200 steps: 38 s and 2 MB a step on the tiniest model)."""
    assert train.main([str(tmp_path / "data"), "--strategy", "fomaml", "--inner-steps", "1000000",
                       "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "inner_steps must be from 1 to 100", "inner_steps=1000000")
    assert not (tmp_path / "run").exists()


def test_another_meta_strategys_options_are_named_in_one_warning():
    protonet = TrainConfig(data_dir="d", strategy="protonet", inner_steps=7, inner_learning_rate=0.5,
                           meta_step_size=0.5)
    warning = unused_strategy_options_warning(protonet, "image", "features")
    assert warning.startswith("--meta-step-size 0.5, --inner-learning-rate 0.5, --inner-steps 7 have no effect with "
                              "--strategy protonet: --meta-step-size applies to reptile;")
    reptile = TrainConfig(data_dir="d", strategy="reptile", meta_learning_rate=0.1, embedding_units=16)
    assert unused_strategy_options_warning(reptile, "image", "raw") == (
        "--meta-learning-rate 0.1, --embedding-units 16 have no effect with --strategy reptile: --meta-learning-rate "
        "applies to protonet, fomaml, maml; --embedding-units applies to the features input (on raw inputs the "
        "backbone is the embedding). The run goes on without them.")
    # What the strategy reads, the defaults, and --embedding-units over features: nothing to say.
    assert unused_strategy_options_warning(TrainConfig(data_dir="d", strategy="maml", inner_steps=3,
                                                       meta_learning_rate=0.1, embedding_units=16),
                                           "image", "features") is None
    assert unused_strategy_options_warning(TrainConfig(data_dir="d", strategy="reptile"), "image", "raw") is None


def test_the_warning_comes_before_the_episode_check_which_asks_only_for_what_can_help(tmp_path, capsys):
    """6 training files per class cannot give 6 shots and a query: the refusal asked for shots + --queries files
    and to lower --queries, though the queries are fitted down to 1 anyway."""
    data = write_colour_folder(tmp_path / "data", per_class=10, size=12, colours=COLOURS, seed=0)
    assert train.main([str(data), *PROTONET, *EPISODES, "--shots", "6", "--inner-steps", "3",
                       "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--inner-steps 3 has no effect with --strategy protonet" in err
    one_error_line(err, "A 3-way 6-shot episode needs 3 classes with at least 7 files each (the shots and one query",
                   "Too small: 'blue' (6 files)", "Use fewer shots (--shots) or ways (--ways), or add files")
    assert "--queries)" not in err and not (tmp_path / "run").exists()


def test_an_init_run_whose_learner_does_not_fit_is_refused_before_the_run_directory(protonet_run, tmp_path, capsys):
    """It was refused after the feature pass, leaving an INCOMPLETE run whose --resume failed the same way."""
    run = protonet_run["run"]
    out = tmp_path / "run"
    assert train.main([str(protonet_run["data"]), *PROTONET, *EPISODES, "--embedding-units", "16",
                       "--init", str(run), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    one_error_line(err, f"--init {run}: its meta-learner does not fit this run's (--embedding-units 8 there, 16 "
                        "here)", "leave --init out")
    assert not out.exists() and "Features for" not in err


def _fake_meta_run(folder, strategy: str, ways: int, units: int):
    """A run directory holding only what --init reads: a saved (untrained) learner, config.json, metadata.json."""
    folder.mkdir()
    kwargs = {} if strategy == "protonet" else {"adapt": "all", "inner_steps": 1}
    learner = build_meta_learner(strategy, dense_embedding(8, units), ways, **kwargs)
    learner(np.zeros((2, 8), np.float32))
    learner.save(folder / META_LEARNER_FILE)
    (folder / rd.CONFIG_FILE).write_text(json.dumps({"backbone": "tiny_image", "ways": ways,
                                                     "embedding_units": units}))
    (folder / rd.METADATA_FILE).write_text(json.dumps({"strategy": strategy, "meta": {"input": "features"}}))
    return folder


def test_the_init_check_names_the_ways_of_a_fixed_head_learner(tmp_path):
    run = _fake_meta_run(tmp_path / "reptile", "reptile", ways=3, units=8)
    extractor = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    fitting = TrainConfig(data_dir="d", strategy="reptile", ways=3, embedding_units=8, init=str(run))
    check_init_fits(fitting, extractor, "tiny_image", "imagenet")
    with pytest.raises(UserError, match=r"does not fit this run's \(--ways 3 there, 5 here\)"):
        check_init_fits(TrainConfig(data_dir="d", strategy="reptile", ways=5, embedding_units=8, init=str(run)),
                        extractor, "tiny_image", "imagenet")
    # Another feature size (another backbone): the shapes decide, whatever config.json says.
    wider = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16)])
    with pytest.raises(UserError, match="does not fit this run's"):
        check_init_fits(fitting, wider, "tiny_image", "imagenet")


def test_a_run_directory_as_meta_data_is_refused_naming_backbone_run_dir(protonet_run, tmp_path, capsys):
    """It was scanned as data: 'needs at least 2 classes; ... has 1: ['logs']'."""
    run = protonet_run["run"]
    assert train.main([str(protonet_run["data"]), *PROTONET, *EPISODES, "--meta-data", str(run),
                       "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, f"--meta-data {run} is a run directory", "--backbone RUN_DIR")
    assert not (tmp_path / "run").exists()


def test_a_source_inside_the_target_folder_is_refused_before_the_run_directory(tmp_path, capsys):
    """DATA/extra/<classes> is the target's class `extra`: every source file was left out as a copy of a target file
    after the run directory was made, and the run failed INCOMPLETE saying the source 'has 0 classes'."""
    data = write_colour_folder(tmp_path / "data", per_class=4, size=12, colours=COLOURS, seed=0)
    write_colour_folder(data / "extra", per_class=4, size=12, seed=5,
                        colours={f"source{i}": (60 * i, 200 - 60 * i, 90) for i in range(3)})
    assert train.main([str(data), *PROTONET, *EPISODES, "--meta-data", str(data / "extra"),
                       "--output", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, f"--meta-data {data / 'extra'} lies inside the target folder {data}",
                   "12 of its 12 files are target files", "Move the source folder out of the target folder")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("phase, strategy, rates", [
    (phases.META, "protonet", "--meta-learning-rate"),
    (phases.META, "reptile", "--inner-learning-rate or --meta-step-size"),
    (phases.META, "maml", "--inner-learning-rate or --meta-learning-rate"),
    (phases.HEAD, "fomaml", "--learning-rate"),
    ("refit_head", "linear", "--learning-rate"),
    ("refit_finetune", "finetune", "--finetune-learning-rate"),
    ("target_finetune", "protonet", "--finetune-learning-rate"),
])
def test_a_diverged_phase_names_the_learning_rates_it_trains_with(phase, strategy, rates):
    assert phases.rates_to_lower(phase, strategy) == rates


def test_a_meta_phase_that_diverges_says_which_rate_to_lower(protonet_run, tmp_path, capsys):
    """fomaml's NaN was told to lower --learning-rate (head) or --finetune-learning-rate, neither of which it uses."""
    run = tmp_path / "run"
    assert train.main([str(protonet_run["data"]), *PROTONET, *EPISODES, "--strategy", "fomaml",
                       "--inner-learning-rate", "1e30", "--output", str(run)]) == 2
    one_error_line(capsys.readouterr().err, "Training diverged: the meta loss became NaN/inf",
                   "No epoch had completed", "Lower --inner-learning-rate or --meta-learning-rate")
    assert (run / rd.INCOMPLETE_MARKER).exists()
