"""The source-stage and target-head choices: their scores, their rules, and that they never see test files."""

import numpy as np
import pytest

import train
from app import run_dir as rd
from app.fewshot_baselines import nearest_centroid_predict
from app import source_stage
from app.source_stage import StageScore, choose, train_supervised
from app.target_heads import (FIT, candidate_heads, choose_head, cross_validated_accuracy, logistic_regression_weights,
                              stratified_folds)
from data.episodes import EpisodeSampler
from tests.test_meta_strategies import EPISODES, FEATURES, _folder, colour_folder  # noqa: F401  (a fixture)


def test_folds_are_stratified_and_single_file_classes_are_never_held_out():
    labels = np.repeat([0, 1, 2], [10, 7, 1])
    folds = stratified_folds(labels, 5, seed=0)
    assert (folds[labels == 2] == -1).all()
    for label in (0, 1):
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(folds, stratified_folds(labels, 5, seed=0))


def test_cross_validation_classifies_each_fold_by_a_head_fitted_on_the_others():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)
    x = rng.normal(size=(24, 4)) + np.eye(4)[labels] * 1.2
    folds = stratified_folds(labels, 5, seed=3)
    hits = 0
    for fold in range(5):
        held = folds == fold
        hits += np.sum(nearest_centroid_predict(x[~held], labels[~held], x[held], 3) == labels[held])
    assert cross_validated_accuracy(FIT["prototypes"], x, labels, 3, seed=3) == hits / 24


@pytest.mark.parametrize("classes", [2, 4])
def test_logistic_regression_head_is_scikit_learns_model(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(classes)
    labels = np.repeat(np.arange(classes), 6)
    x = rng.normal(size=(len(labels), 5)) + np.eye(5)[labels] * 2
    kernel, bias = logistic_regression_weights(x, labels, classes)
    logits = x @ kernel + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = LogisticRegression(max_iter=1000).fit(x, labels).predict_proba(x)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_auto_head_is_the_better_by_cross_validation_prototypes_on_ties():
    labels = np.repeat([0, 1], 10)
    easy = np.eye(2)[labels] * 5.0
    assert choose_head(easy, labels, 2, ("prototypes", "logistic_regression"))[0] == "prototypes"
    # Classes told apart by a low-variance direction hidden under a high-variance one: LR finds it.
    rng = np.random.default_rng(0)
    hard = np.stack([rng.normal(0, 10, 20), labels * 0.6 + rng.normal(0, 0.1, 20)], axis=1)
    chosen, scores = choose_head(hard, labels, 2, ("prototypes", "logistic_regression"))
    assert scores["logistic_regression"] > scores["prototypes"] and chosen == "logistic_regression"
    assert candidate_heads("auto", 101) == ("prototypes",) and candidate_heads("prototypes", 3) == ("prototypes",)


def test_a_source_stage_is_kept_only_when_it_beats_no_source_stage_on_the_target():
    def stage(name, target, source):
        return StageScore(name, target, "prototypes", {"prototypes": target}, source)

    none = stage("none", 0.80, 0.70)
    assert choose([none, stage("supervised", 0.80, 0.95), stage("protonet", 0.79, 0.99)]).name == "none"
    assert choose([none, stage("supervised", 0.81, 0.75), stage("protonet", 0.81, 0.99)]).name == "supervised"
    assert choose([none, stage("protonet", 0.85, None)]).name == "protonet"


@pytest.mark.parametrize("epoch_rows", [None, 64])  # 64: a "large" source, epochs of a bounded number of rows
def test_supervised_stage_learns_an_embedding_that_separates_unseen_classes(epoch_rows, monkeypatch):
    if epoch_rows:
        monkeypatch.setattr(source_stage, "SUPERVISED_EPOCH_ROWS", epoch_rows)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(12, 16)) * 3
    labels = np.repeat(np.arange(12), 20)
    x = (centres[labels] + rng.normal(size=(240, 16))).astype(np.float32)
    seen = labels < 8
    val_labels = labels[~seen] - 8
    sampler = EpisodeSampler(val_labels, 4, 1, 5, seed=0)
    embedding, epochs = train_supervised(x[seen], labels[seen], x[~seen], sampler, units=8, learning_rate=1e-2,
                                         epochs=3, patience=2, batch_size=32, seed=0)
    assert 1 <= epochs <= 3 and embedding.output_shape[-1] == 8
    embedded = embedding.predict(x[~seen], verbose=0)
    assert cross_validated_accuracy(FIT["prototypes"], embedded, val_labels, 4) > 0.5  # 4 classes: chance is 0.25


