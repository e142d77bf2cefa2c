"""Few-shot evaluation (evaluate.py --episodes): the interval formula, replay, baselines, the run's
learner (nearest centroid on the penultimate embedding, or a saved meta-learner), novel classes,
the TensorBoard histogram and the errors. Tiny runs (tiny_image backbone, 16 px images)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import evaluate
import train
from app import run_dir as rd
from app import support_finetuning as sft
from app.fewshot_baselines import logistic_regression_predict, mean_and_ci95, nearest_centroid_predict
from data.episodes import EpisodeSampler
from data.scan import scan_folder
from models.backbones.registry import BackboneSpec, register_backbone
from models.task_model import load_task_model

WAYS, SHOTS, QUERIES = 3, 1, 2
FEW = ["--episodes", "12", "--ways", str(WAYS), "--shots", str(SHOTS), "--queries", str(QUERIES)]


def _seeded_features(image_size: int, weights: str, pooling: str | None = None) -> keras.Model:
    """A "pretrained" tiny backbone: seeded initialisers give the same weights at every build."""
    pixels = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(pixels)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="block0_conv",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=3))(x)
    x = keras.layers.ReLU(name="block0_relu")(x)
    return keras.Model(pixels, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="seeded_features")


register_backbone(BackboneSpec(
    name="tiny_seeded_fewshot", modality="image", default_size=16, feature_dim=8, weights_source="seeded (tests only)",
    block_pattern=r"^(block\d+)_", build_features=_seeded_features, default_weights="pretrained", tests_only=True,
))


def _folder(root: Path, names: list[str], per_class: int, seed: int) -> Path:
    """Classes of noisy images of different brightness and tint: separable, but not trivially."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        tint = rng.integers(0, 120, 3)
        for i in range(per_class):
            pixels = np.clip(tint + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("fewshot")
    train_dir = _folder(base / "base", ["a", "b", "c", "d"], 10, seed=0)
    novel = _folder(base / "novel", ["n0", "n1", "n2", "n3", "n4"], 6, seed=1)  # classes the run never saw
    run = base / "linear"
    assert train.main([str(train_dir), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "2",
                       "--hidden-units", "4", "--seed", "1", "--output", str(run)]) == 0
    return {"train": train_dir, "novel": novel, "linear": run, "base": base}


def _metrics(run: Path, name: str) -> dict:
    return json.loads((run / "eval" / name / "metrics.json").read_text())


def _episode_accuracies(run: Path, name: str) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader((run / "eval" / name / "episodes.csv").open()))
    return {key: np.array([float(r[key]) for r in rows]) for key in ("run", "nearest_centroid", "logistic_regression")}


def _replayed(novel: Path, embed, seed: int = 0, episodes: int = 12, predict=nearest_centroid_predict) -> np.ndarray:
    """Independent replay: scan the folder, embed every file, draw the same episodes, classify."""
    scan = scan_folder(novel)
    sampler = EpisodeSampler([e.label for e in scan.examples], WAYS, SHOTS, QUERIES, seed=seed)
    inputs = embed([e.path for e in scan.examples])
    out = []
    for number in range(episodes):
        ep = sampler.episode(number)
        predicted = predict(inputs[ep.support_index], ep.support_labels, inputs[ep.query_index], WAYS)
        out.append(np.mean(predicted == ep.query_labels))
    return np.array(out)


def _pixels(paths: list[str]) -> np.ndarray:
    from data.images import load_image

    return np.stack([load_image(p, (16, 16), "stretch") for p in paths])


