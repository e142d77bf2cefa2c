"""Text fine-tuning over the cached hidden states of the frozen lower blocks (app/text_phase2.py):
when it applies, that its batches are the text batches' (same order), and that it trains the
task model exactly as running the whole backbone per step does."""

import keras
import numpy as np
import pytest

from app import text_phase2
from app.checkpoints import Checkpoints
from app.config import TrainConfig
from app.phases import PhaseContext, finetune_backbone, finetune_inputs
from app.text_phase2 import activation_dataset, text_phase2_cut
from data.pipeline import text_dataset
from data.records import Example
from models.backbones import get_backbone
from models.heads import ClassificationHead
from models.task_model import build_task_model
from models.text_split import split_text_extractor

WORDS = {"pos": "good great fine love film", "neg": "bad awful hate not service"}


def _examples(root, per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for label, name in enumerate(WORDS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            path = root / name / f"{i}.txt"
            path.write_text(" ".join(rng.choice(WORDS[name].split(), 5)), encoding="utf-8")
            examples.append(Example(str(path), label, "train"))
    return examples


def _dropout_free_extractor():
    """tiny_text's architecture without dropout: training the top over cached hidden states is then
    the same computation as training the whole model (with dropout, the frozen lower blocks would
    drop units at every step of the whole-model run only)."""
    import keras_hub

    from models.backbones.text_bert import bert_feature_model
    from tiny_backbones import TINY_VOCABULARY

    keras.utils.set_random_seed(3)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=TINY_VOCABULARY, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(TINY_VOCABULARY), num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=64, dropout=0.0)
    return bert_feature_model(tokenizer, backbone, 16, "mean", "tiny_text")


def test_the_cut_applies_to_text_with_blocks_left_below_and_within_the_memory_budget(monkeypatch):
    spec = get_backbone("tiny_text")
    extractor = spec.build_features(16, "none")
    config = TrainConfig(data_dir="d", unfreeze="1")
    assert text_phase2_cut(config, spec, extractor, "text", 10).top_blocks == 1
    assert text_phase2_cut(config, spec, extractor, "image", 10) is None
    assert text_phase2_cut(TrainConfig(data_dir="d", unfreeze="all"), spec, extractor, "text", 10) is None
    assert text_phase2_cut(TrainConfig(data_dir="d", unfreeze="2"), spec, extractor, "text", 10) is None  # no block below
    per_text = 16 * 16 * 4 + 16
    monkeypatch.setattr(text_phase2, "activation_budget_bytes", lambda: 10 * per_text)
    assert text_phase2_cut(config, spec, extractor, "text", 10) is not None
    assert text_phase2_cut(config, spec, extractor, "text", 11) is None


def test_activation_batches_follow_the_text_batches_order(tmp_path):
    spec = get_backbone("tiny_text")
    extractor = spec.build_features(16, "none")
    split = split_text_extractor(extractor, spec, 1)
    texts = [f"good film {i}" if i % 2 else f"bad service {i}" for i in range(11)]
    labels = list(range(11))
    for shuffle in (False, True):
        cached = list(activation_dataset(split, texts, labels, 4, shuffle=shuffle, seed=5))
        plain = list(text_dataset(texts, labels, 4, shuffle=shuffle, seed=5))
        assert [b[1].numpy().tolist() for b in cached] == [b[1].numpy().tolist() for b in plain]
        for (inputs, _), (batch_texts, _) in zip(cached, plain):
            hidden, mask = split.bottom(batch_texts)
            np.testing.assert_array_equal(inputs[0].numpy(), hidden.numpy())
            np.testing.assert_array_equal(inputs[1].numpy(), mask.numpy())
    assert int(activation_dataset(split, [], None, 4).cardinality().numpy()) == 0  # no texts: no batches


def _fine_tuned(tmp_path, examples, weights, cut: bool, pair_loss: float = 0.0):
    spec = get_backbone("tiny_text")
    extractor = _dropout_free_extractor()
    head = ClassificationHead(2, 0.0, seed=0)
    task_model = build_task_model(extractor, head)
    task_model.set_weights(weights)
    config = TrainConfig(data_dir=str(tmp_path), strategy="finetune", unfreeze="1", finetune_epochs=3, batch_size=4,
                         finetune_learning_rate=0.01, lr_decay=0.5, seed=2, patience=5, pair_loss=pair_loss)
    text_cut = text_phase2_cut(config, spec, extractor, "text", len(examples)) if cut else None
    assert (text_cut is not None) == cut
    train, val = examples[:8], examples[8:]
    inputs = finetune_inputs(config, "text", 16, train, val, 2, text_cut)
    assert inputs.val_labels == [e.label for e in val] and inputs.text_cut is text_cut
    context = PhaseContext(config, tmp_path / "logs", Checkpoints(tmp_path / "checkpoints"), list(WORDS))
    result = finetune_backbone(context, spec, extractor, task_model, head.layers, inputs, epoch_offset=0, step_offset=0)
    assert result.epochs == 3
    return task_model


@pytest.mark.parametrize("pair_loss", [0.0, 1.0])  # 1: the pair loss's training model (models/pair_loss.py), both ways
def test_training_over_cached_hidden_states_trains_the_task_model_as_the_whole_backbone_does(tmp_path, pair_loss):
    examples = _examples(tmp_path / "texts")
    order = np.random.default_rng(1).permutation(len(examples))
    examples = [examples[i] for i in order]
    start = build_task_model(_dropout_free_extractor(), ClassificationHead(2, 0.0, seed=0)).get_weights()
    whole = _fine_tuned(tmp_path / "whole", examples, start, cut=False, pair_loss=pair_loss)
    cached = _fine_tuned(tmp_path / "cached", examples, start, cut=True, pair_loss=pair_loss)
    moved = [not np.allclose(a, b) for a, b in zip(start, cached.get_weights())]
    assert any(moved) and not all(moved)  # the top block and head trained, the bottom stayed frozen
    for a, b in zip(whole.get_weights(), cached.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    texts = np.asarray(["good film love", "awful service"], dtype=object)
    np.testing.assert_allclose(cached.predict(texts, verbose=0), whole.predict(texts, verbose=0), atol=1e-5)
