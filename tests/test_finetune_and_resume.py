"""The finetune strategy, the feature cache, NaN handling and resume after kill -9, through train.main."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import train
from app import run_dir as rd
from app.checkpoint_state import CheckpointState
from app.checkpoints import CHECKPOINTS_DIR, Checkpoints
from models.task_model import load_task_model
from tests.parked_training import kill_inside_epoch_after
from tests.tensorboard_events import scalar_points, tensor_steps

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def colour_folder(tmp_path):
    """Three classes of noisy solid-colour PNGs (12 each): learnable in a few epochs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "colours"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


# A recall the colour folder's 6 validation files can keep: at 0.95 (19 files needed) the unknown-class detector
# sets no threshold, and a refit would have none to carry over (app/unknown_scores.detector_threshold).
FEW_FILES_RECALL = ["--reject-recall", "0.6"]


def _train(folder, run, *extra):
    return train.main([str(folder), "--backbone", "tiny_image", "--output", str(run), "--seed", "3",
                       *FEW_FILES_RECALL, *extra])


def _tags(run: Path, subdir: str) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (run / "logs" / subdir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["tensors"])
    return tags


def test_finetune_trains_both_phases_and_saves_a_plain_classifier(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert _train(colour_folder, run, "--strategy", "finetune", "--epochs", "4", "--finetune-epochs", "3",
                  "--unfreeze", "all", "--label-smoothing", "0.1", "--mixup", "0.2", "--refit", "no") == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    assert not (run / CHECKPOINTS_DIR).exists()  # only needed to resume
    history = rd.read_json(run / rd.HISTORY_FILE)
    assert [p["name"] for p in history["phases"]] == ["head", "finetune"]
    head_epochs = history["phases"][0]["epochs"]
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, len(history["epochs"]) + 1))
    assert [e["phase_epoch"] for e in history["epochs"] if e["phase"] == "finetune"] == [1, 2, 3][:history["phases"][1]["epochs"]]
    assert history["epochs"][head_epochs]["phase"] == "finetune"
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["strategy"] == "finetune" and metadata["precision"] == "float32"
    model = load_task_model(str(run / rd.MODEL_FILE))
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # Phase 2 trained through an augmentation layer; the saved classifier does not contain it.
    assert not [layer for layer in model._flatten_layers() if "augment" in type(layer).__name__.lower()]
    assert {"phase", "learning_rate", "sample_augmented_inputs", "sample_inputs"} <= _tags(run, "train")
    # Each step's learning rate is the one it used: the cosine schedule's last step used a positive rate (read
    # after the step, it is the next step's, 0); the epoch's rate is its last step's.
    rates = scalar_points(run, "train", "learning_rate")
    assert [step for step, _ in rates] == list(range(1, len(rates) + 1))  # steps counted across both phases
    assert rates[-1][1] > 0.0
    assert scalar_points(run, "train", "epoch_learning_rate")[-1][1] == pytest.approx(rates[-1][1])
    # Validation by optimizer steps counts across phases too (it restarted at each phase's optimizer).
    validation_steps = [step for step, _ in scalar_points(run, "validation", "evaluation_loss_vs_iterations")]
    assert validation_steps == sorted(set(validation_steps)) and validation_steps[-1] == len(rates)


def _cache_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "from the cache" in line]