def _meta_run(folders, name: str, learner, input_kind: str = "features", strategy: str = "protonet") -> Path:
    """A copy of the linear run dressed as a meta run: meta_learner.keras + metadata['meta']."""
    run = folders["base"] / name
    shutil.copytree(folders["linear"], run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    learner.save(run / "meta_learner.keras")
    metadata = rd.read_json(run / rd.METADATA_FILE)
    metadata["strategy"] = strategy
    metadata["meta"] = {"algorithm": strategy, "ways": learner.ways, "shots": 1, "queries": 2, "input": input_kind,
                        "transductive": learner.transductive, "inner_steps": getattr(learner, "inner_steps", 0),
                        "inner_learning_rate": getattr(learner, "inner_learning_rate", 0.0), "adapt": "head"}
    rd.write_json(run / rd.METADATA_FILE, metadata)
    return run


def _feature_embedding(dim_out: int = 6, seed: int = 0) -> keras.Model:
    inputs = keras.Input((8,))  # tiny_image features
    outputs = keras.layers.Dense(dim_out, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(inputs)
    return keras.Model(inputs, outputs, name="embedding")


# ------------------------------------------------------------------------------ units

def test_ci95_is_1_96_std_over_sqrt_episodes():
    mean, ci = mean_and_ci95([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and ci == pytest.approx(1.96 * 0.5 / 2)
    assert mean_and_ci95([0.4]) == (0.4, 0.0)
    values = np.random.default_rng(0).uniform(size=600)
    assert mean_and_ci95(values)[1] == pytest.approx(1.96 * np.std(values) / np.sqrt(600))
    with pytest.raises(ValueError, match="empty"):
        mean_and_ci95([])


def test_baselines_classify_separable_episodes():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(3, 4))
    support_y = np.repeat(np.arange(3), 2)
    query_y = np.repeat(np.arange(3), 5)
    support = centers[support_y] + rng.normal(scale=0.1, size=(6, 4))
    query = centers[query_y] + rng.normal(scale=0.1, size=(15, 4))
    for predict in (nearest_centroid_predict, logistic_regression_predict):
        np.testing.assert_array_equal(predict(support, support_y, query, 3), query_y)


def test_episode_logits_adapts_without_changing_the_learner():
    """MetaLearner.episode_logits: inner loop on copies, BatchNorm statistics untouched, fixed-head ways checked."""
    from models.meta import FOMAML

    inputs = keras.Input((8,))
    x = keras.layers.BatchNormalization(momentum=0.5)(keras.layers.Dense(6)(inputs))
    learner = FOMAML(keras.Model(inputs, x), ways=3, adapt="all", inner_steps=3, inner_learning_rate=0.5)
    before = [w.copy() for w in learner.get_weights()]
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(6, 8)).astype("float32"), rng.normal(size=(9, 8)).astype("float32")
    logits = learner.episode_logits(support, np.repeat(np.arange(3), 2), query)
    assert tuple(logits.shape) == (9, 3)
    for a, b in zip(before, learner.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="3-way head .* Received: ways=4"):
        learner.episode_logits(support, np.repeat(np.arange(3), 2), query, ways=4)


# ------------------------------------------------------------------------ linear runs

@pytest.mark.slow
def test_linear_run_novel_classes_replay_baselines_and_histogram(folders, capsys):
    run, novel = folders["linear"], folders["novel"]
    assert evaluate.main([str(run), str(novel), *FEW, "--seed", "7", "--name", "first"]) == 0
    out = capsys.readouterr().out
    assert "3-way 1-shot, 12 episodes" in out and "nearest centroid" in out and "Report:" in out
    metrics = _metrics(run, "first")
    assert {"episodes", "ways", "shots", "queries", "mean_accuracy", "ci95"} <= set(metrics)
    assert (metrics["episodes"], metrics["ways"], metrics["shots"], metrics["queries"]) == (12, WAYS, SHOTS, QUERIES)
    assert metrics["episode_seed"] == 7 and metrics["episode_numbers"] == list(range(12))
    assert metrics["class_names"] == ["n0", "n1", "n2", "n3", "n4"] == metrics["novel_classes"]
    assert metrics["num_examples"] == 30 and metrics["split"] == "all files of the folder"
    assert metrics["transductive"] is False
    assert metrics["learner"]["kind"] == "nearest_centroid_on_penultimate"
    assert set(metrics["baselines"]) == {"nearest_centroid", "logistic_regression"}
    for result in [metrics, *metrics["baselines"].values()]:
        assert 0.0 <= result["mean_accuracy"] <= 1.0 and result["ci95"] >= 0.0
    # tiny_image has no pretrained weights: the baselines say whose features they use.
    assert "no pretrained weights" in metrics["baseline_features"]
    report = (run / "eval" / "first" / "report.md").read_text()
    assert "Verdict:" in report and "baseline: logistic regression" in report and "--seed 7 --episodes 12" in report
    assert ("does NOT beat both baselines" in report) == (not metrics["beats_baselines"])

    # Replay: same seed, same numbers; another seed, other episodes.
    assert evaluate.main([str(run), str(novel), *FEW, "--seed", "7", "--name", "again"]) == 0
    again = _metrics(run, "again")
    for key in ("mean_accuracy", "ci95", "baselines", "episode_numbers", "class_names"):
        assert again[key] == metrics[key]
    first_rows = (run / "eval" / "first" / "episodes.csv").read_text()
    assert (run / "eval" / "again" / "episodes.csv").read_text() == first_rows
    assert evaluate.main([str(run), str(novel), *FEW, "--seed", "8", "--name", "other"]) == 0
    assert (run / "eval" / "other" / "episodes.csv").read_text() != first_rows

    # The run's learner is nearest centroid on the input of head_dense (hidden layer of 4 units here).
    model = load_task_model(str(run / rd.MODEL_FILE))
    penultimate = keras.Model(model.inputs, model.get_layer("head_dense").input)
    assert penultimate.output_shape[-1] == 4

    def embed(paths):
        return penultimate.predict(_pixels(paths), verbose=0)

    np.testing.assert_allclose(_episode_accuracies(run, "first")["run"], _replayed(novel, embed, seed=7), atol=1e-6)

    # Histogram of the per-episode accuracies for every learner.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = run / "logs" / "eval_first"
    accumulator = EventAccumulator(str(logs), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert {"fewshot/run_episode_accuracy", "fewshot/nearest_centroid_episode_accuracy",
            "fewshot/logistic_regression_episode_accuracy"} <= tags
    histogram = tf.make_ndarray(accumulator.Tensors("fewshot/run_episode_accuracy")[0].tensor_proto)
    assert histogram[:, 2].sum() == 12  # [bucket_left, bucket_right, count] rows: one count per episode


def test_held_out_files_of_the_training_folder(folders):
    """The training folder: only the files held out at training time (from the manifest) form the pool."""
    run = folders["linear"]
    assert evaluate.main([str(run), str(folders["train"]), "--episodes", "3", "--ways", "2", "--shots", "1",
                          "--queries", "1", "--name", "own"]) == 0
    metrics = _metrics(run, "own")
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    assert metrics["num_examples"] == sum(f["split"] == "test" for f in manifest["files"])
    assert "held out" in metrics["split"] and metrics["novel_classes"] == []


@pytest.mark.slow
def test_linear_head_on_pretrained_features_ties_the_nearest_centroid_baseline(folders, capsys):
    """No hidden layer: the penultimate embedding is the frozen pretrained feature, reused (no second pass)."""
    run = folders["base"] / "pretrained"
    assert train.main([str(folders["train"]), "--backbone", "tiny_seeded_fewshot", "--epochs", "1", "--seed", "1",
                       "--output", str(run)]) == 0
    capsys.readouterr()
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "tie"]) == 0
    err = capsys.readouterr().err
    assert "Pretrained tiny_seeded_fewshot features" not in err  # same weights as the run's extractor: reused
    metrics = _metrics(run, "tie")
    assert metrics["baseline_features"].startswith("frozen pretrained tiny_seeded_fewshot features")
    accuracies = _episode_accuracies(run, "tie")
    np.testing.assert_array_equal(accuracies["run"], accuracies["nearest_centroid"])
    assert metrics["beats_baselines"] is False and "NOT beat" in metrics["verdict"]
    assert "is the nearest-centroid baseline" in (run / "eval" / "tie" / "report.md").read_text()
    # A backbone that cannot be found any more (a local checkpoint folder moved since training): evaluate.py needs
    # only the run directory, so the baselines fall back to the run's features (it stopped with an ERROR line).
    metadata = rd.read_json(run / rd.METADATA_FILE)
    rd.write_json(run / rd.METADATA_FILE, {**metadata, "backbone": str(folders["base"] / "moved-checkpoint")})
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "moved"]) == 0
    assert "could not be found" in _metrics(run, "moved")["baseline_features"]
    rd.write_json(run / rd.METADATA_FILE, metadata)


