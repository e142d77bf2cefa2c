"""evaluate.py --episodes bug-bash: the episode shape checked (in its flags' words) before any file is read, the
advice when a folder has fewer classes than --ways, classes the run trained on and classes too small for any
episode said on the console and in the report, class names with spaces in episodes.csv, a damaged support
fine-tuning choice, the other modality's folder, the grammar of the refused flags, and --help without
"(default: None)"."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from app.cli import DefaultsHelpFormatter
from app.config_cli import build_parser as train_parser
from app.episodic_evaluation import (CLASS_SEPARATOR, _saved_finetune_settings, evaluate_episodes,
                                     known_classes_note)
from app.errors import UserError
from data.episodes import EpisodeSampler
from data.errors import DataError
from error_lines import one_error_line

SHAPE = ["--episodes", "3", "--ways", "2", "--shots", "1", "--queries", "1"]


def _images(root: Path, counts: dict[str, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        tint = rng.integers(0, 200, 3)
        for i in range(count):
            pixels = np.clip(tint + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes-bugbash")
    data = _images(root / "data", {"a": 6, "b": 6, "c": 6}, seed=0)
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "1", "--seed", "1",
                       "--refit", "no", "--output", str(run)]) == 0
    return {"root": root, "run": run}


# ------------------------------------------------------------------ the episode shape, before any file is read

@pytest.mark.parametrize("flag, value, fragment", [
    ("--ways", "1", "--ways must be an integer >= 2 (an episode tells at least 2 classes apart). Received: --ways 1"),
    ("--shots", "0", "--shots must be an integer >= 1. Received: --shots 0. Pass --shots 1 or more."),
    ("--queries", "-2", "--queries must be an integer >= 1. Received: --queries -2"),
])
def test_a_bad_episode_shape_is_refused_in_its_flag_s_words_before_the_run_is_read(tmp_path, capsys, flag, value,
                                                                                  fragment):
    # It was "ways must be an integer >= 2. Received: ways=1", once the run and the whole folder were read.
    missing = tmp_path / "no-such-run"
    argv = [str(missing), str(tmp_path / "no-such-data"), "--episodes", "3", flag, value]
    assert evaluate.main(argv) == 2
    one_error_line(capsys.readouterr().err, fragment)
    with pytest.raises(UserError, match=re.escape(fragment.split(". Pass")[0])):
        evaluate_episodes(missing, tmp_path, 3, **{flag[2:]: int(value)})


def test_more_ways_than_classes_asks_for_fewer_ways_not_fewer_shots():
    labels = [0] * 6 + [1] * 6 + [2] * 6
    with pytest.raises(DataError) as error:
        EpisodeSampler(labels, ways=5, shots=1, queries=1)
    assert "There are only 3 classes: use fewer ways (--ways 3 or fewer)" in str(error.value)
    assert "fewer shots" not in str(error.value)
    # Too few classes and too few files: both said (only the files were, asking for fewer shots).
    with pytest.raises(DataError) as error:
        EpisodeSampler(labels, ways=5, shots=1, queries=15)
    assert "--ways 3 or fewer" in str(error.value) and "Too small: class 0 (6 examples)" in str(error.value)
    with pytest.raises(DataError, match="There is only 1 class: an episode tells at least 2 apart, so add classes"):
        EpisodeSampler([0] * 6, ways=2, shots=1, queries=1)


# ------------------------------------------------------------------ what the folder holds, said

def test_known_classes_note_names_them_and_none_for_novel_ones():
    assert known_classes_note(["x", "y"], ["x", "y"]) is None
    note = known_classes_note(["a", "x", "y"], ["x", "y"])
    assert note.startswith("1 of the 3 classes of the folder are classes the run trained on ('a')")
    many = [f"k{i:02d}" for i in range(12)]
    assert "'k09' and 2 more" in known_classes_note(many, []) and known_classes_note(many, []).startswith("All 12")


def test_known_small_and_spaced_classes_in_one_evaluation(trained, capsys):
    run = trained["run"]
    data = _images(trained["root"] / "mixed", {"golden retriever": 3, "labrador": 3, "a": 3, "tiny": 1}, seed=5)
    assert evaluate.main([str(run), str(data), *SHAPE, "--name", "mixed"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Said on the console before the feature pass, not only counted in report.md ("3 new to the run").
    known = "1 of the 4 classes of the folder are classes the run trained on ('a')"
    assert known in err and err.index(known) < err.index("Features of the run's feature extractor")
    out = run / "eval" / "mixed"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["novel_classes"] == ["golden retriever", "labrador", "tiny"]
    never = "1 of the 4 classes have fewer than 2 files (shots + queries) and are in no episode: 'tiny'."
    assert any(known in note for note in metrics["notes"]) and never in metrics["notes"]
    report = (out / "report.md").read_text()
    assert known in report and never in report
    # An episode's classes were joined by spaces: "golden retriever labrador" read as three classes.
    rows = list(csv.DictReader((out / "episodes.csv").open(encoding="utf-8")))
    assert len(rows) == 3
    drawn = [row["classes"].split(CLASS_SEPARATOR) for row in rows]
    assert all(len(classes) == 2 and set(classes) <= {"golden retriever", "labrador", "a"} for classes in drawn)


def test_a_folder_of_the_other_modality_is_not_asked_for_the_run_s_classes(trained, tmp_path, capsys):
    for name in ("p", "q"):
        (tmp_path / "text" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "text" / name / f"{i}.txt").write_text(f"{name} words {i}")
    before = sorted(p.name for p in (trained["run"] / "eval").iterdir())
    assert evaluate.main([str(trained["run"]), str(tmp_path / "text"), *SHAPE]) == 2
    line = one_error_line(capsys.readouterr().err, "expects image data", "one subfolder per class")
    assert "named as the run's classes" not in line  # few-shot evaluation takes any classes
    assert sorted(p.name for p in (trained["run"] / "eval").iterdir()) == before


# ------------------------------------------------------------------ a damaged support fine-tuning choice

GOOD = {"by_shots": {"1": {"learning_rate": 0.01, "steps": 5}}, "scores": {"1": {"off": 0.5, "x": 0.6}},
        "grid": {"off": {"learning_rate": 0.0, "steps": 0}, "x": {"learning_rate": 0.01, "steps": 5}}}


@pytest.mark.parametrize("choice", [
    {**GOOD, "by_shots": {}},  # was AttributeError: 'NoneType' object has no attribute 'enabled'
    {**GOOD, "by_shots": {"1": {"learning_rate": "fast", "steps": 5}}},
    {**GOOD, "by_shots": {"1": {"steps": 5}}},
    {**GOOD, "by_shots": {"one": {"learning_rate": 0.01, "steps": 5}}},
    {"by_shots": GOOD["by_shots"]},
    ["not", "a", "dict"],
])
def test_a_damaged_support_finetuning_choice_is_one_clear_error(tmp_path, choice):
    run = SimpleNamespace(path=tmp_path)
    with pytest.raises(UserError) as error:
        _saved_finetune_settings(run, choice, 1)
    message = str(error.value)
    assert "metadata.json' is damaged: its meta.support_finetuning entry" in message
    assert "--support-finetune off" in message and "train.py --config" in message


def test_a_sound_support_finetuning_choice_still_reads():
    chosen, shown = _saved_finetune_settings(SimpleNamespace(path=Path("run")), GOOD, 3)
    assert (chosen.learning_rate, chosen.steps) == (0.01, 5) and shown == chosen


# ------------------------------------------------------------------ refused flags, in good grammar

@pytest.mark.parametrize("argv, fragment", [
    (["--episodes", "3", "--top-k", "2"], "--top-k does not apply to few-shot evaluation. Received: --top-k with "
                                          "--episodes 3. Drop it, or drop --episodes."),
    (["--episodes", "3", "--top-k", "2", "--bootstrap", "9"], "Drop them, or drop --episodes."),
    (["--ways", "3"], "--ways applies to few-shot evaluation only. Received: --ways without --episodes. Add "
                      "--episodes N (e.g. --episodes 600), or drop it."),
])
def test_flags_that_do_not_apply_are_refused_in_good_grammar(tmp_path, capsys, argv, fragment):
    assert evaluate.main([str(tmp_path / "run"), str(tmp_path / "data"), *argv]) == 2
    one_error_line(capsys.readouterr().err, fragment)


# ------------------------------------------------------------------ --help

@pytest.mark.parametrize("parser", [evaluate.build_parser, predict.build_parser, train_parser],
                         ids=["evaluate", "predict", "train"])
def test_help_shows_no_default_that_is_not_one(parser):
    # "(default: None)" read as a value (and contradicted --name's "(default: <folder>-<split>...)"); the False of
    # an on-only flag and the [] of a repeatable option say nothing either. An --x/--no-x flag keeps its False.
    formatter = DefaultsHelpFormatter(parser().prog)
    for action in parser()._actions:
        shown = formatter._get_help_string(action) or ""
        if not isinstance(action, argparse.BooleanOptionalAction):
            assert not re.search(r"\(default: (None|False|\[\])\)", shown), (action.option_strings, shown)
        else:
            assert shown.endswith("(default: %(default)s)"), shown
    assert "(default: None)" not in re.sub(r"\s+", " ", parser().format_help())


def test_help_of_evaluate_reads_well():
    text = re.sub(r"\s+", " ", evaluate.build_parser().format_help())
    assert "--batch-size BATCH_SIZE Batch size for prediction. (default: 32)" in text
    assert "added when it holds the report of another folder). --batch-size" in text
    assert "Classes per episode (N) (default: 5)." in text  # as argparse writes the others: "(default: 32)"
