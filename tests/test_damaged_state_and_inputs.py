"""Regression tests for issue 22's defects 6-15: damaged or tampered finished runs, caches that
cannot be written or trusted, hostile model files, and inputs the CLIs took wrongly."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import evaluate
import export
import predict
import train
from app import run_dir as rd
from colour_folders import COLOURS, write_colour_folder
from data.feature_cache import FeatureStore

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(data folder, finished linear run) on three noisy colour classes."""
    root = tmp_path_factory.mktemp("finished")
    write_colour_folder(root / "data")
    run = root / "run"
    assert train.main([str(root / "data"), "--backbone", "tiny_image", "--output", str(run), "--epochs", "2",
                       "--image-size", "16", "--refit", "no"]) == 0
    return root / "data", run


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _damaged_copy(finished_run, tmp_path, file, damage, capsys):
    """(data, a copy of the finished run with `file` damaged), predict.py having been refused on it (status 2)."""
    data, run = finished_run
    run = _copy(run, tmp_path)
    damage(run / file)
    capsys.readouterr()
    assert predict.main([str(run), str(data / "red")]) == 2
    return data, run


def _one_error(capsys) -> str:
    return _one_error_of(capsys.readouterr().err)


def _one_error_of(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    return errors[0]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _drop_a_class(path):
    metadata = json.loads(path.read_text())
    metadata["class_names"] = metadata["class_names"][:2]
    path.write_text(json.dumps(metadata))


def _swap_two_classes(path):
    metadata = json.loads(path.read_text())
    names = metadata["class_names"]
    names[0], names[1] = names[1], names[0]
    path.write_text(json.dumps(metadata))


def _another_input_size(path):  # a traceback from the model refusing the pixels (predict, evaluate, export)
    metadata = json.loads(path.read_text())
    metadata["input_spec"]["image_size"] = [24, 24]
    path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("file, damage, expected", [
    (rd.MODEL_FILE, _truncate, "unreadable"),
    (rd.METADATA_FILE, _another_input_size, "gives the input size [24, 24] but"),
    (rd.MODEL_FILE, _garble, "model.keras"),
    (rd.METADATA_FILE, _garble, "damaged"),
    (rd.METADATA_FILE, lambda path: path.write_text("[]"), "not an object"),
    (rd.METADATA_FILE, _drop_a_class, "lists 2 classes but"),
    (rd.METADATA_FILE, _swap_two_classes, "does not match"),
])
def test_a_damaged_finished_run_is_one_error_line_naming_the_file(finished_run, tmp_path, capsys, file, damage,
                                                                   expected):
    """Defects 6 and 13: damage gave ValueError/BadZipFile/JSONDecodeError/IndexError tracebacks, and
    swapped class names silently swapped the predictions."""
    data, run = _damaged_copy(finished_run, tmp_path, file, damage, capsys)
    error = _one_error(capsys)
    assert file in error and expected in error and "--config" in error
    assert evaluate.main([str(run), str(data)]) == 2
    assert file in _one_error(capsys)


@pytest.mark.parametrize("file, damage, expected", [
    ("unknown.npz", _truncate, "unknown.npz (its unknown-class detector) is unreadable"),
    ("unknown.npz", lambda path: path.unlink(), "unknown.npz (its unknown-class detector) is missing"),
    ("unknown.json", lambda path: path.unlink(), "unknown.json (its unknown-class detector, named in metadata.json)"),
    ("unknown.json", _garble, "unknown.json' is damaged"),
    ("unknown.json", lambda path: path.write_text("[1]"), "unknown.json (its unknown-class detector) is unexpected"),
])
def test_a_damaged_unknown_class_detector_is_one_error_line(finished_run, tmp_path, capsys, file, damage, expected):
    """A truncated unknown.npz was a BadZipFile traceback; a missing unknown.json turned rejection off silently."""
    data, run = _damaged_copy(finished_run, tmp_path, file, damage, capsys)
    error = _one_error(capsys)
    assert expected in error and "--config" in error
    assert predict.main([str(run), str(data / "red"), "--reject", "none"]) == 0  # the remedy meanwhile works
    capsys.readouterr()
    assert evaluate.main([str(run), str(data), "--unknown", str(data / "red")]) == 2
    assert expected in _one_error(capsys)


def test_a_copy_of_the_training_folder_is_scored_without_its_training_files(finished_run, tmp_path, capsys):
    """A copied or moved training folder was scored whole, training files included, without a word."""
    data, run = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    splits = [f["split"] for f in rd.read_json(run / rd.MANIFEST_FILE)["files"]]
    capsys.readouterr()
    assert evaluate.main([str(run), str(copy), "--name", "copy", "--bootstrap", "20"]) == 0
    metrics = rd.read_json(run / "eval" / "copy" / "metrics.json")
    # The validation files steered early stopping, the temperature and the threshold: they go too.
    seen = splits.count("train") + splits.count("val")
    assert metrics["num_examples"] == splits.count("test") < len(splits)
    assert metrics["split"] == f"all files of the folder, without {seen} file(s) byte-identical to the run's " \
                               "training or validation files"
    assert f"{seen} of {len(splits)} files chosen (all files of the folder) are byte-identical" \
        in capsys.readouterr().err
    only_training = tmp_path / "only_training"
    for f in rd.read_json(run / rd.MANIFEST_FILE)["files"]:
        if f["split"] == "train":
            (only_training / f["label"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(data / f["path"], only_training / f["label"] / Path(f["path"]).name)
    assert evaluate.main([str(run), str(only_training), "--allow-missing-classes"]) == 2
    assert "would measure memory, not accuracy" in _one_error(capsys)


def test_a_run_whose_manifest_is_gone_is_damaged_not_a_licence_to_score_its_training_files(finished_run, tmp_path,
                                                                                            capsys):
    """Without manifest.json, evaluate.py scored a copy of the training folder as new data, with exit 0."""
    data, run = finished_run
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    (damaged / rd.MANIFEST_FILE).unlink()
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    before = sorted((damaged / "eval").iterdir()) if (damaged / "eval").is_dir() else []
    capsys.readouterr()
    assert evaluate.main([str(damaged), str(copy)]) == 2
    error = _one_error(capsys)
    assert "manifest.json" in error and "is missing" in error and "--config" in error
    assert (sorted((damaged / "eval").iterdir()) if (damaged / "eval").is_dir() else []) == before  # nothing written


def test_a_test_split_lacking_a_class_needs_the_flag_in_the_runs_own_folder_too(finished_run, tmp_path, capsys):
    data, run = finished_run
    folder = tmp_path / "split"
    names = sorted(p.name for p in data.iterdir())
    for name in names:
        shutil.copytree(data / name, folder / "train" / name)
    shutil.copytree(data / names[0], folder / "test" / names[0])  # test/ holds one class of three
    capsys.readouterr()
    assert evaluate.main([str(run), str(folder)]) == 2
    assert f"The folder's test/ split lacks classes the model was trained on: {names[1:]}" in _one_error(capsys)


def test_a_model_file_holding_code_is_refused_with_one_error_line(finished_run, tmp_path, capsys):
    """Defect 15: a Lambda layer was refused (no code ran) but as a traceback."""
    data, run = finished_run
    run = _copy(run, tmp_path)
    inputs = keras.Input((16, 16, 3))
    hostile = keras.Model(inputs, keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2)))(inputs))
    (run / rd.MODEL_FILE).unlink()
    hostile.save(run / rd.MODEL_FILE)
    capsys.readouterr()
    assert predict.main([str(run), str(data / "red")]) == 2
    error = _one_error(capsys)
    assert "could not be loaded" in error and "safe mode" in error