# -------------------------------------------------------------------------- meta runs

def test_protonet_meta_learner_on_features_with_other_ways(folders):
    from models.meta import ProtoNet

    embedding = _feature_embedding()
    learner = ProtoNet(embedding, ways=5)  # trained 5-way; ProtoNet classifies 3-way episodes too
    run = _meta_run(folders, "protonet", learner)
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "proto"]) == 0
    metrics = _metrics(run, "proto")
    assert metrics["learner"]["kind"] == "meta_learner" and metrics["learner"]["input"] == "features"
    assert metrics["learner"]["trained_ways"] == 5 and metrics["transductive"] is False
    assert "ProtoNet" in metrics["learner"]["label"]

    # Reference: prototypes in the embedding of the frozen extractor's features.
    model = load_task_model(str(run / rd.MODEL_FILE))
    extractor = next(layer for layer in model.layers if isinstance(layer, keras.Model))

    def embed(paths):
        return embedding.predict(extractor.predict(_pixels(paths), verbose=0), verbose=0)

    np.testing.assert_allclose(_episode_accuracies(run, "proto")["run"], _replayed(folders["novel"], embed), atol=1e-6)
    # The ways were restored after evaluation (episode_logits changes them only while it runs).
    loaded = keras.saving.load_model(run / "meta_learner.keras", safe_mode=True, compile=False)
    support = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    logits = loaded.episode_logits(support, np.arange(3), support, ways=3)
    assert tuple(logits.shape) == (3, 3) and loaded.ways == 5
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), np.arange(3))  # a support point is its own prototype


