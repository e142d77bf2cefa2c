"""The top_blocks source stage on text (app/text_top_block_stage.py): the cut gives the extractor's own
features from one bottom pass per text, the epoch kept is the best on the source's meta-validation
episodes (the pretrained blocks included), only the top blocks move, and a kept stage is the backbone
in the run's model.keras."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

import train
from app import run_dir as rd
from app import text_top_block_stage as stage
from app.config import TrainConfig
from app.model_parts import feature_extractor_of
from data.meta_pools import EpisodeShape
from data.pipeline import text_dataset
from data.records import Example
from models.backbones import get_backbone
from models.task_model import load_task_model
from tests.app.test_target_finetuning import _texts

SOURCE = ["delta", "omega", "sigma", "beta"]


def _examples(root, names, per_class, seed):
    _texts(root, names, per_class, seed)
    return [Example(str(root / name / f"{i}.txt"), label, "train", encoding="utf-8")
            for label, name in enumerate(names) for i in range(per_class)]


def _extractor():
    keras.utils.set_random_seed(3)
    spec = get_backbone("tiny_text")
    return spec, spec.build_features(16, "none")


def _weights(extractor, block: int) -> list[np.ndarray]:
    spec = get_backbone("tiny_text")
    return [w.numpy().copy() for layer in spec.blocks(extractor)[block] for w in layer.weights]


def test_the_cut_gives_the_extractors_features_and_runs_each_texts_bottom_once(tmp_path, monkeypatch):
    spec, extractor = _extractor()
    cut, why = stage.cut_text_backbone(extractor, spec, "1", 12)
    assert why == "" and cut.split.top_blocks == 1 and cut.split.cut_layer == spec.blocks(extractor)[-1][0].name
    examples = _examples(tmp_path / "texts", ["alpha", "beta", "gamma"], per_class=4, seed=0)
    features = stage.features_through_text_cut(cut, examples)
    texts = [open(e.path, encoding="utf-8").read() for e in examples]
    direct = extractor.predict(text_dataset(texts, None, 8), verbose=0)
    np.testing.assert_allclose(features, direct, rtol=1e-5, atol=1e-5)

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the bottom ran again for texts it had already seen")

    monkeypatch.setattr(cut.split.bottom, "predict", no_second_pass)
    hidden, mask = cut.bottom_outputs(examples[::-1])  # any order, any subset: from the rows kept
    np.testing.assert_allclose(cut.features(hidden, mask), features[::-1], rtol=1e-5, atol=1e-5)


def test_no_cut_without_a_frozen_block_below_or_over_the_memory_budget(monkeypatch):
    spec, extractor = _extractor()
    assert stage.cut_text_backbone(extractor, spec, "all", 10)[0] is None
    cut, why = stage.cut_text_backbone(extractor, spec, "2", 10)  # tiny_text has 2 blocks: none left below
    assert cut is None and "1 to 1 top blocks" in why
    monkeypatch.setattr(stage, "activation_budget_bytes", lambda: 1000)
    cut, why = stage.cut_text_backbone(extractor, spec, "1", 10)
    assert cut is None and "over the" in why and "10 source and target texts" in why


def _pools(tmp_path, with_validation: bool = True):
    train_examples = _examples(tmp_path / "source", SOURCE, per_class=4, seed=1)
    val_examples = _examples(tmp_path / "val", ["alpha", "gamma"], per_class=4, seed=2)
    return SimpleNamespace(train=train_examples, train_labels=[e.label for e in train_examples],
                           val=val_examples, val_labels=[e.label for e in val_examples],
                           train_shape=EpisodeShape(2, 2, 2),
                           val_shape=EpisodeShape(2, 2, 2) if with_validation else None)


@pytest.mark.parametrize("scores, kept", [([0.5, 0.4], 0), ([0.5, 0.6, 0.55], 1), ([0.5, 0.6, 0.7], 2)])
def test_the_epoch_kept_is_the_best_on_meta_validation(tmp_path, monkeypatch, scores, kept):
    spec, extractor = _extractor()
    cut, _ = stage.cut_text_backbone(extractor, spec, "1", 24)
    pools = _pools(tmp_path)
    pristine_bottom, pristine_top = _weights(extractor, 0), _weights(extractor, 1)
    seen = []  # the top block's weights at each meta-validation (epoch 0 = before any training)

    def scripted(embeddings, sampler, episodes):
        seen.append(_weights(extractor, 1))
        return scores[len(seen) - 1]

    monkeypatch.setattr(stage, "episode_accuracy", scripted)
    config = TrainConfig(data_dir="d", meta_learning_rate=0.1, seed=0)  # blocks at 0.01: visible moves
    candidate = stage.text_top_block_candidate(cut, spec, extractor, pools, pools.val, config)
    assert candidate.epochs == kept and candidate.meta_validation == scores
    assert len(seen) == len(scores)  # stopped at the first epoch that did not improve, or at MAX_EPOCHS
    final = _weights(extractor, 1)
    assert all(np.array_equal(a, b) for a, b in zip(final, seen[kept]))  # the best epoch's blocks, restored
    assert all(np.array_equal(a, b) for a, b in zip(_weights(extractor, 0), pristine_bottom))  # below the cut
    assert any(not np.array_equal(a, b) for a, b in zip(seen[1], pristine_top))  # an epoch trains the top
    summary = candidate.summary()
    assert summary["epochs"] == kept and summary["views"] == 1 and summary["meta_validation_by_epoch"] == scores
    # The scores the choice between stages sees are the kept extractor's features.
    np.testing.assert_allclose(candidate.target_features(), stage.features_through_text_cut(cut, pools.val),
                               rtol=1e-5, atol=1e-5)
    candidate.discard(extractor)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(extractor, 1), pristine_top))


def test_without_meta_validation_one_epoch_trains_and_is_kept(tmp_path):
    spec, extractor = _extractor()
    cut, _ = stage.cut_text_backbone(extractor, spec, "1", 24)
    pools = _pools(tmp_path, with_validation=False)
    before = _weights(extractor, 1)
    candidate = stage.text_top_block_candidate(cut, spec, extractor, pools, pools.val,
                                               TrainConfig(data_dir="d", meta_learning_rate=0.1, seed=0))
    assert candidate.epochs == 1 and candidate.meta_validation == []
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(extractor, 1), before))


@pytest.mark.slow  # a whole tiny_text run with a text source stage and the target stage (about 20-40 s)
def test_a_kept_text_top_blocks_stage_is_the_backbone_inside_model_keras(tmp_path):
    target = _texts(tmp_path / "target", ["alpha", "beta", "gamma"], per_class=8, seed=0)
    source = _texts(tmp_path / "source", ["delta", "omega", "sigma"], per_class=8, seed=1)
    run = tmp_path / "run"
    assert train.main([str(target), "--backbone", "tiny_text", "--sequence-length", "16", "--strategy", "protonet",
                       "--meta-data", str(source), "--meta-input", "features", "--source-stage", "top_blocks", "--ways", "2", "--shots", "2",
                       "--queries", "2", "--finetune-epochs", "1", "--target-finetune", "no", "--unfreeze", "1",
                       "--seed", "1", "--output", str(run)]) == 0
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    summary = meta["source_stage"]["top_blocks"]
    assert meta["source_stage"]["chosen"] == "top_blocks" and list(meta["source_stage"]["candidates"]) == ["top_blocks"]
    assert summary["views"] == 1 and summary["blocks"] == 1 and 0 <= summary["epochs"] <= stage.MAX_EPOCHS
    model = load_task_model(str(run / rd.MODEL_FILE), "text")  # safe_mode=True
    saved = feature_extractor_of(model)
    keras.utils.set_random_seed(1)  # the run's --seed: the backbone it started from
    initial = get_backbone("tiny_text").build_features(16, "none")
    assert all(np.array_equal(a, b) for a, b in zip(_weights(saved, 0), _weights(initial, 0)))  # the bottom
    top_moved = any(not np.array_equal(a, b) for a, b in zip(_weights(saved, 1), _weights(initial, 1)))
    assert top_moved == (summary["epochs"] > 0)  # the kept epoch's blocks are the saved backbone's
    probabilities = model.predict(np.asarray(["apple apricot", "cherry crane"], dtype=object), verbose=0)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
