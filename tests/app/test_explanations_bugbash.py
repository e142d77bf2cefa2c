"""Explanations as a demanding user tries them: --explain folders that would mix outputs into inputs, blank heatmaps,
texts that exactly fill the model's positions, rejected inputs, and what report.md's sections say they show."""

import logging
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from PIL import Image

from app import explanations
from app.errors import UserError
from models.backbones.registry import lookup
from models.heads import ClassificationHead
from models.task_model import build_task_model
from models.token_attribution import TokenAttribution, TokenAttributions

SIZE = 32


@pytest.fixture(scope="module")
def image_run():
    """An untrained tiny_image task model as a loaded run: biases and BatchNorm start at zero, so a black image's
    feature map is zero everywhere (no gradient evidence at all)."""
    keras.utils.set_random_seed(0)
    model = build_task_model(lookup("tiny_image").build_features(SIZE, "none"), ClassificationHead(3, dropout=0.0))
    return SimpleNamespace(model=model, input_size=SIZE, resize="stretch", class_names=["blue", "green", "red"],
                           modality="image")


@pytest.fixture(scope="module")
def text_model():
    keras.utils.set_random_seed(0)
    return build_task_model(lookup("tiny_text").build_features(16, "none"), ClassificationHead(2, dropout=0.0))


def _picture(path: Path, colour, size=(SIZE, SIZE)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return str(path)


def test_an_explain_folder_inside_a_predicted_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """predict.py RUN photos --explain photos/cam wrote overlays among the photos: the next call predicted them, and
    train.py on the folder trained on them as the class's files."""
    from app import prediction

    photos = tmp_path / "photos"
    _picture(photos / "cat.png", (200, 30, 30))
    for out in (photos, photos / "cam", photos / "a" / "b"):
        with pytest.raises(UserError, match=r"lies in .*photos.*a folder being predicted.*photos-explanations"):
            explanations.refuse_input_folder(out, [str(photos)])
    # A folder beside the inputs, or a file's own folder given file by file (predict.py cat.jpg --explain .): fine.
    explanations.refuse_input_folder(tmp_path / "out", [str(photos), str(tmp_path / "missing")])
    explanations.refuse_input_folder(photos, [str(photos / "cat.png")])

    # predict.py's check comes before the folder is created (and before any prediction).
    run = SimpleNamespace(modality="image", path=tmp_path / "run")
    monkeypatch.setattr(prediction, "load_run", lambda run_dir: run)
    with pytest.raises(UserError, match="a folder being predicted"):
        prediction.prepare_prediction("run", [str(photos)], explain=str(photos / "cam"))
    assert sorted(p.name for p in photos.iterdir()) == ["cat.png"]


def test_explain_dash_is_refused_not_made_a_folder_named_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"not to standard output. Received: --explain -\."):
        explanations.explain_folder("-")
    assert not (tmp_path / "-").exists()
    assert explanations.explain_folder("./-").is_dir()  # asked for by its path, a folder named - is fine


