"""Text backbones tokenise as their checkpoint's own tokenizer does: an uncased Hugging Face checkpoint strips
accents (Hugging Face's BertTokenizer does whenever it lowercases), a checkpoint that says otherwise keeps them,
and a model saved before (its tokenizer config says strip_accents false) loads and reads text as it did."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.backbones import get_backbone
from models.backbones.text_bert import hf_tokenizer_options, minilm_path
from models.heads import ClassificationHead
from models.task_model import build_task_model, load_task_model
from models.text_layers import InlineVocabularyBertTokenizer
from tiny_backbones import ACCENT_VOCABULARY, write_tiny_hf_bert_folder

SEQUENCE_LENGTH = 16
ID = {token: i for i, token in enumerate(ACCENT_VOCABULARY)}


def _extractor(tmp_path, tokenizer_config):
    folder = write_tiny_hf_bert_folder(tmp_path / "checkpoint", tokenizer_config)
    return get_backbone(str(folder)).build_features(SEQUENCE_LENGTH, "none")


def _tokenizer(model):
    return next(layer for layer in model._flatten_layers() if layer.name == "tokenize").tokenizer


def _ids(model, texts):
    """Token ids through the preprocessor, eagerly (keras-hub's Python path) and in a graph (the TF path that
    model.keras's predict and the SavedModel run); both must agree."""
    preprocessor = next(layer for layer in model._flatten_layers() if layer.name == "tokenize")
    graph = tf.function(lambda x: preprocessor(x)["token_ids"])(tf.constant(texts)).numpy()
    eager = np.stack([np.asarray(preprocessor(text)["token_ids"]) for text in texts])
    np.testing.assert_array_equal(graph, eager)
    return graph


def _rewrite_tokenizer_config(path, edit):
    """Edit the tokenizer's config inside a .keras archive (what an older metatune wrote)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "InlineVocabularyBertTokenizer":
                edit(node["config"])
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    assert len(found) == 1
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("config", [{"do_lower_case": True}, {"do_lower_case": True, "strip_accents": None}])
def test_an_uncased_checkpoint_reads_accented_words_as_their_plain_letters(tmp_path, config):
    model = _extractor(tmp_path, config)
    tokenizer = _tokenizer(model)
    assert (tokenizer.lowercase, tokenizer.strip_accents) == (True, True)
    accented, plain = _ids(model, ["café crème", "CAFE creme"])
    np.testing.assert_array_equal(accented, plain)
    assert accented[:4].tolist() == [ID["[CLS]"], ID["cafe"], ID["creme"], ID["[SEP]"]]
    np.testing.assert_array_equal(model(tf.constant(["café crème"])), model(tf.constant(["cafe creme"])))


def test_a_checkpoint_that_keeps_accents_keeps_them(tmp_path):
    model = _extractor(tmp_path, {"do_lower_case": True, "strip_accents": False})
    assert (_tokenizer(model).lowercase, _tokenizer(model).strip_accents) == (True, False)
    accented, plain = _ids(model, ["Café Crème", "cafe creme"])
    assert accented[1:3].tolist() == [ID["café"], ID["crème"]] and plain[1:3].tolist() == [ID["cafe"], ID["creme"]]


def test_a_cased_checkpoint_neither_lowercases_nor_strips_unless_it_says_so(tmp_path):
    cased = _extractor(tmp_path / "cased", {"do_lower_case": False})
    assert (_tokenizer(cased).lowercase, _tokenizer(cased).strip_accents) == (False, False)
    assert _ids(cased, ["Cafe café"])[0][1:3].tolist() == [ID["Cafe"], ID["café"]]
    stripped = _extractor(tmp_path / "stripped", {"do_lower_case": False, "strip_accents": True})
    assert _ids(stripped, ["Café"])[0][1] == ID["Cafe"]


@pytest.mark.parametrize("config,expected", [
    ({"do_lower_case": True, "tokenize_chinese_chars": True}, [ID["北"], ID["京"]]),
    ({"do_lower_case": True, "tokenize_chinese_chars": False}, [ID["北京"]]),
])
def test_chinese_characters_split_as_the_checkpoint_says_and_survive_a_save(tmp_path, config, expected):
    model = _extractor(tmp_path, config)
    assert _ids(model, ["北京"])[0][1:1 + len(expected)].tolist() == expected
    model.save(tmp_path / "features.keras")
    loaded = keras.saving.load_model(tmp_path / "features.keras", safe_mode=True)
    assert _tokenizer(loaded).split_on_cjk is config["tokenize_chinese_chars"]
    assert _ids(loaded, ["北京"])[0][1:1 + len(expected)].tolist() == expected


def test_options_follow_hugging_faces_rules(tmp_path):
    def options(config, sentence=None):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        if config is not None:
            (folder / "tokenizer_config.json").write_text(json.dumps(config))
        if sentence is not None:
            (folder / "sentence_bert_config.json").write_text(json.dumps(sentence))
        return tuple(hf_tokenizer_options(folder).values())

    assert options(None) == (True, True, True)  # BertTokenizer's defaults
    assert options({"do_lower_case": True, "strip_accents": None}) == (True, True, True)
    assert options({"do_lower_case": True, "strip_accents": False}) == (True, False, True)
    assert options({"do_lower_case": False}) == (False, False, True)
    assert options({"do_lower_case": False, "strip_accents": True, "tokenize_chinese_chars": False}) == (False, True,
                                                                                                         False)
    # sentence-transformers lowercases before a cased tokenizer, which still does not strip accents.
    assert options({"do_lower_case": False}, {"do_lower_case": True}) == (True, False, True)


def test_minilm_follows_its_shipped_tokenizer_config():
    config = json.loads((minilm_path() / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["strip_accents"] is None
    assert hf_tokenizer_options(minilm_path()) == {"lowercase": True, "strip_accents": True, "split_on_cjk": True}


def test_the_tokenizer_normalisation_survives_save_and_load(tmp_path):
    extractor = _extractor(tmp_path, None)
    model = build_task_model(extractor, ClassificationHead(2, 0.0, seed=0))
    model.save(tmp_path / "model.keras")
    loaded = load_task_model(str(tmp_path / "model.keras"), "text")
    tokenizer = _tokenizer(loaded)
    assert isinstance(tokenizer, InlineVocabularyBertTokenizer)
    assert (tokenizer.lowercase, tokenizer.strip_accents, tokenizer.split_on_cjk) == (True, True, True)
    texts = tf.constant(["café crème", "cafe creme", "the"])
    np.testing.assert_allclose(loaded.predict(texts, verbose=0), model.predict(texts, verbose=0), atol=1e-6)


def test_a_model_saved_before_accents_were_stripped_loads_and_reads_as_before(tmp_path):
    """What an older metatune saved for an uncased checkpoint: strip_accents false and no split_on_cjk key."""
    extractor = _extractor(tmp_path, None)
    model = build_task_model(extractor, ClassificationHead(2, 0.0, seed=0))
    path = tmp_path / "model.keras"
    model.save(path)

    def old(config):
        assert config["strip_accents"] is True
        config["strip_accents"] = False
        del config["split_on_cjk"]
    _rewrite_tokenizer_config(path, old)

    loaded = load_task_model(str(path), "text")
    tokenizer = _tokenizer(loaded)
    assert (tokenizer.lowercase, tokenizer.strip_accents, tokenizer.split_on_cjk) == (True, False, True)
    # Accents kept, as it read them in training (this vocabulary has the accented words; MiniLM's has not: [UNK]).
    assert _ids(loaded, ["Café crème"])[0][:4].tolist() == [ID["[CLS]"], ID["café"], ID["crème"], ID["[SEP]"]]
    plain = tf.constant(["cafe creme", "the"])
    np.testing.assert_allclose(loaded.predict(plain, verbose=0), model.predict(plain, verbose=0), atol=1e-6)
    # It saves again as it loaded.
    loaded.save(tmp_path / "again.keras")
    again = _tokenizer(load_task_model(str(tmp_path / "again.keras"), "text"))
    assert (again.lowercase, again.strip_accents, again.split_on_cjk) == (True, False, True)


def test_from_tokenizer_refuses_unknown_options():
    with pytest.raises(ValueError, match="lower_case"):
        InlineVocabularyBertTokenizer.from_tokenizer(None, lower_case=True)  # checked before the tokenizer is read


def test_a_folder_backbone_runs_under_its_own_name(tmp_path):
    """A folder's label is its absolute path; its extractor's name once started with "_" ("/tmp/..." ->
    "_tmp_..._features"), which TensorFlow refuses as a name scope: predicting features (what train.py does first)
    failed with a traceback."""
    extractor = _extractor(tmp_path, None)
    assert extractor.name[0].isalnum()
    features = extractor.predict(tf.constant(["the cafe", "creme"]), verbose=0)
    assert features.shape == (2, 16) and np.isfinite(features).all()
