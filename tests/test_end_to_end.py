"""The three CLIs through main() on the bundled sample with the real pretrained weights."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import evaluate
import predict
import train
from app import run_dir as rd
from models.task_model import load_task_model
from data.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "fashion_mnist"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("e2e") / "run"
    assert train.main([str(SAMPLE), "--output", str(run)]) == 0
    return run


def test_run_directory_is_complete(trained_run):
    for name in (rd.MODEL_FILE, rd.METADATA_FILE, rd.CONFIG_FILE, rd.HISTORY_FILE, rd.DATA_REPORT_FILE, rd.MANIFEST_FILE):
        assert (trained_run / name).is_file(), name
    assert not (trained_run / rd.INCOMPLETE_MARKER).exists()
    metadata = rd.read_json(trained_run / rd.METADATA_FILE)
    assert metadata["class_names"] == sorted(p.name for p in (SAMPLE / "train").iterdir())
    assert metadata["input_spec"]["image_size"] == [224, 224]
    assert metadata["versions"]["keras"].startswith("3.")
    history = rd.read_json(trained_run / rd.HISTORY_FILE)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history["epochs"][0])
    config = rd.read_json(trained_run / rd.CONFIG_FILE)
    assert config["seed"] == 42 and config["image_size"] == 224
    logs = {p.parent.name for p in (trained_run / "logs").rglob("events.out.tfevents.*")}
    assert {"train", "validation"} <= logs


def test_manifest_never_puts_test_files_in_training(trained_run):
    manifest = rd.read_json(trained_run / rd.MANIFEST_FILE)
    splits = {f["path"]: f["split"] for f in manifest["files"]}
    assert all(split == "test" for path, split in splits.items() if path.startswith("test/"))
    assert {"train", "val", "test"} == set(splits.values())
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])
    meta = manifest["class_splits"]
    assert set(meta) == set(manifest["class_names"])
    assert set(meta.values()) == {"meta_train", "meta_val", "meta_test"}


def test_saved_model_loads_safely_and_serves_raw_pixels(trained_run):
    model = load_task_model(str(trained_run / rd.MODEL_FILE))
    image = load_image(str(next((SAMPLE / "test" / "bag").iterdir())), (224, 224))
    probabilities = model.predict(image[None], verbose=0)
    assert probabilities.shape == (1, 10)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-5)


def test_evaluate_on_test_split_is_far_above_chance(trained_run, capsys):
    assert evaluate.main([str(trained_run), str(SAMPLE)]) == 0
    out_dir = trained_run / "eval" / "fashion_mnist-test"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["num_examples"] == 200
    assert metrics["accuracy"] >= 0.6, metrics["accuracy"]  # chance is 0.1
    assert sum(map(sum, metrics["confusion_matrix"])) == 200
    assert (out_dir / "report.md").read_text().count("|") > 40
    assert (out_dir / "confusion_matrix.png").stat().st_size > 10_000
    assert "Accuracy" in capsys.readouterr().out


def test_evaluate_never_scores_the_training_files_even_from_another_folder(trained_run, tmp_path, capsys):
    flat = tmp_path / "flat"
    (flat).symlink_to(SAMPLE / "train", target_is_directory=True)
    # Another path to the training files: the manifest's hashes recognise every one (the run refitted on train +
    # validation, so all 300 were fitted on), and there is nothing honest left to score.
    capsys.readouterr()
    assert evaluate.main([str(trained_run), str(flat), "--name", "flat"]) == 2
    assert "Every one of the 300 files chosen (all files of the folder) is byte-identical" in capsys.readouterr().err
    assert not (trained_run / "eval" / "flat").exists()


def test_predict_json_lists_top_k_per_file(trained_run, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    folder = SAMPLE / "test" / "trouser"
    assert predict.main([str(trained_run), str(folder), str(tmp_path / "notes.txt"), "--json", "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["predictions"]) == 20
    assert all(len(p["top"]) == 2 for p in result["predictions"])
    assert sum(p["top"][0]["class"] == "trouser" for p in result["predictions"]) >= 15
    assert result["skipped"][0]["file"].endswith("notes.txt")


def test_a_run_resized_otherwise_still_predicts_and_says_its_inputs_differ(trained_run, capsys, tmp_path):
    """Runs record the resampling their images had; one trained before it (no key) warns when opened."""
    assert rd.read_json(trained_run / rd.METADATA_FILE)["input_spec"]["resampling"] == "area+bilinear"
    older = tmp_path / "older-run"
    shutil.copytree(trained_run, older)
    metadata = rd.read_json(older / rd.METADATA_FILE)
    del metadata["input_spec"]["resampling"]
    rd.write_json(older / rd.METADATA_FILE, metadata)
    capsys.readouterr()
    assert predict.main([str(older), str(SAMPLE / "test" / "trouser"), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["predictions"]) == 20
    assert "was trained on images resized with pillow-bilinear" in captured.err
    assert predict.main([str(trained_run), str(SAMPLE / "test" / "trouser"), "--json"]) == 0
    assert "resized with" not in capsys.readouterr().err
