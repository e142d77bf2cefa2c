"""predict.py with awkward inputs, outputs and run directories: each case predicts what it can, or ends in one ERROR
line and exit status 2, never a traceback, never output lost without a word."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
import train
from app import run_dir as rd
from colour_folders import write_colour_folder

WORDS = {"pos": ["good great love fine", "great film love", "good food fine service"],
         "neg": ["bad awful hate", "awful movie bad", "hate the service bad"]}


def _text_folder(root: Path) -> Path:
    for name, texts in WORDS.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            (root / name / f"{i}.txt").write_text(texts[i % 3] + " very" * (i % 4), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-image")
    run = root / "run"
    assert train.main([str(write_colour_folder(root / "data", per_class=8)), "--backbone", "tiny_image", "--epochs", "2", "--seed", "1",
                       "--output", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-text")
    run = root / "run"
    assert train.main([str(_text_folder(root / "data")), "--backbone", "tiny_text", "--sequence-length", "16",
                       "--epochs", "1", "--seed", "1", "--output", str(run)]) == 0
    return run


def _one_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _picture(path: Path, colour=(220, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ inputs

def test_awkward_image_files_are_each_predicted_once_or_listed_as_skipped(image_run, tmp_path, make_image, capsys):
    inputs = tmp_path / "in"
    _picture(inputs / "a" / "x.png")
    _picture(inputs / "b" / "x.png", (30, 40, 220))
    _picture(inputs / "nested" / "deep" / "deeper" / "n.png")
    make_image(inputs / "g16.png", mode="I;16")
    make_image(inputs / "cmyk.jpg", mode="CMYK")
    frames = [Image.new("RGB", (8, 8), (c, c, c)) for c in (0, 128, 255)]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:])
    _picture(inputs / "new\nline.png")
    (inputs / "zero.png").write_bytes(b"")
    whole = (inputs / "a" / "x.png").read_bytes()
    (inputs / "truncated.png").write_bytes(whole[:len(whole) // 2])
    os.mkfifo(inputs / "fifo.png")
    os.symlink(".", inputs / "nested" / "self")  # a folder loop
    given = [str(inputs), str(inputs / "a" / "x.png"), str(inputs / "a" / "x.png")]  # duplicates of one path
    assert predict.main([str(image_run), *given, "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    files = [p["file"] for p in document["predictions"]]
    assert len(files) == len(set(files)) == 7
    assert {Path(f).name for f in files} == {"x.png", "n.png", "g16.png", "cmyk.jpg", "anim.gif", "new\nline.png"}
    assert {Path(s["file"]).name for s in document["skipped"]} == {"zero.png", "truncated.png", "fifo.png"}


def test_a_dangling_or_looping_symbolic_link_is_not_called_missing(image_run, tmp_path, capsys):
    """`ls` lists such a link: "no such file or folder" sent the user looking for a typo."""
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    good = _picture(tmp_path / "ok.png")
    assert predict.main([str(image_run), str(tmp_path / "dangling.png"), str(tmp_path / "loop1"), str(good),
                         "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    skipped = {Path(line["file"]).name: line["skipped"] for line in lines if "skipped" in line}
    assert set(skipped) == {"dangling.png", "loop1"}
    assert all("symbolic link" in reason for reason in skipped.values())
    assert [Path(line["file"]).name for line in lines if "top" in line] == ["ok.png"]


def test_a_dash_for_standard_input_says_how_to_read_it(image_run, tmp_path, monkeypatch, capsys):
    """`predict.py RUN -` (a Unix habit) was skipped as "no such file or folder", with no word of --files-from -."""
    monkeypatch.chdir(tmp_path)
    good = _picture(tmp_path / "ok.png")
    assert predict.main([str(image_run), "-", str(good), "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["skipped"] for line in lines if line["file"] == "-"] == [
        "no such file or folder (for paths on standard input, one per line: --files-from -; for a text to classify: "
        "--text STRING)"]
    assert [Path(line["file"]).name for line in lines if "top" in line] == ["ok.png"]


# ------------------------------------------------------------------------------------------------ output

def test_a_closed_standard_output_is_refused_before_any_work(image_run, tmp_path, monkeypatch, capsys):
    """Started with stdout closed (`>&-`), print() dropped every prediction, then the final flush was a
    traceback (AttributeError: 'NoneType' object has no attribute 'flush')."""
    image = _picture(tmp_path / "x.png")
    monkeypatch.setattr(sys, "stdout", None)
    assert predict.main([str(image_run), str(image)]) == 2
    _one_error(capsys, "Standard output is closed", ">&-")


def test_any_command_that_ends_with_standard_output_closed_does_not_fail_at_the_flush(monkeypatch):
    from app.cli import run_safely

    monkeypatch.setattr(sys, "stdout", None)
    assert run_safely(lambda: 0) == 0


# ------------------------------------------------------------------------------------------------ --explain

def test_overlays_are_written_a_group_at_a_time_and_same_named_files_kept_apart(image_run, tmp_path, monkeypatch,
                                                                                 capsys):
    """Every image and its heatmap were held at once: gigabytes for a large folder."""
    from app import explanations

    monkeypatch.setattr(explanations, "OVERLAY_GROUP", 2)
    sizes = []
    original = explanations.heatmaps_for

    def counted(run, paths, classes, *args, **kwargs):
        sizes.append(len(paths))
        return original(run, paths, classes, *args, **kwargs)

    monkeypatch.setattr(explanations, "heatmaps_for", counted)
    for folder in "abcde":
        _picture(tmp_path / "in" / folder / "x.png")
    out = tmp_path / "explained"
    assert predict.main([str(image_run), str(tmp_path / "in"), "--explain", str(out)]) == 0
    assert sizes == [2, 2, 1]
    assert sorted(p.name for p in out.iterdir()) == [f"000{i}-x-gradcam.png" for i in range(5)]


@pytest.mark.parametrize("inside", ["eval/mine", "eval", "logs/eval_mine", "checkpoints/x"])
def test_explain_into_a_folder_the_run_replaces_is_refused(image_run, tmp_path, capsys, inside):
    """evaluate.py --name mine swapped in a new RUN_DIR/eval/mine, and the overlays written there were gone."""
    image = _picture(tmp_path / "x.png")
    before = sorted(str(p.relative_to(image_run)) for p in image_run.rglob("*"))
    assert predict.main([str(image_run), str(image), "--explain", str(image_run / inside)]) == 2
    _one_error(capsys, "a folder the run's own commands replace", "explanations")
    assert sorted(str(p.relative_to(image_run)) for p in image_run.rglob("*")) == before


def test_an_image_gone_before_its_overlay_is_one_error_after_the_predictions(image_run, tmp_path, monkeypatch,
                                                                            capsys):
    """The file is read again for its heatmap after every line is printed: deleted in between, a traceback."""
    from app import prediction

    kept, doomed = _picture(tmp_path / "in" / "a.png"), _picture(tmp_path / "in" / "b.png")
    original = prediction.predictions_in_chunks

    def then_deleted(job):
        yield from original(job)
        doomed.unlink()

    monkeypatch.setattr(prediction, "predictions_in_chunks", then_deleted)
    assert predict.main([str(image_run), str(tmp_path / "in"), "--explain", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [str(kept), str(doomed)]
    assert "Traceback" not in captured.err
    assert "Could not read" in captured.err and "b.png" in captured.err and "after it was predicted" in captured.err


def test_a_text_file_gone_before_its_attributions_is_one_error(text_run, tmp_path, monkeypatch, capsys):
    from app import prediction

    doomed = tmp_path / "gone.txt"
    doomed.write_text("good film", encoding="utf-8")
    original = prediction.predictions_in_chunks

    def then_deleted(job):
        yield from original(job)
        doomed.unlink()

    monkeypatch.setattr(prediction, "predictions_in_chunks", then_deleted)
    assert predict.main([str(text_run), str(doomed), "--text", "great", "--explain", str(tmp_path / "out")]) == 2
    _one_error(capsys, "Could not read", "gone.txt", "after it was predicted")


# ------------------------------------------------------------------------------------------------ damaged runs

def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def test_metadata_of_another_modality_is_a_damaged_run_not_a_keras_traceback(image_run, text_run, tmp_path, capsys):
    """An image model under a text run's metadata (same class count) loaded, then failed at the first prediction
    with Keras' "Invalid input shape" traceback."""
    damaged = _copy(image_run, tmp_path)
    metadata = json.loads((damaged / rd.METADATA_FILE).read_text())
    metadata["modality"] = "text"
    metadata["input_spec"] = json.loads((text_run / rd.METADATA_FILE).read_text())["input_spec"]
    (damaged / rd.METADATA_FILE).write_text(json.dumps(metadata))
    text = tmp_path / "t.txt"
    text.write_text("good film", encoding="utf-8")
    assert predict.main([str(damaged), str(text)]) == 2
    _one_error(capsys, "describes text inputs", "takes images", "do not belong together")


def test_garbage_in_the_detector_arrays_does_not_advise_loading_it_unsafely(image_run, tmp_path, capsys):
    damaged = _copy(image_run, tmp_path)
    (damaged / "unknown.npz").write_bytes(b"not an archive")
    image = _picture(tmp_path / "x.png")
    assert predict.main([str(damaged), str(image)]) == 2
    line = _one_error(capsys, "unknown.npz", "not a NumPy .npz archive", "--reject none")
    assert "allow_pickle" not in line
    assert predict.main([str(damaged), str(image), "--reject", "none"]) == 0
