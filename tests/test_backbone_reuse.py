"""--backbone RUN_DIR: a finished run's (meta-)trained backbone reused by a new run, and its refusals."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import evaluate
import predict
import train
from app import run_dir as rd
from app.backbone_reuse import REUSED_NAME
from app.model_parts import feature_extractor_of
from colour_folders import write_colour_folder, write_sentiment_folder
from data.images import load_image
from models.task_model import load_task_model

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

SOURCE_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}
TARGET_COLOURS = {"yellow": (220, 220, 30), "cyan": (30, 210, 210), "magenta": (210, 30, 210)}
SIZE = "24"  # not tiny_image's default (32): the target must follow the source's input size
QUICK = ["--epochs", "3", "--seed", "1"]
EPISODES = ["--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "3",
            "--meta-epochs", "2", "--embedding-units", "8", "--meta-input", "features"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    return (write_colour_folder(root / "source", 10, 20, SOURCE_COLOURS),
            write_colour_folder(root / "target", 10, 20, TARGET_COLOURS, seed=1), root)


@pytest.fixture(scope="module")
def linear_source(folders):
    source, _, root = folders
    run = root / "source_linear"
    assert train.main([str(source), "--backbone", "tiny_image", "--image-size", SIZE, "--resize", "pad",
                       "--hidden-units", "6", "--output", str(run), *QUICK]) == 0
    return run


def _penultimate(run, files):
    model = load_task_model(str(run / rd.MODEL_FILE))
    size = rd.read_json(run / rd.METADATA_FILE)["input_spec"]["image_size"]
    pixels = np.stack([load_image(str(f), tuple(size), "pad") for f in files])
    head = model.get_layer("head_dense")
    dropout = head.input._keras_history.operation  # the dropout in front of head_dense: identity at inference
    return keras.Model(model.inputs, dropout.input).predict(pixels, verbose=0), pixels


def test_reuse_round_trip_linear(folders, linear_source):
    _, target, root = folders
    run = root / "target_linear"
    assert train.main([str(target), "--backbone", str(linear_source), "--output", str(run), *QUICK]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    source_metadata = rd.read_json(linear_source / rd.METADATA_FILE)
    record = metadata["backbone_run"]
    assert record["path"] == str(linear_source.resolve()) and record["backbone"] == "tiny_image"
    assert record["strategy"] == "linear" and len(record["weights_sha256"]) == 64
    assert metadata["backbone"] == "tiny_image" and metadata["weights"].startswith("run:")
    assert metadata["input_spec"] == source_metadata["input_spec"]  # size 24 and resize pad, followed
    assert rd.read_json(run / rd.CONFIG_FILE)["backbone"] == str(linear_source)  # --resume / --config reopen it

    # The target's features are the source's penultimate output (its hidden head layer, 6 units) on the same files.
    files = sorted(target.glob("*/*.png"))[:6]
    expected, pixels = _penultimate(linear_source, files)
    extractor = feature_extractor_of(load_task_model(str(run / rd.MODEL_FILE)))
    assert extractor.name == REUSED_NAME and extractor.output_shape[-1] == 6
    np.testing.assert_allclose(extractor.predict(pixels, verbose=0), expected, rtol=1e-5, atol=1e-5)

    assert evaluate.main([str(run), str(target), "--name", "check"]) == 0
    assert evaluate.main([str(run), str(target), "--episodes", "3", "--ways", "2", "--shots", "1", "--queries", "1",
                          "--name", "episodes"]) == 0
    assert "baselines" in rd.read_json(run / "eval" / "episodes" / "metrics.json")
    assert predict.main([str(run), str(files[0]), "--json"]) == 0

    # A second target run on the same data reads the reused backbone's features from the cache.
    again = root / "target_linear_again"
    assert train.main([str(target), "--backbone", str(linear_source), "--output", str(again), *QUICK]) == 0
    assert rd.read_json(again / rd.METADATA_FILE)["backbone_run"] == record


def test_reused_backbone_finetunes_its_top_blocks(folders, linear_source):
    _, target, root = folders
    run = root / "target_finetune"
    assert train.main([str(target), "--backbone", str(linear_source), "--strategy", "finetune", "--unfreeze", "1",
                       "--finetune-epochs", "1", "--output", str(run), *QUICK]) == 0
    assert [p["name"] for p in rd.read_json(run / rd.HISTORY_FILE)["phases"]][:2] == ["head", "finetune"]


def test_protonet_source_embedding_is_carried_over(folders):
    source, target, root = folders
    source_run = root / "source_protonet"
    assert train.main([str(source), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(source_run),
                       *EPISODES, *QUICK]) == 0
    run = root / "target_from_protonet"
    assert train.main([str(target), "--backbone", str(source_run), "--output", str(run), *QUICK]) == 0
    assert rd.read_json(run / rd.METADATA_FILE)["backbone_run"]["strategy"] == "protonet"
    files = sorted(target.glob("*/*.png"))[:4]
    model = load_task_model(str(source_run / rd.MODEL_FILE))
    pixels = np.stack([load_image(str(f), (32, 32)) for f in files])
    embedding = keras.Model(model.inputs, model.get_layer("head_dense").input).predict(pixels, verbose=0)
    backbone_features = feature_extractor_of(model).predict(pixels, verbose=0)
    assert not np.allclose(embedding, backbone_features)  # the meta-learned embedding is more than the backbone
    extractor = feature_extractor_of(load_task_model(str(run / rd.MODEL_FILE)))
    np.testing.assert_allclose(extractor.predict(pixels, verbose=0), embedding, rtol=1e-5, atol=1e-5)


def _error(capsys, argv) -> str:
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if " ERROR " in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("file, content, expected", [(rd.INCOMPLETE_MARKER, "", "unfinished run"),
                                                     (rd.METADATA_FILE, "{not json", rd.METADATA_FILE)])
def test_unfinished_or_damaged_source_run_is_refused(folders, linear_source, tmp_path, capsys, file, content,
                                                     expected):
    _, target, _ = folders
    copy = tmp_path / "source_copy"
    shutil.copytree(linear_source, copy)
    (copy / file).write_text(content)
    line = _error(capsys, [str(target), "--backbone", str(copy), "--output", str(tmp_path / "out")])
    assert "--backbone" in line and expected in line and str(copy) in line
    assert not (tmp_path / "out").exists()


def test_source_run_of_another_modality_is_refused(linear_source, tmp_path, capsys):
    texts = tmp_path / "texts"
    for label, words in {"good": "great fine love", "bad": "awful hate bad"}.items():
        (texts / label).mkdir(parents=True)
        for i in range(4):
            (texts / label / f"{i}.txt").write_text(f"{words} {i}")
    line = _error(capsys, [str(texts), "--backbone", str(linear_source), "--output", str(tmp_path / "out")])
    assert "is an image run" in line and "text files" in line and str(linear_source) in line
    assert "Pass a text run, or a text backbone name" in line  # not "a image" / "an text"


@pytest.mark.parametrize("option, value, source_value", [("--image-size", "32", "24"), ("--resize", "crop", "pad")])
def test_input_settings_different_from_the_source_are_refused(folders, linear_source, tmp_path, capsys, option,
                                                              value, source_value):
    _, target, _ = folders
    line = _error(capsys, [str(target), "--backbone", str(linear_source), option, value,
                           "--output", str(tmp_path / "out")])
    assert f"{option} {source_value}" in line and f"Received: {option} {value}" in line


def test_same_input_settings_as_the_source_are_accepted(folders, linear_source):
    from app.backbone_choice import resolve_backbone
    from app.config import TrainConfig

    _, target, _ = folders
    config = TrainConfig(data_dir=str(target), backbone=str(linear_source), image_size=24, resize="pad")
    assert resolve_backbone(config, "image").size == 24


def test_sequence_length_different_from_a_text_source_is_refused(tmp_path):
    from app.backbone_reuse import _refuse_different
    from app.errors import UserError

    with pytest.raises(UserError, match=r"--sequence-length 16.*Received: --sequence-length 32"):
        _refuse_different("--sequence-length", 32, 16, tmp_path)


def test_finetune_refused_when_no_layer_matches_the_block_pattern(folders, linear_source, tmp_path, capsys):
    _, target, _ = folders
    copy = tmp_path / "renamed"
    shutil.copytree(linear_source, copy)
    metadata = json.loads((copy / rd.METADATA_FILE).read_text())
    metadata["backbone"] = "tiny_text"  # its block pattern (transformer_layer_N) matches no layer of this model
    (copy / rd.METADATA_FILE).write_text(json.dumps(metadata))
    line = _error(capsys, [str(target), "--backbone", str(copy), "--strategy", "finetune",
                           "--output", str(tmp_path / "out")])
    assert "matches the tiny_text family's block names" in line


@pytest.mark.parametrize("meta_input", ["features", "raw"])
def test_meta_strategy_on_a_reused_backbone(folders, linear_source, meta_input):
    _, target, root = folders
    run = root / f"target_protonet_{meta_input}"
    assert train.main([str(target), "--backbone", str(linear_source), "--strategy", "protonet", "--output", str(run),
                       *EPISODES, *QUICK, "--meta-input", meta_input, "--unfreeze", "1"]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["meta"]["input"] == meta_input and metadata["backbone_run"]["strategy"] == "linear"
    assert evaluate.main([str(run), str(target), "--episodes", "3", "--ways", "2", "--shots", "1", "--queries", "1",
                          "--name", "episodes"]) == 0


def test_text_reuse_round_trip_and_sequence_length(tmp_path, capsys):
    source_run, run = tmp_path / "source_run", tmp_path / "target_run"
    assert train.main([str(write_sentiment_folder(tmp_path / "source", 0)), "--backbone", "tiny_text", "--sequence-length",
                       "16", "--output", str(source_run), *QUICK]) == 0
    target = write_sentiment_folder(tmp_path / "target", 1)
    line = _error(capsys, [str(target), "--backbone", str(source_run), "--sequence-length", "32",
                           "--output", str(run)])
    assert "--sequence-length 16" in line and "Received: --sequence-length 32" in line
    assert train.main([str(target), "--backbone", str(source_run), "--output", str(run), *QUICK]) == 0
    assert rd.read_json(run / rd.METADATA_FILE)["input_spec"]["sequence_length"] == 16
    import tensorflow as tf

    texts = tf.constant([path.read_text() for path in sorted(target.glob("*/*.txt"))[:4]])
    source = load_task_model(str(source_run / rd.MODEL_FILE), "text")
    expected = keras.Model(source.inputs, source.get_layer("head_dense").input)(texts, training=False)
    extractor = feature_extractor_of(load_task_model(str(run / rd.MODEL_FILE), "text"))
    np.testing.assert_allclose(extractor(texts, training=False), expected, rtol=1e-5, atol=1e-5)
    assert predict.main([str(run), "--text", "a great film", "--json"]) == 0


def test_feature_cache_key_is_the_reused_weights_not_the_pretrained_backbones(folders, linear_source):
    from app.backbone_choice import resolve_backbone
    from app.config import TrainConfig
    from app.features import feature_store_key

    _, target, _ = folders

    def key(backbone_option):
        backbone = resolve_backbone(TrainConfig(data_dir=str(target), backbone=backbone_option, image_size=24,
                                                resize="pad"), "image")
        extractor = backbone.spec.build_features(backbone.size, backbone.weights, backbone.pooling)
        return feature_store_key(extractor, backbone.name, backbone.weights, "image", backbone.size, "pad", None)

    reused = key(str(linear_source))
    assert reused == key(str(linear_source))  # the same run: the same store, so a second target reuses it
    assert reused != key("tiny_image")


def test_evaluation_leaves_out_the_files_the_reused_backbone_trained_on(folders, linear_source, tmp_path, capsys):
    """A run on the source's own folder with another --seed splits it differently: some of its test files trained
    its backbone (the source run), and evaluate.py scored them as unseen."""
    source, _, _ = folders
    run = tmp_path / "resplit"
    linear_source = Path(shutil.copytree(linear_source, tmp_path / "source_run"))  # damaged below
    assert train.main([str(source), "--backbone", str(linear_source), "--output", str(run), "--epochs", "1",
                       "--seed", "2"]) == 0
    seen = {f["sha256"] for f in rd.read_json(linear_source / rd.MANIFEST_FILE)["files"] if f["split"] != "test"}
    test = [f for f in rd.read_json(run / rd.MANIFEST_FILE)["files"] if f["split"] == "test"]
    leaked = sum(f["sha256"] in seen for f in test)
    assert 0 < leaked < len(test)
    # (most of a class's test files trained the backbone: some classes have none left)
    assert evaluate.main([str(run), str(source), "--name", "check", "--allow-missing-classes"]) == 0
    metrics = rd.read_json(run / "eval" / "check" / "metrics.json")
    assert metrics["split"].endswith(f"without {leaked} file(s) byte-identical to the run's training or validation "
                                     "(or --backbone run's training) files")
    assert metrics["num_examples"] == len(test) - leaked
    # The source run's damage is its own: a warning, and this run's evaluation goes on without its hashes.
    (linear_source / rd.MANIFEST_FILE).write_text("{", encoding="utf-8")
    capsys.readouterr()
    assert evaluate.main([str(run), str(source), "--name", "check"]) == 0
    assert f"whose files cannot be read ({str(linear_source / rd.MANIFEST_FILE)!r} is damaged" in capsys.readouterr().err
