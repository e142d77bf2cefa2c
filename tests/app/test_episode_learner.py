"""The per-shot episode learner of protonet runs: chosen on the target's validation episodes, applied by evaluate."""

import pytest
import numpy as np

import evaluate
import train
from app import run_dir as rd
from app.episode_learner import choose_episode_learners, learner_for
from app.errors import UserError
from tests.test_meta_strategies import EPISODES, FEATURES, colour_folder  # noqa: F401  (a fixture)


def test_logistic_regression_is_chosen_where_prototypes_are_misled_and_prototypes_on_ties(monkeypatch):
    monkeypatch.setattr("app.episode_learner.CHOICE_EPISODES", 10)  # a clear gap needs few episodes; fits cost
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 20)
    # The class sits in a low-variance direction under a high-variance nuisance one: prototypes from
    # 5 shots are dominated by the nuisance, logistic regression learns to ignore it.
    signal = np.eye(6)[labels] * 1.0 + rng.normal(0, 0.15, (120, 6))
    nuisance = rng.normal(0, 6.0, (120, 6))
    hard = np.concatenate([signal, nuisance], axis=1)
    choice = choose_episode_learners(hard, labels, seed=0)
    assert choice["scores"]["5"]["logistic_regression"] > choice["scores"]["5"]["prototypes"]
    assert choice["by_shots"]["5"] == "logistic_regression"
    easy = np.eye(6)[labels] * 10.0
    assert choose_episode_learners(easy, labels, seed=0)["by_shots"] == {"1": "prototypes", "5": "prototypes"}


def test_the_saved_choice_of_the_nearest_shot_count_at_or_below_applies():
    choice = {"by_shots": {"1": "prototypes", "5": "logistic_regression"}}
    assert [learner_for(choice, s) for s in (1, 3, 5, 10)] == ["prototypes", "prototypes", "logistic_regression",
                                                             "logistic_regression"]
    assert learner_for(None, 5) == "prototypes"
    assert learner_for({"by_shots": {"5": "logistic_regression"}}, 1) == "logistic_regression"


@pytest.mark.parametrize("damaged", [{"by_shots": {"x": "prototypes"}}, {"by_shots": {"1": "svm"}}, "prototypes",
                                     {"by_shots": [1]}, {"scores": {}}, {"by_shots": {}},
                                     {"by_shots": {"1": ["prototypes"]}}])
def test_a_choice_metatune_does_not_write_is_refused_naming_it(damaged):
    """metadata.json edited or damaged: a traceback (int('x'), KeyError 'svm') or a silent fall back to prototypes."""
    with pytest.raises(UserError, match=r"meta\.episode_learner is not a choice metatune writes.*Received: "):
        learner_for(damaged, 1)


def test_choice_too_small_targets_have_none():
    assert choose_episode_learners(np.zeros((3, 2)), np.array([0, 0, 0]), seed=0) is None


@pytest.mark.slow
def test_evaluate_applies_the_runs_choice(colour_folder, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run),
                       *EPISODES, *FEATURES]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    choice = metadata["meta"]["episode_learner"]
    assert set(choice["by_shots"]) <= {"1", "5"} and choice["by_shots"]
    metadata["meta"]["episode_learner"] = {"by_shots": {"1": "logistic_regression"}}
    rd.write_json(run / rd.METADATA_FILE, metadata)
    assert evaluate.main([str(run), str(colour_folder), "--episodes", "3", "--ways", "2", "--shots", "1",
                          "--queries", "1", "--name", "lr"]) == 0
    learner = rd.read_json(run / "eval" / "lr" / "metrics.json")["learner"]
    assert learner["episode_learner"] == "logistic_regression" and "logistic regression" in learner["label"]
    assert learner["source_stage"] is None and learner["label"].startswith("protonet meta-learner")
    # A source stage that kept no meta-training: the label says what the prototypes sit on.
    metadata["meta"]["source_stage"] = {"chosen": "none"}
    metadata["meta"]["episode_learner"] = {"by_shots": {"1": "prototypes"}}
    rd.write_json(run / rd.METADATA_FILE, metadata)
    assert evaluate.main([str(run), str(colour_folder), "--episodes", "3", "--ways", "2", "--shots", "1",
                          "--queries", "1", "--name", "none"]) == 0
    learner = rd.read_json(run / "eval" / "none" / "metrics.json")["learner"]
    assert learner["source_stage"] == "none"
    assert learner["label"].startswith("protonet learner, prototypes on the pretrained features")
    assert "meta-learner" not in learner["label"]
    metadata["meta"]["episode_learner"] = {"by_shots": {"1": "svm"}}  # edited by hand: one ERROR line, status 2
    rd.write_json(run / rd.METADATA_FILE, metadata)
    assert evaluate.main([str(run), str(colour_folder), "--episodes", "3", "--ways", "2", "--shots", "1",
                          "--queries", "1", "--name", "edited"]) == 2
    assert not (run / "eval" / "edited").exists()
