"""protonet / reptile / fomaml / maml through train.main: episodes, the classifier bundle, the saved learner."""

import keras
import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from app import run_dir as rd
from app.meta_training import META_LEARNER_FILE
from models.task_model import load_task_model

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}
EPISODES = ["--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "3",
            "--meta-epochs", "2", "--inner-steps", "2", "--embedding-units", "8", "--epochs", "3", "--seed", "1"]
# tiny_image has random weights: "auto" would train it on raw inputs; these tests want the features mode.
FEATURES = ["--meta-input", "features"]


def _folder(root, colours, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def colour_folder(tmp_path):
    return _folder(tmp_path / "colours", COLOURS)


@pytest.mark.parametrize("strategy", ["protonet", "reptile", "fomaml", "maml"])
def test_meta_strategy_writes_a_standard_classifier_and_its_learner(colour_folder, tmp_path, strategy):
    run = tmp_path / strategy
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", strategy, "--output", str(run),
                       *EPISODES, *FEATURES]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["strategy"] == strategy
    meta = metadata["meta"]
    assert meta["algorithm"] == strategy and meta["input"] == "features" and meta["ways"] == 3
    assert meta["batchnorm"] == "inductive" and meta["transductive"] is False
    history = rd.read_json(run / rd.HISTORY_FILE)
    names = [p["name"] for p in history["phases"]]
    assert names == (["meta"] if strategy == "protonet" else ["meta", "head"])
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, len(history["epochs"]) + 1))
    model = load_task_model(str(run / rd.MODEL_FILE))
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probabilities.shape == (2, 4) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    import models.meta  # noqa: F401  (registers the learners)

    learner = keras.saving.load_model(run / META_LEARNER_FILE, safe_mode=True, compile=False)
    assert type(learner).__name__.lower() == strategy.replace("protonet", "protonet")
    assert evaluate.main([str(run), str(colour_folder), "--name", "check"]) == 0
    assert not (run / "checkpoints").exists() and not (run / rd.INCOMPLETE_MARKER).exists()


def test_protonet_head_is_the_prototypes_of_the_training_set(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run),
                       *EPISODES, *FEATURES]) == 0
    model = load_task_model(str(run / rd.MODEL_FILE))
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    train_files = [(f["path"], manifest["class_names"].index(f["label"])) for f in manifest["files"]
                   if f["split"] == "train"]
    from data.images import load_image

    pixels = np.stack([load_image(str(colour_folder / p), (32, 32)) for p, _ in train_files])
    labels = np.asarray([y for _, y in train_files])
    embed = keras.Model(model.inputs, model.get_layer("head_dense").input)
    embeddings = embed.predict(pixels, verbose=0)
    prototypes = np.stack([embeddings[labels == c].mean(axis=0) for c in range(4)])
    distances = ((embeddings[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(model.predict(pixels, verbose=0).argmax(axis=1), distances.argmin(axis=1))


def test_raw_mode_trains_conv4_from_scratch(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "conv4", "--image-size", "16", "--strategy", "protonet",
                       "--output", str(run), *EPISODES]) == 0
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    assert meta["input"] == "raw"


def test_meta_data_folder_must_not_share_classes(colour_folder, tmp_path, capsys):
    meta = _folder(tmp_path / "meta", {"Red": (200, 0, 0), "cyan": (0, 200, 200), "pink": (250, 150, 150)})
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    assert "'Red' (target: 'red')" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or (tmp_path / "run" / rd.INCOMPLETE_MARKER).exists()


def test_meta_data_folder_and_init_from_an_earlier_run(colour_folder, tmp_path):
    meta = _folder(tmp_path / "meta", {f"c{i}": (40 * i, 255 - 40 * i, 90) for i in range(6)}, per_class=8, seed=3)
    first = tmp_path / "first"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--meta-data",
                       str(meta), "--output", str(first), *EPISODES, *FEATURES]) == 0
    assert str(meta) in rd.read_json(first / rd.METADATA_FILE)["meta"]["episodes_from"]
    # The meta-data folder's files and class-disjoint split are recorded, like the target's manifest.
    meta_manifest = rd.read_json(first / "meta_manifest.json")
    assert len(meta_manifest["files"]) == 6 * 8 and all(len(f["sha256"]) == 64 for f in meta_manifest["files"])
    splits = meta_manifest["class_splits"]
    assert set(splits) == {f"c{i}" for i in range(6)} and set(splits.values()) == {"meta_train", "meta_val"}
    assert all(f["split"] == splits[f["label"]] for f in meta_manifest["files"])
    second = tmp_path / "second"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--init", str(first),
                       "--output", str(second), *EPISODES, *FEATURES]) == 0
    bad = tmp_path / "bad"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "reptile", "--init", str(first),
                       "--output", str(bad), *EPISODES, *FEATURES]) == 2


def test_maml_refuses_when_second_order_would_not_fit(colour_folder, tmp_path, monkeypatch, capsys):
    import models.meta.memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda *args, **kwargs: 1024)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "maml", "--output",
                       str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    assert "fomaml" in capsys.readouterr().err


SLOW_META_TRAIN = """
import sys, time
sys.path.insert(0, {root!r})
import tests.tiny_backbones
import app.phases as phases
# Slow every meta step down so that kill -9 lands in the middle of a meta epoch.
phases.EpochSummary.on_train_batch_end = lambda self, batch, logs=None: time.sleep(0.15)
import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_meta_run_killed_mid_meta_epoch_resumes(colour_folder, tmp_path):
    """kill -9 during meta-training, then --resume: the meta phase continues from its last completed
    epoch, the head follows, the history is continuous and the run ends complete with its learner."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from app.checkpoints import CHECKPOINTS_DIR, Checkpoints

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    args = [str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--output", str(run),
            *EPISODES, *FEATURES, "--meta-epochs", "4", "--meta-steps", "6", "--patience", "10"]
    process = subprocess.Popen([sys.executable, "-c", SLOW_META_TRAIN.format(root=str(root)), *args],
                               env=dict(os.environ, KERAS_BACKEND="tensorflow"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = run / CHECKPOINTS_DIR / "latest.json"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if pointer.is_file() and rd.read_json(pointer)["checkpoint"].endswith("meta-epoch-0001"):
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    time.sleep(0.3)  # inside the second meta epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (run / rd.INCOMPLETE_MARKER).exists()
    state, _ = Checkpoints(run).latest()
    done_before = len(state["history"])
    assert done_before >= 1 and all(e["phase"] == "meta" for e in state["history"])

    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, len(history) + 1))
    assert history[:done_before] == state["history"]
    phases = [e["phase"] for e in history]
    assert phases == sorted(phases, key=["meta", "head"].index) and phases[-1] == "head"
    assert phases.count("meta") == 4  # the four meta epochs in all, none repeated
    assert rd.read_json(run / rd.METADATA_FILE)["resumed"] is True
    assert (run / META_LEARNER_FILE).is_file()
    load_task_model(str(run / rd.MODEL_FILE))
