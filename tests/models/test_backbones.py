"""The backbone registry: every backbone builds, saves and loads safely with identical outputs,
names its blocks, wraps its preprocessing in serializable layers, and fails clearly on bad weights."""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import train
from models.backbones import text_bert
from models.layer_walk import flat_layers
from models.backbones import BACKBONES, get_backbone, list_backbones
from models.errors import ModelError
from models.heads import ClassificationHead
from models.layers import ImageNormalization, SequencePooling
from models.task_model import build_task_model, load_task_model
from tiny_backbones import ACCENT_VOCABULARY, TINY_VOCABULARY, write_tiny_hf_bert_folder

REGISTERED = [spec.name for spec in list_backbones()]
ALL_BACKBONES = REGISTERED + ["tiny_image", "tiny_text"]
IMAGE_SIZE = 32
SEQUENCE_LENGTH = 16
TEXTS = ["the movie was great", "awful food and very bad service", "", "the film " * 40]

# Blocks per family: EfficientNet-Lite0 and EfficientNetV2-B0 count their MBConv blocks
# (1+2+2+3+3+4+1 and 1+2+2+3+5+8), ResNet50 its bottlenecks (3+4+6+3), MobileNetV3-Small
# its 11 bottlenecks, MiniLM-L6 its 6 transformer layers, the tiny test backbones 2.
EXPECTED_BLOCKS = {
    "efficientnet_lite0": 16, "resnet50": 16, "mobilenet_v3_small": 11, "efficientnet_v2_b0": 21,
    "minilm": 6, "tiny_image": 2, "tiny_text": 2, "conv4": 4, "conv4_gray": 4,
}
# The layer before the first block (the stem, only unfrozen with "all").
STEMS = {
    "efficientnet_lite0": "stem_conv", "resnet50": "conv1_conv", "mobilenet_v3_small": "conv",
    "efficientnet_v2_b0": "stem_conv", "minilm": "token_embedding", "tiny_text": "token_embedding",
    "tiny_image": "scale",  # no stem convolution: its first conv starts block0
    "conv4": "scale", "conv4_gray": "scale",  # the classic 4-conv net has no stem either
}
NO_STEM = {"tiny_image", "conv4", "conv4_gray"}


def _size(spec) -> int:
    return IMAGE_SIZE if spec.modality == "image" else SEQUENCE_LENGTH


def _batch(modality: str):
    if modality == "image":
        return np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return tf.constant(TEXTS)


def _all_layers(model):
    """Every layer, recursing into nested models and into layers' own sublayers."""
    seen, stack, out = set(), list(model.layers), []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack += list(getattr(layer, "layers", []) or [])
        stack += list(layer._flatten_layers(include_self=False, recursive=False))
    return out


@pytest.fixture(scope="module")
def features():
    """Feature extractors with random weights, built once per backbone and shared by the tests."""
    cache = {}

    def get(name):
        if name not in cache:
            spec = get_backbone(name)
            keras.utils.set_random_seed(0)
            with warnings.catch_warnings():  # MobileNetV3 warns that 32 px is not one of its ImageNet sizes
                warnings.simplefilter("ignore", UserWarning)
                cache[name] = spec.build_features(_size(spec), "none")
        return cache[name]

    return get


def test_registry_lists_the_built_in_backbones_but_not_the_tests_only_ones():
    assert {"efficientnet_lite0", "resnet50", "mobilenet_v3_small", "efficientnet_v2_b0", "minilm"} <= set(REGISTERED)
    assert BACKBONES["tiny_image"].tests_only and BACKBONES["tiny_text"].tests_only
    assert "tiny_image" not in REGISTERED and "tiny_text" not in REGISTERED
    assert all(spec.modality in ("image", "text") for spec in list_backbones())