def test_features_are_cached_across_runs_and_invalidated_by_changes(colour_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    assert _train(colour_folder, tmp_path / "a", "--epochs", "1") == 0
    first = _cache_lines(capsys)
    assert len(first) == 2 and all(" 0 from the cache" in m for m in first)
    assert _train(colour_folder, tmp_path / "b", "--epochs", "1") == 0
    second = _cache_lines(capsys)
    assert len(second) == 2 and all(", 0 computed" in m for m in second)
    edited = next((colour_folder / "red").iterdir())  # one file changes: only it is recomputed
    Image.fromarray(np.full((20, 20, 3), 250, np.uint8)).save(edited)
    assert _train(colour_folder, tmp_path / "c", "--epochs", "1") == 0
    assert sum(int(m.split(", ")[-1].split()[0]) for m in _cache_lines(capsys)) == 1
    assert _train(colour_folder, tmp_path / "d", "--epochs", "1", "--image-size", "24") == 0
    third = _cache_lines(capsys)
    assert len(third) == 2 and all(" 0 from the cache" in m for m in third)  # another input size, another store
    assert _train(colour_folder, tmp_path / "e", "--epochs", "1", "--resize", "crop") == 0
    assert all(" 0 from the cache" in m for m in _cache_lines(capsys))  # other preprocessing, another store
    assert _train(colour_folder, tmp_path / "f", "--epochs", "1", "--no-cache-features") == 0
    assert _cache_lines(capsys) == []


def test_image_cache_disk_decodes_once_into_stores_and_the_run_completes(colour_folder, tmp_path, capsys, monkeypatch):
    """The stores' reuse by later datasets and runs: tests/data/test_image_store.py."""
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    assert _train(colour_folder, tmp_path / "a", "--strategy", "finetune", "--epochs", "1", "--finetune-epochs", "2",
                  "--unfreeze", "all", "--refit", "no", "--image-cache", "disk") == 0
    err = capsys.readouterr().err
    assert err.count("into the image cache") == 2  # training and validation
    stores = sorted((tmp_path / "cache" / "images").glob("*.npy"))
    assert len(stores) == 2 and not [p for p in stores if p.name.startswith(".")]
    assert rd.read_json(tmp_path / "a" / "config.json")["image_cache"] == "disk"
    assert not (tmp_path / "a" / rd.INCOMPLETE_MARKER).exists()
    assert rd.read_json(tmp_path / "a" / rd.HISTORY_FILE)["phases"][1]["name"] == "finetune"


def test_nan_loss_stops_with_a_clear_message_and_an_incomplete_run(colour_folder, tmp_path, capsys, monkeypatch):
    import app.training as training

    real = training.cached_features

    def poisoned(*args, **kwargs):
        features = real(*args, **kwargs)
        return np.full_like(features, np.nan)

    monkeypatch.setattr(training, "cached_features", poisoned)
    run = tmp_path / "run"
    assert _train(colour_folder, run, "--epochs", "3") == 2
    message = capsys.readouterr().err
    assert "diverged" in message and "--learning-rate" in message
    assert (run / rd.INCOMPLETE_MARKER).exists() and not (run / rd.MODEL_FILE).exists()


def test_checkpoint_pointer_survives_a_crash_while_saving(tmp_path, monkeypatch):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(CheckpointState("head", 1, []), model)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoints.save(CheckpointState("head", 2, []), model)
    resume = checkpoints.latest()
    assert resume.state.epoch == 1 and resume.folder.name.endswith("head-epoch-0001")
    assert [p.name for p in checkpoints.root.iterdir() if p.name.startswith(".")] == []  # no temporary left
    checkpoints.restore(resume.folder, model)


# Not in the head phase: tests/test_fault_injection.py kills a run after each of its writes there, and the
# SIGTERM test below stops one inside its second epoch; both resume it.
# A kill inside a refit phase: tests/test_fault_injection.py kills the finetune phase at every write boundary, and
# the mid-epoch mechanics (events logged after the checkpoint dropped, the epoch run again) are the same in every
# phase; a second case killed inside `finetune` cost the suite 27 s for the same checks.
@pytest.mark.parametrize("kill_in_phase", ["refit_finetune"])
def test_resume_after_kill_9_mid_epoch_continues_the_history(colour_folder, tmp_path, kill_in_phase):
    """The colour folder has 8 training files per class after the validation split: the run
    refits (head, finetune, refit_head, refit_finetune), so the kill can land in any phase."""
    run = tmp_path / "run"
    args = [str(colour_folder), "--backbone", "tiny_image", "--output", str(run), "--strategy", "finetune",
            "--epochs", "4", "--patience", "10", "--finetune-epochs", "3", "--batch-size", "8", "--seed", "3",
            *FEW_FILES_RECALL]
    wanted = {"finetune": "finetune-epoch-0001", "refit_finetune": "refit_head-epoch-0001"}[kill_in_phase]
    kill_inside_epoch_after(args, run, wanted, tmp_path)
    assert (run / rd.INCOMPLETE_MARKER).exists()
    state = Checkpoints(run).latest().state
    done_before = len(state.history)

    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, len(history) + 1))  # continuous, no repeats
    assert history[:done_before] == state.history
    order = ["head", "finetune", "refit_head", "refit_finetune"]
    phases = [e["phase"] for e in history]
    assert phases == sorted(phases, key=order.index) and set(phases) == set(order)
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["resumed"] is True and metadata["refit"]["applied"] is True
    # The refit repeats the epochs early stopping chose, whichever process ran them.
    for phase in ("head", "finetune"):
        assert phases.count("refit_" + phase) == metadata["refit"]["epochs"][phase]
    assert metadata["metrics"]["val_accuracy"] == (state.selection or metadata["metrics"])["val_accuracy"]
    load_task_model(str(run / rd.MODEL_FILE))
    # Every epoch is in TensorBoard once: those before the kill were flushed before their checkpoints.
    steps = [step for step, _ in scalar_points(run, "train", "epoch_loss")]
    assert steps == list(range(len(history)))
    assert tensor_steps(run, "train", "phases") == [1, 2, 3, 4]  # each phase described once, resumed one too
    # The first model's unknown-class thresholds were kept with the refit's checkpoints, and carried over.
    assert "threshold_offset" in rd.read_json(run / "unknown.json")["selection"]