def test_overlays_of_awkward_images_are_whole_and_a_blank_heatmap_is_reported(image_run, tmp_path, caplog):
    """Grayscale, 1x1, very wide and black images: one PNG each at the model's view, heatmaps finite in [0, 1]; a
    black image has no evidence anywhere, which the overlay (blue all over) cannot say alone: a warning does."""
    gray = tmp_path / "in" / "gray.png"
    gray.parent.mkdir(parents=True)
    Image.new("L", (40, 30), 120).save(gray)
    paths = [str(gray), _picture(tmp_path / "in" / "tiny.png", (0, 0, 255), (1, 1)),
             _picture(tmp_path / "in" / "wide.png", (0, 200, 0), (400, 10)),
             _picture(tmp_path / "in" / "black.png", (0, 0, 0)), _picture(tmp_path / "other" / "black.png", (0, 0, 0))]
    _, maps = explanations.heatmaps_for(image_run, paths, [0, 1, 2, 0, 1])
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert maps[3].max() == 0  # the black image: nothing to normalise, and no NaN from 0 / 0
    with caplog.at_level(logging.WARNING, logger="app.explanations"):
        written = explanations.write_overlays(image_run, paths, np.array([0, 1, 2, 0, 1]), tmp_path / "out")
    assert [p.name for p in written] == ["0000-gray-gradcam.png", "0001-tiny-gradcam.png", "0002-wide-gradcam.png",
                                         "0003-black-gradcam.png", "0004-black-gradcam.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)  # no leftovers
    for path in written:
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    blank = [r.getMessage() for r in caplog.records if "no positive Grad-CAM evidence" in r.getMessage()]
    assert len(blank) == 1 and blank[0].startswith("2 of 5 overlay(s)") and "0003-black-gradcam.png" in blank[0]


def test_the_report_grid_says_how_many_tiles_of_each_kind_it_shows(image_run, tmp_path):
    """The section said "then 4 correct predictions drawn at random" of a grid without one, and 'up to 8' mistakes;
    now it counts them and says how the colours read."""
    paths = [_picture(tmp_path / f"{i}.png", (40 * i, 20, 200 - 30 * i)) for i in range(5)]
    probabilities = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    run = SimpleNamespace(**vars(image_run), path=tmp_path / "run")
    out = tmp_path / "run" / "eval" / "name"
    out.mkdir(parents=True)
    every_one_wrong = explanations.explanations_section(run, paths, [0, 2, 0, 2, 1], probabilities, out)
    assert "every mistake (5, marked WRONG, most confident first), then no correct predictions (there were none)" \
        in every_one_wrong
    assert "each heatmap is scaled to its own maximum" in every_one_wrong
    assert (out / explanations.EXPLANATIONS_IMAGE).is_file()
    labels = [1, 0, 2, 0, 0]  # one mistake (the last file), four right
    assert ("every mistake (1, marked WRONG, most confident first), then 4 correct predictions drawn at random"
            in explanations.explanations_section(run, paths, labels, probabilities, out))
    many = np.tile(probabilities, (3, 1))
    wrong_labels = np.tile([0, 2, 0, 2, 1], 3)
    assert "the 8 most confident of the 15 mistakes (marked WRONG)" in explanations._shown(
        wrong_labels, many, *explanations._choose(wrong_labels, many, 8, 4, 0))


def test_a_text_that_exactly_fills_the_positions_is_not_marked_cut(text_model):
    """14 wordpieces fill a 16-position model ([CLS] and [SEP] take two): the model read every word, yet the file
    said "... (cut: the model read no further)"."""
    attribution = TokenAttribution(text_model)
    exact, longer = "great movie " * 7, "great movie " * 7 + "fine"
    results = attribution.attribute([exact, longer, "xyzzy", "\u2603"], np.array([0, 0, 1, 1]))
    assert len(results[0].words) == len(results[1].words) == 14
    assert not results[0].truncated and results[1].truncated
    assert "cut" not in explanations.render_attributions(results[0])[0]
    assert "cut" in explanations.render_attributions(results[1])[0]
    assert results[2].words == ["xyzzy"] and not results[2].truncated  # wordpieces merged back
    assert results[3].words == ["[UNK]"]  # only unknown characters: the token the model read, one share
    assert results[3].shares() in ([1.0], [-1.0], [0.0])
    for result in results:
        assert np.isfinite(result.scores).all()


def test_a_text_rejected_as_unknown_says_so_in_its_file(tmp_path, monkeypatch, caplog):
    """predict.py printed `unknown (closest: neg 0.61)` while the file said "Predicted neg (0.610)"."""
    attributor = SimpleNamespace(attribute=lambda texts, classes: [TokenAttributions(["great"], [1.0], False)
                                                                  for _ in texts])
    monkeypatch.setattr(explanations, "text_attributor", lambda run, out_dir: attributor)
    out = tmp_path / "out"
    out.mkdir()
    (out / "10000-old-tokens.md").write_text("an earlier call's 10,001st file")
    run = SimpleNamespace(class_names=["neg", "pos"])
    with caplog.at_level(logging.WARNING, logger="app.explanations"):
        written = explanations.write_text_attributions(run, ["text: a", "text: b", "text: c"], ["a", "b", "c"],
                                                       np.array([[0.61, 0.39]] * 3), out, unknown=[True, False, None])
    first, second, third = (path.read_text(encoding="utf-8").split("\n")[2] for path in written)
    assert first.startswith("Rejected as unknown (a class the run does not know); closest class neg (0.610).")
    assert second.startswith("Predicted neg (0.610).") and third.startswith("Predicted neg (0.610).")
    # An earlier call's file past index 9999 is counted as one of its files too.
    assert any("also holds 1 explanation file(s)" in r.getMessage() and "10000-old-tokens.md" in r.getMessage()
               for r in caplog.records)