def _round_trip(feature_extractor, modality, tmp_path):
    keras.utils.set_random_seed(1)
    model = build_task_model(feature_extractor, ClassificationHead(3, seed=1))
    batch = _batch(modality)
    before = np.asarray(model(batch, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_task_model(str(path), modality)
    after = np.asarray(loaded(batch, training=False))
    return loaded, before, after


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_save_load_round_trip_gives_identical_outputs(name, features, tmp_path):
    spec = get_backbone(name)
    extractor = features(name)
    assert extractor.output_shape == (None, spec.feature_dim)
    loaded, before, after = _round_trip(extractor, spec.modality, tmp_path)
    assert before.shape == (3 if spec.modality == "image" else len(TEXTS), 3)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(before >= 0)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    layer_types = {type(layer).__name__ for layer in _all_layers(loaded)}
    assert "Lambda" not in layer_types
    assert loaded.inputs[0].dtype == ("uint8" if spec.modality == "image" else "string")
    if spec.modality == "text":  # both text backbones pool by mean unless told otherwise
        assert [layer.mode for layer in _all_layers(loaded) if isinstance(layer, SequencePooling)] == ["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("name,size,weights", [("efficientnet_lite0", 64, "imagenet"), ("minilm", 32, "pretrained")])
def test_pretrained_round_trip_gives_identical_outputs(name, size, weights, tmp_path):
    spec = get_backbone(name)
    random = spec.build_features(size, "none")
    pretrained = spec.build_features(size, weights)
    model = build_task_model(pretrained, ClassificationHead(3, seed=1))
    if spec.modality == "image":
        batch = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    else:
        batch = tf.constant(TEXTS)
    before = np.asarray(model(batch, training=False))
    model.save(tmp_path / "m.keras")
    loaded = load_task_model(str(tmp_path / "m.keras"), spec.modality)
    np.testing.assert_allclose(np.asarray(loaded(batch, training=False)), before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    assert "Lambda" not in {type(layer).__name__ for layer in _all_layers(loaded)}
    # The pretrained weights really are in there (not the random initialisation).
    assert not np.allclose(np.asarray(random(batch)), np.asarray(pretrained(batch)), atol=1e-3)


@pytest.mark.slow
def test_minilm_reproduces_sentence_transformers_similarities():
    extractor = get_backbone("minilm").build_features(32, "pretrained")
    assert extractor.get_layer("mean_pooling").mode == "mean"
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    vectors = np.array(extractor(tf.constant(sentences)))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Reference values from sentence-transformers/all-MiniLM-L6-v2 (mean pooling).
    assert vectors[0] @ vectors[1] == pytest.approx(0.7553, abs=0.002)
    assert vectors[0] @ vectors[2] == pytest.approx(-0.105, abs=0.01)


# --- blocks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_blocks_and_top_blocks(name, features):
    spec = get_backbone(name)
    model = features(name)
    groups = spec.blocks(model)
    assert len(groups) >= 2
    if name in EXPECTED_BLOCKS:  # a backbone registered later gets the generic checks only
        assert len(groups) == EXPECTED_BLOCKS[name]
    block_layers = [layer for group in groups for layer in group]
    assert len({id(layer) for layer in block_layers}) == len(block_layers), "a layer is in two blocks"
    # Every group starts with a layer of its own block key; keys are distinct and in network order.
    keys = [re.match(spec.block_pattern, group[0].name).group(1) for group in groups]
    assert len(set(keys)) == len(keys)
    flat = flat_layers(model)
    positions = [flat.index(group[0]) for group in groups]
    assert positions == sorted(positions)

    top2 = spec.top_blocks(model, 2)
    assert [id(layer) for layer in top2] == [id(layer) for layer in groups[-2] + groups[-1]]
    assert spec.top_blocks(model, 0) == []
    assert [id(layer) for layer in spec.top_blocks(model, 1000)] == [id(layer) for layer in block_layers]
    with pytest.raises(ValueError, match=">= 0"):
        spec.top_blocks(model, -1)

    block_ids = {id(layer) for layer in block_layers}
    if spec.modality == "image" and name not in NO_STEM:  # their first conv starts the first block
        first_conv = next(layer for layer in flat if isinstance(layer, keras.layers.Conv2D))
        assert id(first_conv) not in block_ids and flat.index(first_conv) < positions[0]
    if name in STEMS:
        stem = next(layer for layer in flat if layer.name == STEMS[name])
        assert id(stem) not in block_ids and flat.index(stem) < positions[0]
        if spec.modality == "image" and name not in NO_STEM:
            assert stem is first_conv


# --- preprocessing layers -------------------------------------------------------------------

def test_image_normalization_matches_resnet50_preprocess_input():
    batch = np.random.default_rng(3).uniform(0, 255, (4, 9, 7, 3)).astype("float32")
    layer = ImageNormalization(mean=(103.939, 116.779, 123.68), reverse_channels=True)
    expected = keras.applications.resnet50.preprocess_input(batch.copy())
    np.testing.assert_allclose(np.asarray(layer(batch)), expected, rtol=1e-6, atol=1e-4)
    uint8 = batch.astype("uint8")
    np.testing.assert_allclose(np.asarray(layer(uint8)),
                               keras.applications.resnet50.preprocess_input(uint8.astype("float32")), atol=1e-4)


def test_image_normalization_std_and_config_round_trip():
    layer = ImageNormalization(mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 0.5), reverse_channels=False, name="norm")
    x = np.full((1, 2, 2, 3), 10.0, "float32")
    np.testing.assert_allclose(np.asarray(layer(x))[0, 0, 0], [4.5, 2.0, 14.0])
    config = layer.get_config()
    assert config["mean"] == [1.0, 2.0, 3.0] and config["std"] == [2.0, 4.0, 0.5]
    assert config["reverse_channels"] is False
    clone = ImageNormalization.from_config(config)
    assert clone.name == "norm"
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ImageNormalization) and restored.get_config() == config


@pytest.mark.parametrize("kwargs", [dict(std=(1.0, 0.0, 1.0)), dict(std=(1.0, -2.0, 1.0)), dict(std=(1.0, 1.0)),
                                    dict(mean=(1.0, 2.0))])
def test_image_normalization_rejects_invalid_parameters(kwargs):
    with pytest.raises(ValueError, match="std > 0"):
        ImageNormalization(**({"mean": (0.0, 0.0, 0.0)} | kwargs))


def test_sequence_pooling_mean_ignores_padding_and_cls_takes_the_first_token():
    rng = np.random.default_rng(4)
    sequence = rng.normal(size=(3, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    mean = np.asarray(SequencePooling("mean")(sequence, mask))
    expected = np.stack([sequence[i][mask[i]].mean(axis=0) for i in range(3)])
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
    # Garbage in the padded positions changes nothing.
    noisy = sequence + 100.0 * (~mask)[..., None]
    np.testing.assert_allclose(np.asarray(SequencePooling("mean")(noisy, mask)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(SequencePooling("cls")(sequence, mask)), sequence[:, 0, :])
    layer = SequencePooling("cls", name="p")
    assert SequencePooling.from_config(layer.get_config()).mode == "cls"


def test_sequence_pooling_rejects_unknown_mode():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequencePooling("max")


# --- weights errors -------------------------------------------------------------------------

OFFLINE_ERROR = ("URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/x.h5: "
                 "None -- [Errno -2] Name or service not known")


@pytest.fixture
def offline_keras(monkeypatch):
    """keras.applications download fails as it does without network (deterministic online too)."""
    from keras.src.utils import file_utils

    calls = []

    def fail(*args, **kwargs):
        calls.append(args or kwargs)
        raise Exception(OFFLINE_ERROR)

    monkeypatch.setattr(file_utils, "get_file", fail)
    return calls


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined:UserWarning")
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_small", "efficientnet_v2_b0"])
def test_imagenet_weights_offline_give_a_clear_error_fast(name, offline_keras):
    started = time.perf_counter()
    with pytest.raises(ModelError) as info:
        get_backbone(name).build_features(IMAGE_SIZE, "imagenet")
    assert time.perf_counter() - started < 15
    assert offline_keras, "the download function was not used"
    message = str(info.value)
    assert "--weights PATH" in message and "efficientnet_lite0" in message and name in message
    assert "Name or service not known" in message


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "resnet.weights.h5"
    with pytest.raises(ModelError, match="no such file") as info:
        get_backbone("resnet50").build_features(IMAGE_SIZE, str(missing))
    assert str(missing) in str(info.value)


@pytest.fixture(scope="module")
def wrong_architecture_error(tmp_path_factory, features):
    path = tmp_path_factory.mktemp("weights") / "tiny.weights.h5"
    features("tiny_image").save_weights(str(path))
    with pytest.raises(ModelError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras warns once per unmatched container
        get_backbone("resnet50").build_features(IMAGE_SIZE, str(path))
    return path, str(info.value)


def test_weights_file_of_another_architecture(wrong_architecture_error):
    path, message = wrong_architecture_error
    assert str(path) in message and "resnet50" in message and "include_top=False" in message


def test_weights_file_error_is_short(wrong_architecture_error):
    _, message = wrong_architecture_error
    assert len(message) < 2000 and "value=[[" not in message


def test_legacy_h5_weights_file_is_loaded(tmp_path):
    """The format of Keras' own download cache (~/.keras/models/*_notop.h5), copied from another machine."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(5)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "resnet50_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    keras.utils.set_random_seed(6)
    model = get_backbone("resnet50").build_features(IMAGE_SIZE, str(path))
    for name in ("conv1_conv", "conv5_block3_3_conv"):
        np.testing.assert_array_equal(np.asarray(model.get_layer("resnet50").get_layer(name).kernel),
                                      np.asarray(reference.get_layer(name).kernel))


def test_text_backbone_rejects_image_weights():
    with pytest.raises(ModelError, match="pretrained.*none") as info:
        get_backbone("minilm").build_features(SEQUENCE_LENGTH, "imagenet")
    assert "'imagenet'" in str(info.value)


def test_keras_hub_preset_offline_names_minilm_and_local_folders(monkeypatch):
    from keras_hub.src.utils import preset_utils

    def fail(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com' ([Errno -2] Name or service not known)")

    if preset_utils.kagglehub is not None:  # without kagglehub, keras-hub fails with an ImportError instead
        monkeypatch.setattr(preset_utils.kagglehub, "model_download", fail)
    spec = get_backbone("bert_tiny_en_uncased")
    assert spec.modality == "text" and spec.default_weights == "pretrained"
    started = time.perf_counter()
    with pytest.raises(ModelError) as info:
        spec.build_features(SEQUENCE_LENGTH, "pretrained")
    assert time.perf_counter() - started < 15
    message = str(info.value)
    assert "bert_tiny_en_uncased" in message and "--backbone minilm" in message
    assert "local Hugging Face BERT folder" in message
    assert "api.kaggle.com" in message or preset_utils.kagglehub is None


def test_unknown_backbone_lists_the_choices_without_tests_only_ones():
    with pytest.raises(ModelError, match="Unknown backbone") as info:
        get_backbone("resnet5000")
    message = str(info.value)
    assert all(name in message for name in REGISTERED)
    assert "tiny_image" not in message and "tiny_text" not in message


def test_folder_with_a_non_bert_model_is_rejected(tmp_path):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCABULARY))
    with pytest.raises(ModelError, match="'gpt2'") as info:
        get_backbone(str(folder))
    assert "model_type 'bert'" in str(info.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_folder_with_a_malformed_config_is_a_model_error(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCABULARY))
    with pytest.raises(ModelError, match="config.json"):
        get_backbone(str(tmp_path))


@pytest.mark.parametrize("removed", [["vocab.txt"], ["config.json"], ["config.json", "vocab.txt"]])
def test_a_folder_missing_a_checkpoint_file_names_it(tmp_path, removed):
    folder = write_tiny_hf_bert_folder(tmp_path / "checkpoint", None)
    for name in removed:
        (folder / name).unlink()
    with pytest.raises(ModelError, match="not a Hugging Face BERT folder") as info:
        get_backbone(str(folder))
    assert f"it has no {' and no '.join(sorted(removed))}." in str(info.value)


def test_a_folder_path_that_does_not_exist_says_so(tmp_path):
    """A moved or deleted checkpoint folder (a resume of a run that used it) was only 'Unknown backbone'."""
    with pytest.raises(ModelError, match="looks like a folder path but no such folder exists"):
        get_backbone(str(tmp_path / "gone"))
    with pytest.raises(ModelError, match="Unknown backbone"):  # a plain name stays an unknown name
        get_backbone("gone")


def test_a_folder_of_damaged_checkpoint_files_is_one_line_naming_the_files(tmp_path):
    from safetensors.numpy import save_file

    folder = write_tiny_hf_bert_folder(tmp_path / "checkpoint", None)
    # Another checkpoint's weights: keras-hub's message printed the whole variable, a dozen lines.
    save_file({"embeddings.word_embeddings.weight": np.zeros((len(ACCENT_VOCABULARY), 384), "float32")},
              str(folder / "model.safetensors"))
    with pytest.raises(ModelError) as info:
        get_backbone(str(folder)).build_features(SEQUENCE_LENGTH, "pretrained")
    message = str(info.value)
    assert "\n" not in message and "value.shape=(14, 384)" in message and "model.safetensors" in message
    assert "downloaded" not in message  # nothing is downloaded for a local folder
    # A config.json without a key keras-hub needs: the message was the bare key.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "num_hidden_layers"}))
    with pytest.raises(ModelError, match="'num_hidden_layers' is missing \\(a key of config.json"):
        get_backbone(str(folder)).build_features(SEQUENCE_LENGTH, "none")
    (folder / "config.json").write_text(json.dumps(config))
    # A vocabulary without [UNK]: keras-hub's message has two lines.
    (folder / "vocab.txt").write_text("the\ncafe\n", encoding="utf-8")
    with pytest.raises(ModelError, match="UNK") as info:
        get_backbone(str(folder)).build_features(SEQUENCE_LENGTH, "none")
    assert "\n" not in str(info.value) and "vocab.txt" in str(info.value)


def test_a_vocabulary_larger_than_the_embedding_table_is_refused_when_built(tmp_path):
    """Another checkpoint's vocab.txt: ids past config.json's vocab_size failed in TensorFlow at the first text."""
    folder = write_tiny_hf_bert_folder(tmp_path / "checkpoint", None)  # vocab_size: len(ACCENT_VOCABULARY)
    (folder / "vocab.txt").write_text("\n".join(ACCENT_VOCABULARY + ["extra", "words"]) + "\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"vocabulary of {len(ACCENT_VOCABULARY) + 2} tokens .* embedding table of "
                                         f"{len(ACCENT_VOCABULARY)}"):
        get_backbone(str(folder)).build_features(SEQUENCE_LENGTH, "none")


def test_a_sequence_length_over_the_checkpoints_positions_says_what_fits(tmp_path):
    folder = write_tiny_hf_bert_folder(tmp_path / "checkpoint", None)  # max_position_embeddings 64
    with pytest.raises(ModelError, match="Received: --sequence-length 128 .*Pass --sequence-length 64 or less"):
        get_backbone(str(folder)).build_features(128, "none")
    assert get_backbone(str(folder)).build_features(64, "none").output_shape == (None, 16)


@pytest.fixture
def minilm_copy(tmp_path):
    """The packaged MiniLM folder copied to tmp (the 90 MB weights file symlinked)."""
    source = text_bert.minilm_path()
    copy = tmp_path / "my-minilm"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(source / "model.safetensors")
    return copy


def test_local_hugging_face_folder_is_a_text_backbone(minilm_copy):
    spec = get_backbone(str(minilm_copy))
    assert spec.modality == "text" and spec.feature_dim == 384 and spec.default_weights == "pretrained"
    assert spec.name == str(minilm_copy.resolve())
    model = spec.build_features(SEQUENCE_LENGTH, "none")
    pooling = [layer for layer in model.layers if isinstance(layer, SequencePooling)]
    assert [layer.mode for layer in pooling] == ["mean"]  # 1_Pooling says mean tokens

    # Each sentence-transformers marker alone means mean pooling; a plain BERT folder means [CLS].
    shutil.rmtree(minilm_copy / "1_Pooling")
    assert text_bert.default_pooling(minilm_copy) == "mean"
    (minilm_copy / "modules.json").unlink()
    assert text_bert.default_pooling(minilm_copy) == "mean"
    (minilm_copy / "sentence_bert_config.json").unlink()
    assert text_bert.default_pooling(minilm_copy) == "cls"
    plain = get_backbone(str(minilm_copy)).build_features(SEQUENCE_LENGTH, "none")
    assert [layer.mode for layer in plain.layers if isinstance(layer, SequencePooling)] == ["cls"]


# --- train.py --list-backbones --------------------------------------------------------------

def test_list_backbones(capsys, features):
    assert train.main(["--list-backbones"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    for spec in list_backbones():
        row = rows[spec.name]
        assert row[1] == spec.modality
        assert row[2] == f"{features(spec.name).count_params() / 1e6:.1f}M"
    assert "tiny_image" not in out and "tiny_text" not in out