def test_transductive_protonet_on_raw_pixels_is_labelled(folders):
    from models.meta import ProtoNet

    pixels = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(pixels)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    learner = ProtoNet(keras.Model(pixels, x, name="raw_embedding"), ways=WAYS, transductive=True)
    run = _meta_run(folders, "raw", learner, input_kind="raw")
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "raw"]) == 0
    metrics = _metrics(run, "raw")
    assert metrics["learner"]["input"] == "raw" and metrics["transductive"] is True
    report = (run / "eval" / "raw" / "report.md").read_text()
    assert "Transductive BatchNorm: yes" in report and "transductive BatchNorm" in metrics["learner"]["label"]


def test_fomaml_needs_its_own_ways(folders, capsys):
    from models.meta import FOMAML

    learner = FOMAML(_feature_embedding(), ways=5, inner_steps=2, inner_learning_rate=0.1)
    run = _meta_run(folders, "fomaml", learner, strategy="fomaml")
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "bad"]) == 2
    message = capsys.readouterr().err
    assert "5-way head" in message and "--ways 3" in message and "--ways 5" in message
    assert not (run / "eval" / "bad" / "metrics.json").exists()
    assert evaluate.main([str(run), str(folders["novel"]), "--episodes", "3", "--ways", "5", "--shots", "1",
                          "--queries", "1", "--name", "ok"]) == 0
    metrics = _metrics(run, "ok")
    assert metrics["learner"]["algorithm"] == "fomaml" and 0.0 <= metrics["mean_accuracy"] <= 1.0


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("argv, expected", [
    (["--ways", "5"], "--ways applies to few-shot evaluation only"),
    (["--seed", "1", "--queries", "2"], "--queries, --seed apply to few-shot evaluation only"),
    (["--episodes", "0"], "Received: --episodes 0"),
    (["--episodes", "5", "--top-k", "2"], "--top-k does not apply to few-shot evaluation"),
    (["--episodes", "5", "--ways", "6"], "6-way episode needs 6 classes"),
    (["--episodes", "5", "--shots", "5", "--queries", "2"], "at least 7 (shots=5 + queries=2)"),
    (["--episodes", "5", "--ways", "1"], "Received: --ways 1"),
    (["--episodes", "5", "--seed", "-1"], "Received: --seed -1"),  # was numpy's traceback
])
def test_clear_errors(folders, capsys, argv, expected):
    assert evaluate.main([str(folders["linear"]), str(folders["novel"]), *argv]) == 2
    assert expected in capsys.readouterr().err