@pytest.mark.parametrize("sig, status, named", [(signal.SIGTERM, 143, "Interrupted (SIGTERM)."),
                                               (signal.SIGINT, 130, "Interrupted.")])
def test_sigterm_and_ctrl_c_stop_with_one_line_that_says_how_to_continue(colour_folder, tmp_path, sig, status, named):
    """SIGTERM killed the process silently; Ctrl-C said "Interrupted." without naming the run to resume."""
    run = tmp_path / "run"
    args = [str(colour_folder), "--backbone", "tiny_image", "--output", str(run), "--epochs", "4", "--patience", "10",
            "--batch-size", "8", "--seed", "3", "--refit", "no"]
    returncode, err = kill_inside_epoch_after(args, run, "head-epoch-0002", tmp_path, sig)
    assert returncode == status and "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR metatune: " in line]  # TensorFlow's E0000 lines aside
    assert len(errors) == 1 and named in errors[0] and f"python train.py --resume {run}" in errors[0], err
    assert (run / rd.INCOMPLETE_MARKER).exists()
    if sig == signal.SIGINT:
        return  # the run a signal stopped is the same whichever signal it was: one resume below proves it
    leftover = run / ".tmp-999999-model.keras"  # what a write killed midway leaves
    leftover.write_bytes(b"half a model")
    assert train.main(["--resume", str(run)]) == 0
    assert not leftover.exists()  # the resume, holding the run's lock, removed it
    assert [e["epoch"] for e in rd.read_json(run / rd.HISTORY_FILE)["epochs"]] == [1, 2, 3, 4]


