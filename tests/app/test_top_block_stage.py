"""The top_blocks source stage: the top blocks train (BatchNorm frozen) on cached activations, and the run's
model.keras is exactly that trained backbone."""

import keras
import numpy as np
import pytest

import train
from app import run_dir as rd
from app.features import extract_features
from app.model_parts import HEAD_LAYER, apply_chain, feature_extractor_of, layers_between
from app.top_block_stage import VIEWS, activations, cut_backbone, pooled_features
from data.scan import scan_folder
from models.backbones import get_backbone
from models.task_model import load_task_model
from tests.test_meta_strategies import EPISODES, FEATURES, _folder

SOURCE_COLOURS = {f"s{i}": (30 * i, 250 - 30 * i, 40 + 20 * i) for i in range(8)}
TARGET_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}


@pytest.mark.slow
def test_a_kept_top_blocks_stage_is_the_backbone_inside_model_keras(tmp_path):
    source = _folder(tmp_path / "source", SOURCE_COLOURS, per_class=8, seed=5)
    target = _folder(tmp_path / "target", TARGET_COLOURS, per_class=8, seed=0)
    run = tmp_path / "run"
    assert train.main([str(target), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data", str(source),
                       "--source-stage", "top_blocks", "--unfreeze", "1", "--output", str(run), *EPISODES,
                       *FEATURES]) == 0
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    assert meta["source_stage"]["chosen"] == "top_blocks" and meta["source_stage"]["top_blocks"]["views"] == VIEWS
    # A single asked stage skips the others (no features-mode protonet phase either).
    assert list(meta["source_stage"]["candidates"]) == ["top_blocks"] and meta["meta_epochs"] == 0
    model = load_task_model(str(run / rd.MODEL_FILE))  # safe_mode=True
    extractor = feature_extractor_of(model)
    keras.utils.set_random_seed(1)  # the run's --seed: the backbone it started from
    initial = {w.path: w.numpy() for w in get_backbone("tiny_image").build_features(32, "none").weights}
    saved = {w.path: w.numpy() for w in extractor.weights}
    assert all(np.array_equal(saved[p], initial[p]) for p in saved if p.startswith("block0"))  # the cached bottom
    assert any(not np.array_equal(saved[p], initial[p]) for p in saved if p.startswith("block1_conv"))  # trained
    # BatchNorm frozen (inference mode): neither its statistics nor its scale and offset moved.
    assert all(np.array_equal(saved[p], initial[p]) for p in saved if p.startswith("block1_bn"))
    # model.keras gives the embedding of the cached path: top(cached activations) -> the layers before the head.
    examples = sorted(scan_folder(str(target)).examples, key=lambda e: e.path)
    cut, _ = cut_backbone(extractor, get_backbone("tiny_image"), "tiny_image", "none", 32, "stretch", "1", "image")
    rows = activations(cut, examples, 32, "stretch", 0, use_cache=True)
    cached = apply_chain(layers_between(model, extractor), pooled_features(cut, rows), 64)
    penultimate = keras.Model(model.inputs, model.get_layer(HEAD_LAYER).input)
    direct = extract_features(penultimate, examples, "image", 32, 64, "stretch")
    np.testing.assert_allclose(cached, direct, rtol=1e-2, atol=1e-2)
    assert np.abs(cached - direct).max() < 1e-2 * np.abs(direct).max()


def test_a_top_blocks_stage_the_backbone_cannot_have_is_one_error(tmp_path, capsys):
    source = _folder(tmp_path / "source", SOURCE_COLOURS, per_class=4, seed=5)
    target = _folder(tmp_path / "target", TARGET_COLOURS, per_class=4, seed=0)
    assert train.main([str(target), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data", str(source),
                       "--source-stage", "top_blocks", "--unfreeze", "all", "--output", str(tmp_path / "run"),
                       *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert "--source-stage top_blocks cannot train" in err and "--unfreeze all" in err and "Traceback" not in err