# ------------------------------------------------- support fine-tuning (app/support_finetuning.py) in the report

def _with_choice(folders, name, learning_rate, steps):
    """A ProtoNet run on features whose metadata carries a support fine-tuning choice for 1 shot."""
    from models.meta import ProtoNet

    run = _meta_run(folders, name, ProtoNet(_feature_embedding(), ways=3))
    metadata = rd.read_json(run / rd.METADATA_FILE)
    best = sft.FinetuneSetting(1e-2, 5)
    metadata["meta"]["support_finetuning"] = {
        "by_shots": {"1": {"learning_rate": learning_rate, "steps": steps}},
        "scores": {"1": {"off": 0.5, best.name: 0.6 if learning_rate else 0.4}},
        "grid": {"off": {"learning_rate": 0.0, "steps": 0}, best.name: {"learning_rate": 1e-2, "steps": 5}}}
    rd.write_json(run / rd.METADATA_FILE, metadata)
    return run


def test_evaluate_reports_with_and_without_and_the_chosen_one_is_the_result(folders, capsys):
    run = _with_choice(folders, "with-f", 1e-2, 5)
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "f"]) == 0
    metrics = _metrics(run, "f")
    finetuning = metrics["support_finetuning"]
    assert finetuning["applied"] and finetuning["chosen"] == {"learning_rate": 1e-2, "steps": 5}
    assert metrics["mean_accuracy"] == finetuning["with"]["mean_accuracy"]
    assert set(metrics["seconds_per_episode"]) == {"run", "run_support_finetuned", "nearest_centroid",
                                                   "logistic_regression"}
    report = (run / "eval" / "f" / "report.md").read_text()
    assert "| **run, with support fine-tuning: " in report and "(chosen)**" in report
    assert "| run, without support fine-tuning: " in report
    assert "run without support fine-tuning" in capsys.readouterr().out

    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "off", "--support-finetune", "off"]) == 0
    off = _metrics(run, "off")
    assert not off["support_finetuning"]["applied"] and "with" not in off["support_finetuning"]
    assert off["mean_accuracy"] == finetuning["without"]["mean_accuracy"]
    assert "--support-finetune off" in (run / "eval" / "off" / "report.md").read_text()


def test_a_learning_rate_0_choice_is_the_plain_learner_exactly(folders):
    run = _with_choice(folders, "lr0", 0.0, 0)
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "lr0"]) == 0
    metrics = _metrics(run, "lr0")
    finetuning = metrics["support_finetuning"]
    assert not finetuning["applied"] and finetuning["shown"] == {"learning_rate": 1e-2, "steps": 5}
    assert metrics["mean_accuracy"] == finetuning["without"]["mean_accuracy"]
    assert evaluate.main([str(run), str(folders["novel"]), *FEW, "--name", "plain", "--support-finetune", "off"]) == 0
    assert _metrics(run, "plain")["mean_accuracy"] == metrics["mean_accuracy"]
    assert "| **run, without support fine-tuning: " in (run / "eval" / "lr0" / "report.md").read_text()


def test_runs_without_a_trainable_embedding_say_so(folders):
    linear = folders["base"] / "linear-copy"
    shutil.copytree(folders["linear"], linear)
    assert evaluate.main([str(linear), str(folders["novel"]), *FEW, "--name", "linear"]) == 0
    metrics = _metrics(linear, "linear")
    assert not metrics["support_finetuning"]["applied"]
    assert "no trainable embedding" in metrics["support_finetuning"]["reason"]
    assert any("No support fine-tuning" in note for note in metrics["notes"])


def test_support_finetune_needs_episodes(folders, capsys):
    assert evaluate.main([str(folders["linear"]), str(folders["novel"]), "--support-finetune", "off"]) == 2
    assert "--support-finetune" in capsys.readouterr().err