def _target_with_test_folder(root, test_seed):
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}
    _folder(root / "train", colours, per_class=8, seed=0)
    _folder(root / "test", colours, per_class=4, seed=test_seed)
    return root


@pytest.mark.slow
def test_auto_scores_every_candidate_and_the_choice_never_depends_on_test_files(tmp_path):
    source = _folder(tmp_path / "source", {f"s{i}": (30 * i, 250 - 30 * i, 40 + 20 * i) for i in range(8)},
                     per_class=8, seed=5)
    summaries = []
    for test_seed in (11, 12):  # the same target, only its test files differ
        target = _target_with_test_folder(tmp_path / f"target{test_seed}", test_seed)
        run = tmp_path / f"run{test_seed}"
        assert train.main([str(target), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                           str(source), "--output", str(run), *EPISODES, *FEATURES]) == 0
        summaries.append(rd.read_json(run / rd.METADATA_FILE)["meta"]["source_stage"])
    first = summaries[0]
    assert set(first["candidates"]) == {"none", "supervised", "protonet", "top_blocks"} and first["asked"] == "auto"
    for scores in first["candidates"].values():
        assert 0.0 <= scores["target_accuracy"] <= 1.0 and 0.0 <= scores["source_val_accuracy"] <= 1.0
        assert set(scores["target_heads"]) == {"prototypes", "logistic_regression"}
    assert 1 <= first["supervised"]["epochs_kept"] <= first["supervised"]["max_epochs"] == 2  # --meta-epochs
    best = max(s["target_accuracy"] for s in first["candidates"].values())
    assert first["candidates"][first["chosen"]]["target_accuracy"] == best
    for summary in summaries:  # the time the top_blocks stage took differs between runs, nothing else may
        summary["top_blocks"].pop("seconds")
    assert summaries[1] == first


def test_source_stage_without_a_source_is_one_error(colour_folder, tmp_path, capsys):
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--source-stage",
                       "supervised", "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert "source_stage applies to --strategy protonet with --meta-data" in err and "Traceback" not in err


def test_options_the_raw_input_cannot_take_are_refused_before_the_run_directory(colour_folder, tmp_path, capsys):
    """tiny_image has no pretrained weights, so `--meta-input auto` is raw: no source stage and no target
    fine-tuning there, refused before the run directory exists (they were refused after the feature pass, or the
    whole meta-training, leaving an INCOMPLETE run behind); `--target-finetune yes` with a transfer strategy was
    ignored without a word."""
    source = _folder(tmp_path / "source", {"cyan": (30, 200, 200), "pink": (230, 120, 180), "gold": (200, 170, 30)})
    refused = [
        (["--strategy", "protonet", "--meta-data", str(source), "--source-stage", "supervised"],
         "--source-stage supervised needs --meta-data, --strategy protonet and the features input (this run's input "
         "is raw)"),
        (["--strategy", "protonet", "--target-finetune", "yes"], "--target-finetune yes needs --strategy protonet on "
         "the features input (--meta-input features). Received: --strategy protonet, input raw"),
        (["--strategy", "reptile", "--target-finetune", "yes"], "target_finetune yes applies to --strategy protonet"),
        (["--strategy", "finetune", "--target-finetune", "yes"], "target_finetune yes applies to --strategy protonet"),
        ([*FEATURES, "--strategy", "protonet", "--meta-data", str(source), "--source-stage", "top_blocks",
          "--unfreeze", "all"], "--source-stage top_blocks cannot train this backbone's top blocks: --unfreeze all"),
    ]
    for flags, message in refused:
        run = tmp_path / "run"
        assert train.main([str(colour_folder), "--backbone", "tiny_image", "--output", str(run), *flags,
                           *EPISODES]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert "Features for" not in err and not run.exists()
