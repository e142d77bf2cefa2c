"""The top_blocks source stage: the top blocks train (BatchNorm frozen) on cached activations, and the run's
model.keras is exactly that trained backbone."""

import keras
import numpy as np
import pytest

import train
from app import run_dir as rd
from app.features import cached_features, content_key, extract_features
from app.model_parts import HEAD_LAYER, apply_chain, feature_extractor_of, layers_between
from app.top_block_stage import (VIEW_ROWS, VIEWS, activations, cut_backbone, features_through_cut, pooled_features,
                                  view_count)
from data.activation_cache import activation_store, activation_store_key
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
                       *FEATURES, "--meta-epochs", "6"]) == 0
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    assert meta["source_stage"]["chosen"] == "top_blocks" and meta["source_stage"]["top_blocks"]["views"] == VIEWS
    # No early stopping and no smaller budget of its own (it had 5 epochs once): it trains all of --meta-epochs.
    assert meta["source_stage"]["top_blocks"]["epochs"] == 6
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
    cut, _ = cut_backbone(extractor, get_backbone("tiny_image"), "tiny_image", "none", 32, "stretch", "1")
    rows = activations(cut, examples, 32, "stretch", 0, use_cache=True)
    cached = apply_chain(layers_between(model), pooled_features(cut, rows), 64)
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


def test_the_source_features_and_the_cached_activations_come_from_one_bottom_pass(tmp_path):
    """features = top(bottom(x)): the features the other candidates train on equal the whole extractor's
    pass (from the bottom's float32 output, not the float16 cache), and the bottom's output is left in
    the view-0 activation cache."""
    source = _folder(tmp_path / "source", dict(list(SOURCE_COLOURS.items())[:3]), per_class=3, seed=5)
    examples = sorted(scan_folder(str(source)).examples, key=lambda e: e.path)
    keras.utils.set_random_seed(0)
    extractor = get_backbone("tiny_image").build_features(32, "none")
    cut, _ = cut_backbone(extractor, get_backbone("tiny_image"), "tiny_image", "none", 32, "stretch", "1")
    shared = cached_features(extractor, examples, "image", 32, 4, "stretch", "key-shared",
                             lambda some: features_through_cut(cut, some, 32, "stretch", use_cache=True))
    direct = extract_features(extractor, examples, "image", 32, 4, "stretch")
    np.testing.assert_allclose(shared, direct, rtol=1e-5, atol=1e-5 * np.abs(direct).max())

    def no_bottom_pass(indices):
        raise AssertionError(f"the bottom ran again for {len(indices)} file(s)")
    _, computed = activation_store(activation_store_key(cut.identity, 0)).get_or_compute(
        [content_key(e) for e in examples], no_bottom_pass)
    assert computed == 0
    assert features_through_cut(cut, [], 32, "stretch", use_cache=True).shape == (0, shared.shape[-1])


def test_a_larger_source_gets_fewer_cached_views_never_none():
    sizes = [1, 100, VIEW_ROWS // VIEWS, VIEW_ROWS // 2, VIEW_ROWS, 10 * VIEW_ROWS]
    counts = [view_count(n) for n in sizes]
    assert counts[0] == VIEWS and counts[-1] == 1 and all(1 <= c <= VIEWS for c in counts)
    assert counts == sorted(counts, reverse=True)
    # Past the size where every view is kept, the rows cached stay near VIEW_ROWS (one view a file at least).
    assert all(c * n <= 1.5 * VIEW_ROWS or c == 1 for c, n in zip(counts, sizes))
