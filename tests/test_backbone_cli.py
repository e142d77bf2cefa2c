"""Backbones through the three CLIs (main()), with tiny sizes: resnet50 with random weights, a
weights file and offline ImageNet weights; a text run end to end with the tests-only tiny_text."""

from __future__ import annotations

import codecs
import json

import keras
import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from app import run_dir as rd
from models.layers import SequencePooling
from models.task_model import load_task_model

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

R50_FAST = ["--backbone", "resnet50", "--image-size", "32", "--epochs", "2"]
TINY_TEXT = ["--backbone", "tiny_text", "--sequence-length", "16"]
OFFLINE_ERROR = ("URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- [Errno -2] Name or service not known")
POSITIVE = ["good", "great", "love", "fine"]
NEGATIVE = ["bad", "awful", "hate", "not"]
NEUTRAL = ["the", "movie", "film", "food", "service", "was", "is", "very", "and", "it"]
LONG_TEXT_WORDS = 300


def assert_clean_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    assert "error" in err.lower()
    for fragment in fragments:
        assert fragment in err, err


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def find_layer(model, name):
    return next(layer for layer in all_layers(model) if layer.name == name)


# --- images: resnet50 -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "shapes"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 128, (20, 24, 3)) + 120 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A ResNet50 weights file (include_top=False) with a recognisable stem kernel, and that kernel."""
    keras.utils.set_random_seed(7)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    conv1 = reference.get_layer("conv1_conv")
    conv1.kernel.assign(conv1.kernel * 3.0)  # no initialiser draws these values
    path = tmp_path_factory.mktemp("weights") / "r50.weights.h5"
    reference.save_weights(str(path))
    return path, {name: np.asarray(reference.get_layer(name).kernel) for name in ("conv1_conv", "conv5_block3_3_conv")}


@pytest.fixture(scope="module")
def resnet_run(image_folder, resnet_weights, tmp_path_factory):
    # One resnet50 run serves all image tests: `--weights FILE` takes the same CLI path as
    # `--weights none` (random initialisation, then the file), through training, evaluation and
    # prediction; `none` itself is covered by tests/models/test_backbones.py. (A second, 25 s run
    # with `--weights none` through train.py and evaluate.py repeated this path, for the suite's time.)
    run = tmp_path_factory.mktemp("r50") / "run"
    argv = [str(image_folder), *R50_FAST, "--weights", str(resnet_weights[0]), "--output", str(run)]
    assert train.main(argv) == 0
    return run