def test_resume_refuses_a_finished_run_and_changed_data(colour_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(colour_folder, run, "--epochs", "1") == 0
    assert train.main(["--resume", str(run)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    # Said before any work: with its data folder gone (it was said once the data was scanned, minutes on a big one).
    moved = colour_folder.rename(colour_folder.with_name("moved"))
    assert train.main(["--resume", str(run)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    moved.rename(colour_folder)
    (run / rd.INCOMPLETE_MARKER).write_text("pretend it crashed")
    config = rd.read_json(run / rd.CONFIG_FILE)
    rd.write_json(run / rd.CONFIG_FILE, config | {"seed": config["seed"] + 1})  # edited by hand: another split
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "The same files" in err and "seed, val_fraction or test_fraction were changed" in err
    assert f"seed {config['seed'] + 1}" in err and "files added" not in err
    rd.write_json(run / rd.CONFIG_FILE, config)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(colour_folder / "red" / "new.png")
    assert train.main(["--resume", str(run)]) == 2
    assert "changed since" in capsys.readouterr().err


def test_finetune_on_text(tmp_path):
    words = {"pos": ["good great fine love", "great film love it", "good food and service"],
             "neg": ["bad awful hate", "awful movie not good", "bad service hate it"]}
    for label, texts in words.items():
        for i in range(8):
            path = tmp_path / "texts" / label / f"{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{texts[i % 3]} {i}", encoding="utf-8")
    run = tmp_path / "run"
    assert train.main([str(tmp_path / "texts"), "--backbone", "tiny_text", "--strategy", "finetune", "--output",
                       str(run), "--epochs", "1", "--finetune-epochs", "1", "--unfreeze", "1",
                       "--lr-schedule", "plateau"]) == 0
    history = rd.read_json(run / rd.HISTORY_FILE)  # 6 training texts per class: auto refits
    assert [p["name"] for p in history["phases"]] == ["head", "finetune", "refit_head", "refit_finetune"]
    model = load_task_model(str(run / rd.MODEL_FILE), modality="text")
    assert model.predict(tf.constant(["good film", "awful food"]), verbose=0).shape == (2, 2)


def test_checkpoint_restores_weights_and_optimizer_state_exactly(tmp_path):
    import keras

    from models.optimizers import DiscriminativeAdam

    def build():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="low"), keras.layers.Dense(2, name="top")])
        model.compile(optimizer=DiscriminativeAdam({"low/kernel": 0.5}, learning_rate=0.01), loss="mse")
        return model

    rng = np.random.default_rng(0)
    x, y = rng.random((16, 3)), rng.random((16, 2))
    trained = build()
    trained.fit(x, y, epochs=3, batch_size=4, verbose=0)
    checkpoints = Checkpoints(tmp_path)
    folder = checkpoints.save(CheckpointState("head", 3, []), trained, trained.optimizer)
    fresh = build()
    Checkpoints(tmp_path).restore(folder, fresh, fresh.optimizer)  # as a resumed process does
    for a, b in zip(trained.weights, fresh.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(fresh.optimizer.iterations.numpy()) == 12
    # One more identical step from both gives identical weights: the state really is the same.
    trained.train_on_batch(x[:4], y[:4])
    fresh.train_on_batch(x[:4], y[:4])
    for a, b in zip(trained.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_checkpoints_store_only_what_training_can_change_and_check_the_frozen_rest(tmp_path):
    """Frozen layers (a backbone) are rebuilt by the resumed run, not stored; a digest guards them."""
    import keras

    from app.checkpoints import MODEL_WEIGHTS
    from app.errors import UserError

    def build(frozen_value: float):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="backbone"),
                                  keras.layers.BatchNormalization(name="frozen_bn"), keras.layers.Dense(2, name="head")])
        model.get_layer("backbone").set_weights([np.full((3, 4), frozen_value, np.float32), np.zeros(4, np.float32)])
        for name in ("backbone", "frozen_bn"):
            model.get_layer(name).trainable = False
        model.compile(optimizer="adam", loss="mse")
        return model

    rng = np.random.default_rng(0)
    trained = build(0.5)
    trained.fit(rng.random((16, 3)), rng.random((16, 2)), epochs=2, batch_size=4, verbose=0)
    folder = Checkpoints(tmp_path).save(CheckpointState("head", 2, []), trained, trained.optimizer)
    with np.load(folder / MODEL_WEIGHTS) as saved:
        stored = [saved[name].shape for name in saved.files if name.startswith("w")]
    assert stored == [(4, 2), (2,)]  # the head only: the frozen Dense and BatchNorm are not written
    fresh = build(0.5)
    Checkpoints(tmp_path).restore(folder, fresh, fresh.optimizer)
    for a, b in zip(trained.weights, fresh.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(UserError, match="frozen weights of this model differ"):
        Checkpoints(tmp_path).restore(folder, build(0.25))


def test_config_json_re_runs_the_same_run(colour_folder, tmp_path):
    first = tmp_path / "first"
    assert _train(colour_folder, first, "--epochs", "3", "--hidden-units", "4") == 0
    second = tmp_path / "second"
    assert train.main(["--config", str(first / rd.CONFIG_FILE), "--output", str(second)]) == 0
    old, new = rd.read_json(first / rd.CONFIG_FILE), rd.read_json(second / rd.CONFIG_FILE)
    assert {k: v for k, v in old.items() if k != "output"} == {k: v for k, v in new.items() if k != "output"}
    assert rd.read_json(first / rd.MANIFEST_FILE) == rd.read_json(second / rd.MANIFEST_FILE)
    assert rd.read_json(first / rd.METADATA_FILE)["metrics"]["val_accuracy"] == \
        rd.read_json(second / rd.METADATA_FILE)["metrics"]["val_accuracy"]


def test_refit_trains_on_train_and_validation_for_the_chosen_epochs(colour_folder, tmp_path):
    """The first model is the same with and without the refit (same seed): so are the validation
    metrics the run reports. The refit repeats each phase's best epoch count on all 30 files."""
    args = ["--strategy", "finetune", "--epochs", "5", "--finetune-epochs", "3", "--unfreeze", "all"]
    assert _train(colour_folder, tmp_path / "plain", *args, "--refit", "no") == 0
    assert _train(colour_folder, tmp_path / "refit", *args) == 0  # auto: 8 training files per class
    plain = rd.read_json(tmp_path / "plain" / rd.METADATA_FILE)
    refit = rd.read_json(tmp_path / "refit" / rd.METADATA_FILE)
    assert plain["refit"]["applied"] is False and plain["refit"]["reason"] == "--refit no"
    assert refit["refit"]["applied"] is True and refit["refit"]["num_files"] == 30
    assert refit["metrics"]["val_accuracy"] == pytest.approx(plain["metrics"]["val_accuracy"])
    assert refit["metrics"]["val_loss"] == pytest.approx(plain["metrics"]["val_loss"], rel=1e-4)
    assert "before the refit" in refit["calibration"]["fitted_on"]
    # finetune's refit retrains the backbone: no file is new to the final model, so its unknown-class threshold is
    # carried over from the first model's (app/threshold_transfer.py), and unknown.json says so.
    unknown = {name: rd.read_json(tmp_path / name / "unknown.json") for name in ("plain", "refit")}
    assert "threshold is carried over from the first model's" in unknown["refit"]["fitted_on"]
    assert "refit" not in unknown["plain"]["fitted_on"]
    assert "threshold_offset" in unknown["refit"]["selection"] and "threshold_offset" not in unknown["plain"]["selection"]
    history = rd.read_json(tmp_path / "refit" / rd.HISTORY_FILE)
    assert [p["name"] for p in history["phases"]] == ["head", "finetune", "refit_head", "refit_finetune"]
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    for phase in ("head", "finetune"):
        first = [e for e in epochs if e["phase"] == phase]
        best = min(first, key=lambda e: e["val_loss"])["phase_epoch"]
        repeated = [e for e in epochs if e["phase"] == "refit_" + phase]
        assert refit["refit"]["epochs"][phase] == best == len(repeated)
        assert all("val_loss" not in e for e in repeated)  # nothing was held out
    assert not (tmp_path / "refit" / CHECKPOINTS_DIR).exists() and not (tmp_path / "refit" / rd.INCOMPLETE_MARKER).exists()
    images = np.stack([np.full((32, 32, 3), colour, np.uint8) for colour in COLOURS.values()])
    plain_model = load_task_model(str(tmp_path / "plain" / rd.MODEL_FILE))
    refit_model = load_task_model(str(tmp_path / "refit" / rd.MODEL_FILE))
    assert not np.allclose(plain_model.predict(images, verbose=0), refit_model.predict(images, verbose=0))


def test_auto_does_not_refit_with_a_val_folder(colour_folder, tmp_path):
    split = tmp_path / "split"
    for name in COLOURS:
        for i, path in enumerate(sorted((colour_folder / name).iterdir())):
            target = split / ("val" if i < 3 else "train") / name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert _train(split, tmp_path / "run", "--epochs", "2") == 0
    metadata = rd.read_json(tmp_path / "run" / rd.METADATA_FILE)
    assert metadata["refit"] == {"applied": False, "reason": "auto: the validation files come from a val/ folder"}
    assert [p["name"] for p in rd.read_json(tmp_path / "run" / rd.HISTORY_FILE)["phases"]] == ["head"]


def test_evaluate_refuses_validation_files_a_refit_trained_on(colour_folder, tmp_path, capsys):
    """Without a test split, evaluate.py falls back to the run's validation files, unless the run
    refitted on them."""
    import evaluate

    assert _train(colour_folder, tmp_path / "refit", "--epochs", "2", "--test-fraction", "0") == 0
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "refit"), str(colour_folder)]) == 2
    assert "its validation files are training files: the run refitted" in capsys.readouterr().err
    assert _train(colour_folder, tmp_path / "plain", "--epochs", "2", "--test-fraction", "0", "--refit", "no") == 0
    assert evaluate.main([str(tmp_path / "plain"), str(colour_folder)]) == 0
    split = rd.read_json(tmp_path / "plain" / "eval" / "colours-heldout-val" / "metrics.json")["split"]
    assert "early stopping, the temperature and the unknown-class threshold, so this is optimistic" in split