def test_a_model_config_naming_a_python_builtin_is_refused_with_one_error_line(finished_run, tmp_path, capsys):
    """Defect 15: a config naming `builtins.exec` was refused (no code ran) but as a traceback."""
    data, run = finished_run
    run = _copy(run, tmp_path)
    with zipfile.ZipFile(run / rd.MODEL_FILE) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1].update({"module": "builtins", "class_name": "exec", "registered_name": "exec"})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(run / rd.MODEL_FILE, "w") as archive:
        for name, data_bytes in members.items():
            archive.writestr(name, data_bytes)
    capsys.readouterr()
    assert predict.main([str(run), str(data / "red")]) == 2
    assert "could not be loaded" in _one_error(capsys)


@pytest.mark.parametrize("name", ["../../outside", "/tmp/absolute-report", "..", "a/b"])
def test_evaluate_name_cannot_leave_the_run_directory(finished_run, tmp_path, capsys, name):
    """Defect 9: --name ../../x wrote the report outside the run directory."""
    data, run = finished_run
    assert evaluate.main([str(run), str(data), "--name", name]) == 2
    assert "--name must be a plain folder name" in _one_error(capsys)
    assert not (run.parent.parent / "outside").exists() and not Path("/tmp/absolute-report").exists()


def test_predict_takes_flags_anywhere_and_follows_symlinked_folders(finished_run, tmp_path, capsys):
    """Defects 11 and 12: flags before the files were "unrecognized arguments"; class folders that
    are symlinks were not searched (train.py follows them)."""
    data, run = finished_run
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in COLOURS:
        (linked / name).symlink_to(data / name, target_is_directory=True)
    capsys.readouterr()
    assert predict.main([str(run), "--json", "--top-k", "2", str(linked)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["predictions"]) == 18
    assert all(len(p["top"]) == 2 for p in document["predictions"])


@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one_are_refused(finished_run, capsys, value):
    """--top-k 0 / -1 were silently taken as 1; --batch-size 0 and --bootstrap 0 / -1 were tracebacks."""
    data, run = finished_run
    for main, argv in ((predict.main, [str(run), str(data), "--top-k", value]),
                       (evaluate.main, [str(run), str(data), "--top-k", value]),
                       (predict.main, [str(run), str(data), "--batch-size", value]),
                       (evaluate.main, [str(run), str(data), "--batch-size", value]),
                       (evaluate.main, [str(run), str(data), "--bootstrap", value]),
                       (export.main, [str(run), "--batch-size", value]),
                       (export.main, [str(run), "--representative-files", value])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert f"must be at least 1. Received: {value}" in capsys.readouterr().err


def test_a_feature_cache_that_cannot_be_written_only_warns(tmp_path, monkeypatch, caplog):
    """Defect 8: a full cache disk aborted training with a traceback and left temporary files."""
    def full_disk(file, **arrays):
        with open(file, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(np, "savez", full_disk)
    store = FeatureStore("k", root=tmp_path)
    with caplog.at_level(logging.WARNING):
        features, computed = store.get_or_compute(["a", "b"], lambda idx: np.ones((len(idx), 3)))
    assert features.shape == (2, 3) and computed == 2
    assert "Could not write the feature cache" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no store, no temporary


def test_feature_cache_rows_that_do_not_match_their_digest_are_recomputed(tmp_path, caplog):
    """Defect 13: a store rewritten with its rows permuted was used as is."""
    store = FeatureStore("k", root=tmp_path)
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    store.get_or_compute(list("abcd"), lambda idx: values[idx])
    with np.load(store.path) as saved:
        arrays = dict(saved)
    arrays["features"] = arrays["features"][[1, 0, 2, 3]]
    with open(store.path, "wb") as handle:
        np.savez(handle, **arrays)
    with caplog.at_level(logging.WARNING):
        features, computed = store.get_or_compute(list("abcd"), lambda idx: values[idx])
    assert computed == 2 and np.array_equal(features, values)
    assert "2 of 4 rows do not match" in caplog.text


def test_an_over_long_text_file_is_read_up_to_the_cap_with_one_warning(tmp_path, caplog):
    """Defect 10: one 50 MB .txt took 5.2 GB and 7x the time, without a word."""
    from data.pipeline import read_texts
    from data.text import MAX_TEXT_BYTES

    short = tmp_path / "short.txt"
    short.write_text("a short text")
    long = tmp_path / "long.txt"
    long.write_text("word é " * (MAX_TEXT_BYTES // 3))  # multi-byte characters across the cut
    with caplog.at_level(logging.WARNING):
        texts = read_texts([str(short), str(long)], ["utf-8", "utf-8"])
        again = read_texts([str(long)], ["utf-8"])
    assert texts[0] == "a short text" and len(texts[1].encode("utf-8")) <= MAX_TEXT_BYTES
    assert texts[1].startswith("word é word") and again == texts[1:]
    assert caplog.text.count("over 256 KiB") == 1


def test_many_small_classes_give_one_warning_not_one_each(caplog):
    """Defect 15: 200 classes of 2 files printed 200 identical warnings."""
    from data.records import Example
    from data.scan import ScanResult
    from data.splits import assign_splits

    names = [f"c{i:03d}" for i in range(200)]
    examples = [Example(f"/x/{name}/{j}.png", label, None, f"{label}-{j}", "") for label, name in enumerate(names)
                for j in range(2)]
    scan = ScanResult("/x", "flat", "image", names, examples)
    with caplog.at_level(logging.WARNING, logger="data.splits"):
        assign_splits(scan, 0.2, seed=0, test_fraction=0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "data.splits"]
    assert len(lines) == 1 and lines[0].startswith("200 class(es)") and "and 190 more" in lines[0]


def test_run_files_are_zip_archives_checked_before_the_run_counts_as_complete(finished_run):
    """What mark_complete relies on: model.keras is a zip whose CRCs read back."""
    _, run = finished_run
    assert rd.archive_problem(run / rd.MODEL_FILE) is None
    with zipfile.ZipFile(run / rd.MODEL_FILE) as archive:
        assert "config.json" in archive.namelist()


def test_a_weight_cache_missing_a_layer_is_named_and_rebuilt(tmp_path, monkeypatch, caplog):
    """Defect 14: "No pretrained weights for layer ..." without naming the cache, on every run."""
    from models.backbones.efficientnet_lite import build_efficientnet_lite0
    from models.weights.efficientnet_lite0 import assign_pretrained_weights, load_converted_weights

    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path))
    good = load_converted_weights()
    (cache,) = (tmp_path / "weights").glob("*.npz")
    with np.load(cache) as saved:
        arrays = {name: saved[name] for name in saved.files if not name.startswith("head_conv/")}
    with open(cache, "wb") as handle:
        np.savez(handle, **arrays)
    model = build_efficientnet_lite0(input_shape=(32, 32, 3), include_top=False)
    with caplog.at_level(logging.WARNING):
        assign_pretrained_weights(model)
    assert str(cache) in caplog.text and "head_conv" in caplog.text
    np.testing.assert_array_equal(model.get_layer("head_conv").get_weights()[0], good["head_conv"][0])
    with np.load(cache) as rebuilt:
        assert any(name.startswith("head_conv/") for name in rebuilt.files)


def _overwrite_keeping_size_and_mtime(path: Path) -> None:
    """A file rewritten in place, its size and modification time kept (the doctor's cache sees its new ctime)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[40:] = bytes(len(data) - 40)
    path.write_bytes(bytes(data))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_file_that_no_longer_decodes_after_the_data_check_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METATUNE_CACHE_DIR", str(tmp_path / "cache"))
    data = write_colour_folder(tmp_path / "data")
    assert train.main([str(data), "--check"]) == 0  # the doctor's cache now holds every file as readable
    broken = sorted((data / "red").iterdir())[0]
    from data import doctor

    # Broken after the data check: the doctor (its cache keys on the ctime) still gives the verdict it gave before.
    before, inspect = doctor.inspect_file(str(broken), "image"), doctor.inspect_file
    monkeypatch.setattr(doctor, "inspect_file", lambda path, modality: before if path == str(broken)
                        else inspect(path, modality))
    _overwrite_keeping_size_and_mtime(broken)
    capsys.readouterr()
    assert train.main([str(data), "--backbone", "tiny_image", "--output", str(tmp_path / "run"), "--epochs", "1",
                       "--image-size", "16", "--refit", "no"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "An input file could not be read" in errors[0] and str(broken) in errors[0]
    assert "Traceback" not in err
    assert (tmp_path / "run" / rd.INCOMPLETE_MARKER).exists()


def test_only_tensorflow_errors_about_input_files_become_messages():
    import tensorflow as tf

    from app.cli import unreadable_input

    gone = tf.errors.NotFoundError(None, None, "/data/red/1.png; No such file or directory [[{{node ReadFile}}]]")
    assert unreadable_input(gone) == "/data/red/1.png; No such file or directory"
    corrupt = tf.errors.InvalidArgumentError(None, None, "{{function_node f}} Invalid PNG data, size 40\n\t [[{{node x}}]]")
    assert unreadable_input(corrupt) == "Invalid PNG data, size 40"
    in_an_epoch = tf.errors.InvalidArgumentError(None, None, (
        "Error in user-defined function passed to ParallelMapDatasetV2:60 transformation with iterator: "
        "Iterator::Root::Prefetch::ParallelMapV2: UnidentifiedImageError: cannot identify image file '/data/red/1.png'"
        "\n\t [[{{node x}}]]"))
    assert unreadable_input(in_an_epoch) == "UnidentifiedImageError: cannot identify image file '/data/red/1.png'"
    assert unreadable_input(tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2] vs. [3]")) is None
    assert unreadable_input(FileNotFoundError("No such file or directory")) is None  # not TensorFlow's


def test_tensorflow_writers_on_a_full_disk_are_one_error_line_not_a_traceback(capsys):
    """A full disk at TensorBoard's first event file (or a SavedModel's variables) was a ResourceExhaustedError
    traceback: TensorFlow's writers raise their own errors, not OSError."""
    import tensorflow as tf

    from app.cli import run_safely, setup_logging

    setup_logging()

    def full_disk() -> int:
        raise tf.errors.ResourceExhaustedError(None, None, "/runs/r/logs/train; No space left on device\n\tCould not "
                                                           "initialize events writer. [Op:CreateSummaryFileWriter]")
    assert run_safely(full_disk) == 2
    error = _one_error(capsys)
    assert "Could not write: No space left on device. Nothing half-written was left" in error

    def a_bug() -> int:
        raise tf.errors.InternalError(None, None, "something inside TensorFlow")
    with pytest.raises(tf.errors.InternalError):  # other TensorFlow errors keep their traceback
        run_safely(a_bug)


@pytest.mark.parametrize("kind", ["tensorflow", "python"])
def test_out_of_memory_anywhere_is_one_error_line_naming_the_sizes_and_the_run(tmp_path, capsys, kind):
    """train.py --hidden-units 1000000000 was TensorFlow's ResourceExhaustedError traceback (a 1280 x 10^9
    kernel), after the run directory was made: the sizes are the user's, so the message names them, and the
    run left INCOMPLETE, with both ways on."""
    import tensorflow as tf

    from app.cli import run_safely, setup_logging
    from app.run_dir import set_active_run

    setup_logging()
    run = tmp_path / "run"

    def too_large() -> int:
        set_active_run(run)
        if kind == "python":
            raise MemoryError()
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__StatelessTruncatedNormalV2_device_/job:localhost/replica:0/"
            "task:0/device:CPU:0}} OOM when allocating tensor with shape[1280,1000000000] and type float on "
            "/job:localhost/replica:0/task:0/device:CPU:0 by allocator mklcpu [Op:StatelessTruncatedNormalV2]")

    assert run_safely(too_large) == 2
    error = _one_error(capsys)
    said = "OOM when allocating tensor with shape[1280,1000000000] and type float" if kind == "tensorflow" else ""
    assert f"Out of memory ({said or 'no detail'}):" in error
    assert "--batch-size" in error and "--hidden-units" in error
    assert f"{run} stays INCOMPLETE" in error and f"--resume {run}" in error and "--output NEW_DIR" in error
    assert "function_node" not in error and "/job:" not in error

    def predicting() -> int:  # no run of its own (predict.py, evaluate.py): no --resume advice
        raise MemoryError()

    assert run_safely(predicting) == 2
    error = _one_error(capsys)
    assert "Run the command again with smaller values" in error and "--resume" not in error


def test_check_on_a_folder_that_cannot_train_still_prints_what_the_doctor_found(tmp_path, capsys):
    """--check stopped at the class count with only the ERROR line: the skipped and converted files, the counts
    per class (what tells how to fix the folder) were not shown."""
    write_colour_folder(tmp_path / "data")
    lonely = tmp_path / "data" / "lonely"
    lonely.mkdir()
    shutil.copy(next((tmp_path / "data" / "red").iterdir()), lonely / "only.png")
    (tmp_path / "data" / "red" / "broken.png").write_bytes(b"not an image")
    capsys.readouterr()
    assert train.main([str(tmp_path / "data"), "--check"]) == 2
    captured = capsys.readouterr()
    assert "Skipped files:" in captured.out and "broken.png" in captured.out
    assert any(line.split() == ["lonely", "1"] for line in captured.out.splitlines())
    assert "Too few training examples in classes {'lonely': 1}" in _one_error_of(captured.err)


def test_an_evaluation_under_a_used_name_replaces_the_earlier_one_whole(finished_run, tmp_path, capsys):
    """The second evaluation under one --name left the first one's files beside its own (a classification
    report's misclassified.csv beside an episodic report), silently."""
    _, run = finished_run
    run = _copy(run, tmp_path)
    fresh = write_colour_folder(tmp_path / "fresh", seed=7)  # files the run never saw
    assert evaluate.main([str(run), str(fresh), "--name", "same", "--bootstrap", "20"]) == 0
    assert (run / "eval" / "same" / "misclassified.csv").is_file()
    first_events = set((run / rd.LOGS_DIR / "eval_same").rglob("events.out.tfevents.*"))
    assert first_events  # the Grad-CAM grid of the first evaluation
    capsys.readouterr()
    assert evaluate.main([str(run), str(fresh), "--name", "same", "--episodes", "2", "--ways", "2", "--shots", "1",
                          "--queries", "1"]) == 0
    assert "Replacing the earlier evaluation in" in capsys.readouterr().err
    files = {p.name for p in (run / "eval" / "same").iterdir()}
    assert "misclassified.csv" not in files and {"episodes.csv", "metrics.json", "report.md"} <= files
    assert "episodes" in rd.read_json(run / "eval" / "same" / "metrics.json")
    assert not first_events & set((run / rd.LOGS_DIR / "eval_same").rglob("events.out.tfevents.*"))  # replaced too
    # A name that is a link to a folder elsewhere is refused: emptying it would delete what it points at.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (run / "eval" / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert evaluate.main([str(run), str(fresh), "--name", "linked", "--bootstrap", "20"]) == 2
    assert "is a symbolic link, not an earlier report folder" in _one_error(capsys)
    assert (elsewhere / "keep.txt").read_text() == "keep"


def test_a_val_folder_lacking_classes_is_named_in_a_warning(tmp_path, capsys):
    for split, classes in (("train", COLOURS), ("val", {"red": COLOURS["red"]})):
        write_colour_folder(tmp_path / "data" / split, per_class=4, colours=classes)
    capsys.readouterr()
    assert train.main([str(tmp_path / "data"), "--check"]) == 0
    assert "val/ split has no file of 2 of 3 classes (blue, green)" in capsys.readouterr().err


def test_sigterm_while_a_model_loads_is_an_interruption_not_a_damaged_file(finished_run, capsys):
    """`except Exception` around model loading took SIGTERM's exception for a damaged model.keras."""
    from app.cli import Terminated, run_safely, setup_logging
    from app.run_integrity import load_model_file

    setup_logging()
    _, run = finished_run

    def terminated(path):
        raise Terminated()

    status = run_safely(lambda: load_model_file(run / rd.MODEL_FILE, terminated, "remedy") and 0)
    assert status == 143
    error = _one_error(capsys)
    assert "Interrupted (SIGTERM)." in error and "could not be loaded" not in error