def test_resnet50_trains_evaluates_and_predicts(resnet_run, resnet_weights, image_folder, capsys):
    metadata = rd.read_json(resnet_run / rd.METADATA_FILE)
    assert metadata["backbone"] == "resnet50" and metadata["weights"] == str(resnet_weights[0])
    assert metadata["input_spec"]["image_size"] == [32, 32] and metadata["class_names"] == ["dark", "light"]
    # 2 head epochs, then (a few files per class: auto refits) the chosen ones again on train + validation
    assert metadata["metrics"]["epochs_trained"] == 2 + sum(metadata["refit"].get("epochs", {}).values())
    config = rd.read_json(resnet_run / rd.CONFIG_FILE)
    assert config["backbone"] == "resnet50" and config["image_size"] == 32

    assert evaluate.main([str(resnet_run), str(image_folder), "--name", "own"]) == 0
    metrics = rd.read_json(resnet_run / "eval" / "own" / "metrics.json")
    manifest = rd.read_json(resnet_run / rd.MANIFEST_FILE)
    assert metrics["num_examples"] == sum(f["split"] == "test" for f in manifest["files"]) >= 2

    capsys.readouterr()
    image = image_folder / "light" / "0.png"
    assert predict.main([str(resnet_run), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [p["file"] for p in result["predictions"]] == [str(image)]
    top = result["predictions"][0]["top"]
    assert {t["class"] for t in top} == {"dark", "light"}
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
    assert top[0]["probability"] >= top[1]["probability"]


def test_resnet50_weights_file_is_used(resnet_run, resnet_weights):
    model = load_task_model(str(resnet_run / rd.MODEL_FILE))
    assert model.input_shape == (None, 32, 32, 3)
    assert find_layer(model, "caffe_normalize").reverse_channels is True
    for name, kernel in resnet_weights[1].items():
        np.testing.assert_array_equal(np.asarray(find_layer(model, name).kernel), kernel)


def test_resnet50_imagenet_offline_fails_cleanly(image_folder, tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception(OFFLINE_ERROR)

    monkeypatch.setattr(file_utils, "get_file", offline)
    run = tmp_path / "run"
    assert train.main([str(image_folder), *R50_FAST, "--output", str(run)]) == 2
    assert_clean_error(capsys.readouterr().err, "Could not download the ImageNet weights of resnet50",
                       "--weights PATH", "--backbone efficientnet_lite0")
    assert not run.exists()


def test_text_option_with_an_image_run_is_refused(resnet_run, capsys):
    assert predict.main([str(resnet_run), "--text", "hello"]) == 2
    assert_clean_error(capsys.readouterr().err, "--text needs a text model")


# --- text: tiny_text ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("text") / "reviews"
    rng = np.random.default_rng(0)
    for name, words in (("neg", NEGATIVE), ("pos", POSITIVE)):
        (root / name).mkdir(parents=True)
        for i in range(8):
            sentence = " ".join(rng.choice(NEUTRAL, 3).tolist() + rng.choice(words, 3).tolist())
            (root / name / f"{i}.txt").write_text(sentence, encoding="utf-8")
    (root / "pos" / "5.txt").write_bytes("the café food was great".encode("cp1252"))
    (root / "pos" / "6.txt").write_bytes(codecs.BOM_UTF8 + "the film is good".encode("utf-8"))
    (root / "neg" / "7.txt").write_text(" ".join(["the awful movie"] * (LONG_TEXT_WORDS // 3)), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def text_run(text_folder, tmp_path_factory):
    # One run checks both the end to end path and that --pooling / --hidden-units reach the saved
    # model (tiny_text pools by mean unless told otherwise; the round-trip test covers that default).
    run = tmp_path_factory.mktemp("tiny-text") / "run"
    argv = [str(text_folder), *TINY_TEXT, "--epochs", "3", "--pooling", "cls", "--hidden-units", "8",
            "--output", str(run)]
    assert train.main(argv) == 0
    return run


def test_text_run_records_truncation_encodings_and_input_spec(text_run):
    report = rd.read_json(text_run / rd.DATA_REPORT_FILE)
    assert report["modality"] == "text" and report["num_examples"] == 16
    truncation = report["truncation"]
    assert truncation["sequence_length"] == 16 and truncation["num_examples"] == 16
    assert truncation["num_truncated"] == 1  # only the long text exceeds 14 tokens
    assert truncation["max_tokens"] == LONG_TEXT_WORDS
    notes = {c["path"].split("/")[-1]: " ".join(c["notes"]) for c in report["converted"]}
    assert "cp1252" in notes["5.txt"] and "BOM" in notes["6.txt"]

    metadata = rd.read_json(text_run / rd.METADATA_FILE)
    assert metadata["modality"] == "text" and metadata["backbone"] == "tiny_text"
    assert metadata["input_spec"] == {"kind": "text", "dtype": "string", "sequence_length": 16}
    assert rd.read_json(text_run / rd.CONFIG_FILE)["sequence_length"] == 16


def test_text_run_evaluates_on_held_out_files(text_run, text_folder):
    assert evaluate.main([str(text_run), str(text_folder)]) == 0
    metrics = rd.read_json(text_run / "eval" / "reviews-heldout-test" / "metrics.json")
    manifest = rd.read_json(text_run / rd.MANIFEST_FILE)
    assert metrics["num_examples"] == sum(f["split"] == "test" for f in manifest["files"]) >= 2
    assert "held out" in metrics["split"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    report = (text_run / "eval" / "reviews-heldout-test" / "report.md").read_text(encoding="utf-8")
    section = report.split("## Which words decided (token attributions)", 1)[1]
    assert "predicted" in section and "Top words for the class" in section and "**" in section
    assert not any(special in section for special in ("[CLS]", "[SEP]", "[PAD]"))


def test_text_run_on_an_image_folder_says_what_to_evaluate_on(text_run, image_folder, capsys):
    capsys.readouterr()
    assert evaluate.main([str(text_run), str(image_folder)]) == 2
    assert_clean_error(capsys.readouterr().err, "expects text data", "holds image files",
                       "Evaluate it on a folder of text files (.txt, one example per file)")


def test_compare_refuses_a_run_of_the_other_modality_before_any_evaluation(text_run, resnet_run, text_folder,
                                                                            capsys):
    capsys.readouterr()
    assert evaluate.main([str(text_run), str(text_folder), "--compare", str(resnet_run), "--name", "cmp"]) == 2
    assert_clean_error(capsys.readouterr().err, "--compare needs runs of one modality",
                       f"{resnet_run} is an image run")
    assert not (text_run / "eval" / "cmp").exists()  # the first run's evaluation was written before the refusal


def test_text_run_predict_explain_writes_token_attributions_per_input(text_run, tmp_path, monkeypatch):
    from models import token_attribution

    built = []
    real_init = token_attribution.TokenAttribution.__init__

    def counted(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(token_attribution.TokenAttribution, "__init__", counted)
    file = tmp_path / "review.txt"
    file.write_text("the film was great", encoding="utf-8")
    out = tmp_path / "explain"
    assert predict.main([str(text_run), str(file), "--text", "awful food", "--explain", str(out)]) == 0
    assert len(built) == 1  # checked before predicting, then used to write: built (and traced) once
    written = sorted(p.name for p in out.iterdir())
    assert written == ["0000-review-tokens.md", "0001-text-tokens.md"]
    first = (out / written[0]).read_text(encoding="utf-8")
    assert first.startswith(f"# `{file}`") and "Predicted " in first and "> " in first
    for name in written:
        text = (out / name).read_text(encoding="utf-8")
        assert not any(special in text for special in ("[CLS]", "[SEP]", "[PAD]"))
    assert "awful" in (out / written[1]).read_text(encoding="utf-8")


def test_explain_on_a_text_run_it_cannot_attribute_is_refused_before_any_prediction(text_run, tmp_path, capsys,
                                                                                       monkeypatch):
    """predict.py prints its lines group by group as it predicts: a refusal found only after the prediction
    pass would come after lines printed and an --explain folder half written."""
    import models.token_attribution as token_attribution

    def not_bert(model):
        raise ValueError(f"{model.name!r} nests no BERT preprocessor (tokenizer)")

    monkeypatch.setattr(token_attribution, "TokenAttribution", not_bert)
    capsys.readouterr()
    assert predict.main([str(text_run), "--text", "awful food", "--explain", str(tmp_path / "explain")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_clean_error(captured.err, "--explain cannot attribute this run's predictions to tokens",
                       "nests no BERT preprocessor", "Leave --explain out.")


def test_text_run_predicts_files_and_strings(text_run, tmp_path, capsys):
    sentence = "the movie was great"
    file = tmp_path / "review.txt"
    file.write_text(sentence, encoding="utf-8")
    capsys.readouterr()
    long_text = "the film " * 10  # 90 characters: named by its first 60, marked as cut (it read as the whole text)
    assert predict.main([str(text_run), str(file), "--text", sentence, "--text", long_text, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    predictions = result["predictions"]
    assert [p["file"] for p in predictions] == [str(file), f"text: {sentence}", f"text: {long_text[:60]}…"]
    for p in predictions:
        assert {t["class"] for t in p["top"]} == {"neg", "pos"}
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1.0, abs=1e-5)
    # The same text from a file and from --text gives the same probabilities.
    assert predictions[0]["top"] == predictions[1]["top"]
    assert result["skipped"] == []
    # An empty or blank --text is refused, as an empty text file is unusable (it was classified).
    assert predict.main([str(text_run), "--text", sentence, "--text", "   "]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "text number 2 of 2 is empty or whitespace only. Received: '   '" in err
    # Bytes that are not UTF-8 reach Python as lone surrogates (TensorFlow refused them with a traceback): decoded
    # as a file's would be, or refused when nothing reads them as text.
    capsys.readouterr()
    assert predict.main([str(text_run), "--text", "the caf\udce9 food", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["predictions"][0]["file"] == "text: the café food"
    assert "--text number 1 of 1: not UTF-8: decoded as cp1252" in captured.err
    assert predict.main([str(text_run), "--text", "good", "--text", "\x01\x02\x03\x04\udcff"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--text number 2 of 2 is not UTF-8 text" in err


def test_image_backbone_on_a_text_folder_is_refused(text_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main([str(text_folder), "--backbone", "resnet50", "--output", str(run)]) == 2
    assert_clean_error(capsys.readouterr().err, "holds text files", "'resnet50' is an image backbone")
    assert not run.exists()


def test_image_size_on_a_text_folder_is_refused(text_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main([str(text_folder), *TINY_TEXT, "--image-size", "32", "--output", str(run)]) == 2
    assert_clean_error(capsys.readouterr().err, "--image-size")
    assert not run.exists()


def test_pooling_and_hidden_units_are_honoured(text_run):
    config = rd.read_json(text_run / rd.CONFIG_FILE)
    assert config["pooling"] == "cls" and config["hidden_units"] == 8
    model = load_task_model(str(text_run / rd.MODEL_FILE), "text")
    assert [layer.mode for layer in all_layers(model) if isinstance(layer, SequencePooling)] == ["cls"]
    hidden = find_layer(model, "head_hidden")
    assert isinstance(hidden, keras.layers.Dense) and hidden.units == 8
    assert hidden.kernel.shape == (16, 8)  # tiny_text features (16) -> 8 hidden units
    assert find_layer(model, "head_dense").kernel.shape == (8, 2)
