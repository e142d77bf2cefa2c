"""export.py and evaluate.py --artifact on tiny runs: SavedModel and LiteRT round trips, parity, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import export
import train
from app import run_dir as rd
from app.exporting import PROBE_SCRIPT
from error_lines import one_error_line

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

EPISODES = ["--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "3",
            "--meta-epochs", "2", "--embedding-units", "8", "--meta-input", "features"]


def _image_folder(root: Path, names: tuple[str, ...] = ("dark", "mid", "light")) -> Path:
    """Three classes told apart by brightness, in every format the graph decodes, odd sizes (resizing runs)."""
    rng = np.random.default_rng(0)
    formats = ["jpg", "png", "bmp", "gif"]
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(14):
            pixels = rng.integers(0, 60, (20 + i, 17 + 2 * i, 3), dtype=np.uint8) + np.uint8(95 * c)
            Image.fromarray(pixels).save(root / name / f"{i}.{formats[i % 4]}")
    return root


def _text_folder(root: Path) -> Path:
    words = {"pos": ["good", "great", "love", "fine"], "neg": ["bad", "awful", "hate", "not"]}
    rng = np.random.default_rng(0)
    for name, vocabulary in words.items():
        (root / name).mkdir(parents=True)
        for i in range(10):
            (root / name / f"{i}.txt").write_text(" ".join(rng.choice(vocabulary, 6)) + " the movie", encoding="utf-8")
    return root


def _trained(base: Path, make_folder, flags: list[str]) -> tuple[Path, Path]:
    data, run = make_folder(base / "data"), base / "run"
    assert train.main([str(data), *flags, "--output", str(run)]) == 0
    return run, data


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    # 15 epochs: a confident model, so int8's calibration error cannot flip near-ties. --reject-recall 0.8: its 6
    # validation files are too few for a threshold that keeps 95% (the text run's detector rejects nothing).
    return _trained(tmp_path_factory.mktemp("export-image"), _image_folder,
                    ["--backbone", "tiny_image", "--epochs", "15", "--test-fraction", "0.25", "--seed", "3",
                     "--reject-recall", "0.8"])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("export-text"), _text_folder,
                    ["--backbone", "tiny_text", "--epochs", "3", "--test-fraction", "0.2"])


def _metrics(run: Path, name: str) -> dict:
    return json.loads((run / "eval" / name / "metrics.json").read_text())


def _assert_one_error(capsys, *fragments):
    one_error_line(capsys.readouterr().err, *fragments)


def _assert_empty_batch_gives_empty_outputs(exported: Path, empty_inputs: dict) -> None:
    """Each signature, called with 0 inputs in this process (oneDNN on, as where a SavedModel is usually served:
    its Conv2D returned an empty batch's input unchanged and the signature failed), returns every output with 0
    rows and the signature's own dtypes and trailing shape."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported))
    for name, inputs in empty_inputs.items():
        signature = loaded.signatures[name]
        served = signature(**inputs)
        assert set(served) == set(signature.structured_outputs), name
        for key, tensor in served.items():
            declared = signature.structured_outputs[key]
            assert tensor.dtype == declared.dtype and tensor.shape[0] == 0, (name, key, tensor)
            assert tensor.shape[1:] == declared.shape[1:], (name, key, tensor.shape, declared.shape)


def test_savedmodel_signatures_serve_file_bytes_without_metatune_or_keras(image_run, tmp_path, capsys):
    run, data = image_run
    assert export.main([str(run)]) == 0
    exported = run / "export" / "savedmodel"
    parity = json.loads((exported / "parity.json").read_text())
    assert parity["passed"] and parity["format"] == "savedmodel"
    assert [c["top1_agreement"] for c in parity["checks"]] == [1.0, 1.0]
    _assert_empty_batch_gives_empty_outputs(exported, {"serving_default": {"inputs": np.array([], dtype=object)},
                                                       "pixels": {"pixels": np.zeros((0, 32, 32, 3), np.uint8)}})
    detector = rd.read_json(run / "unknown.json")
    assert [(c["score"], c["verdict_agreement"], c["passed"]) for c in parity["unknown_checks"]] == \
        [(detector["score"], 1.0, True)] * 2
    assert parity["checks"][0]["num_files"] == len([f for f in rd.read_json(run / rd.MANIFEST_FILE)["files"]
                                                    if f["split"] == "test"])
    assert not list(run.joinpath("export").glob(".*"))  # no staging folder left behind

    shown = subprocess.run([str(Path(sys.executable).with_name("saved_model_cli")), "show", "--dir", str(exported),
                            "--all"], capture_output=True, text=True).stdout
    serving = shown.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    pixels = shown.split("signature_def['pixels']")[1].split("signature_def[")[0]
    assert "inputs['inputs']" in serving and "DT_STRING" in serving and "shape: (-1)" in serving
    assert "outputs['probabilities']" in serving and "outputs['top_class']" in serving
    assert "outputs['unknown_score']" in serving and "outputs['unknown']" in serving and "DT_BOOL" in serving
    assert "outputs['unknown_score']" in pixels
    assert "inputs['pixels']" in pixels and "DT_UINT8" in pixels and "shape: (-1, 32, 32, 3)" in pixels

    # Every file of the folder (not only the held-out ones), served from bytes by a process
    # that imports TensorFlow only, gives what evaluate.py gets from model.keras.
    files = sorted(str(p) for p in data.rglob("*.*"))
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"files": files}))
    subprocess.run([sys.executable, str(PROBE_SCRIPT), str(exported), str(request), str(tmp_path / "out.npz")],
                   check=True, capture_output=True)
    served = np.load(tmp_path / "out.npz")
    from app.evaluation import load_run
    from data.records import Example

    keras_probabilities = load_run(run).predict_examples([Example(f, 0, None) for f in files])
    assert np.array_equal(served["probabilities"].argmax(axis=1), keras_probabilities.argmax(axis=1))
    assert np.abs(served["probabilities"] - keras_probabilities).max() < 1e-5
    names = rd.read_json(run / rd.METADATA_FILE)["class_names"]
    assert list(served["top_class"]) == [names[i] for i in keras_probabilities.argmax(axis=1)]
    # The served unknown-class verdicts are predict.py's (same score, same threshold, same files).
    from app.prediction import predict
    predicted = {p.file: p for p in predict(str(run), files)[0]}
    np.testing.assert_allclose(served["unknown_score"], [predicted[f].unknown_score for f in files], rtol=1e-4, atol=1e-5)
    # The threshold sits 1e-6 (relative) above one validation file's score (app/unknown_scores.detector_threshold);
    # files within float noise of it (the graph computes in float32) are left out of the comparison.
    from app.parity import borderline
    clear = ~borderline(np.array([predicted[f].unknown_score for f in files]), detector["threshold"])
    assert clear.sum() >= len(files) - 2
    assert [bool(u) for u in served["unknown"][clear]] == [predicted[f].unknown for f, c in zip(files, clear) if c]

    capsys.readouterr()
    assert evaluate.main([str(run), str(data), "--artifact", str(exported), "--bootstrap", "50"]) == 0
    assert evaluate.main([str(run), str(data), "--bootstrap", "50"]) == 0
    from_artifact, from_keras = _metrics(run, "data-heldout-test-savedmodel"), _metrics(run, "data-heldout-test")
    assert from_artifact["accuracy"] == from_keras["accuracy"]
    assert from_artifact["confusion_matrix"] == from_keras["confusion_matrix"]
    assert from_artifact["artifact"]["format"] == "savedmodel"
    assert "- Model: `" in (run / "eval" / "data-heldout-test-savedmodel" / "report.md").read_text()


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic", "int8"])
def test_litert_round_trip_through_evaluate(image_run, quantize):
    run, data = image_run
    assert export.main([str(run), "--format", "litert", "--quantize", quantize]) == 0
    label = "float32" if quantize == "none" else quantize
    folder = run / "export" / f"litert-{label}"
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["passed"] and parity["quantize"] == quantize
    assert (folder / "labels.txt").read_text().split() == rd.read_json(run / rd.METADATA_FILE)["class_names"]
    from app.litert_export import LiteRTClassifier

    model = LiteRTClassifier(str(folder / "model.tflite"))
    assert model.input["dtype"] == np.uint8 and model.input_shape[1:] == (32, 32, 3)

    assert evaluate.main([str(run), str(data), "--artifact", str(folder / "model.tflite"), "--bootstrap", "50",
                          "--name", f"tflite-{label}"]) == 0
    assert evaluate.main([str(run), str(data), "--bootstrap", "50", "--name", "keras"]) == 0
    gap = _metrics(run, "keras")["accuracy"] - _metrics(run, f"tflite-{label}")["accuracy"]
    assert gap <= (0.02 if quantize in ("dynamic", "int8") else 0.005), gap


def test_readme_litert_snippet_feeds_the_pixels_training_saw(image_run, tmp_path, capsys):
    """README's LiteRT example, run as written on an EXIF-rotated photo and a transparent PNG: its pixels must be
    close to training's (it fed the rotated photo sideways and the transparent areas' hidden colours)."""
    from data.images import load_image

    run, _ = image_run
    folder = run / "export" / "litert-float32"
    if not folder.exists():
        assert export.main([str(run), "--format", "litert"]) == 0
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = next(block.split("```", 1)[0] for block in readme.split("```python\n") if "Interpreter(" in block)
    rows, columns = np.mgrid[0:96, 0:160]  # smooth colours, as photos mostly are (noise would test JPEG scaling)
    colours = np.stack([columns * 255 // 159, rows * 255 // 95, (rows + columns) % 256], axis=2).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(colours).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    alpha = np.repeat(np.linspace(0, 255, 160, dtype=np.uint8)[None], 96, axis=0)[..., None]
    Image.fromarray(np.concatenate([colours, alpha], axis=2)).save(tmp_path / "transparent.png")
    labels = (folder / "labels.txt").read_text().split()
    for name in ("rotated.jpg", "transparent.png"):
        namespace: dict = {}
        capsys.readouterr()
        exec(snippet.replace("RUN_DIR/export/litert-int8", str(folder)).replace("photo.jpg", str(tmp_path / name)),
             namespace)
        assert capsys.readouterr().out.strip() in labels
        pixels = namespace["pixels"].astype(float)
        trained = load_image(str(tmp_path / name), pixels.shape[:2], "stretch")
        assert np.abs(pixels - trained).mean() < 3, name  # README: 0.4 levels on average on plain files


def test_text_savedmodel_takes_raw_strings_and_litert_is_refused(text_run, capsys):
    run, data = text_run
    assert export.main([str(run), "--output", str(run / "served")]) == 0
    parity = json.loads((run / "served" / "parity.json").read_text())
    assert parity["passed"] and "texts" in parity["checks"][0]["signature"]
    # Its 4 validation files are too few for a threshold that keeps 95%: the detector, served too, rejects nothing.
    assert rd.read_json(run / "unknown.json")["threshold"] is None
    assert parity["unknown_checks"] and all(c["passed"] for c in parity["unknown_checks"])
    assert any("always false" in note for note in parity["notes"])
    _assert_empty_batch_gives_empty_outputs(run / "served", {"serving_default": {"inputs": np.array([], dtype=object)}})
    assert evaluate.main([str(run), str(data), "--artifact", str(run / "served"), "--bootstrap", "50"]) == 0
    assert evaluate.main([str(run), str(data), "--bootstrap", "50"]) == 0
    assert _metrics(run, "data-heldout-test-savedmodel")["accuracy"] == _metrics(run, "data-heldout-test")["accuracy"]

    capsys.readouterr()
    assert export.main([str(run), "--format", "litert"]) == 2
    _assert_one_error(capsys, "LiteRT export is for image runs only", "--format savedmodel")
    assert not (run / "export").exists()


def test_a_run_on_a_relative_folder_exports_and_another_runs_export_is_refused(image_run, tmp_path, monkeypatch,
                                                                              capsys):
    run, data = image_run
    (tmp_path / "data").symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # trained and exported from here, every path typed relative
    other = tmp_path / "other"
    assert train.main(["data", "--backbone", "tiny_image", "--epochs", "3", "--test-fraction", "0.25", "--seed", "4",
                       "--output", "other"]) == 0
    config = rd.read_json(other / rd.CONFIG_FILE)
    assert (config["data_dir"], config["output"]) == (str(Path.cwd() / "data"), str(Path.cwd() / "other"))
    assert export.main(["other"]) == 0  # the SavedModel check runs in another folder: it gets absolute paths
    parity = json.loads((other / "export" / "savedmodel" / "parity.json").read_text())
    assert parity["passed"] and parity["class_digest"] == rd.read_json(other / rd.METADATA_FILE)["class_digest"]
    capsys.readouterr()
    # Same classes and input shape, other weights: the digest tells the export apart.
    assert evaluate.main([str(run), str(data), "--artifact", str(other / "export" / "savedmodel")]) == 2
    _assert_one_error(capsys, "was exported from another run", f"python export.py {run}")


def test_meta_run_exports_the_same_plain_classifier(tmp_path):
    data = _image_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--strategy", "protonet", "--test-fraction", "0.25",
                       "--output", str(run), *EPISODES]) == 0
    assert export.main([str(run), "--format", "litert"]) == 0
    assert json.loads((run / "export" / "litert-float32" / "parity.json").read_text())["passed"]


def test_labels_txt_has_one_line_per_class_whatever_the_names(tmp_path):
    # A class folder named with a newline split its labels.txt line in two: every later label was off by one.
    names = ("dark\nside", "mid", "light\tone")
    run, _ = _trained(tmp_path, lambda root: _image_folder(root, names),
                      ["--backbone", "tiny_image", "--epochs", "2", "--test-fraction", "0.25"])
    assert export.main([str(run), "--format", "litert"]) == 0
    lines = (run / "export" / "litert-float32" / "labels.txt").read_text(encoding="utf-8").split("\n")
    classes = rd.read_json(run / rd.METADATA_FILE)["class_names"]
    assert lines[:-1] == [name.replace("\n", "\\n").replace("\t", "\\t") for name in classes] and lines[-1] == ""
    assert "dark\\nside" in lines


def test_bad_requests_are_one_clear_error_and_write_nothing(image_run, tmp_path, capsys):
    run, _ = image_run
    capsys.readouterr()
    existing = tmp_path / "taken"
    existing.mkdir()
    assert export.main([str(run), "--output", str(existing)]) == 2
    _assert_one_error(capsys, "already exists", str(existing))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert export.main([str(run), "--output", str(dangling)]) == 2  # was a NotADirectoryError at the final rename
    _assert_one_error(capsys, "already exists (a symbolic link to a missing path)", str(dangling))
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()

    assert export.main([str(run), "--quantize", "int8"]) == 2
    _assert_one_error(capsys, "--quantize applies to LiteRT exports only")
    assert export.main([str(run), "--quantize", "dynamic", "--representative-files", "50"]) == 2
    err = capsys.readouterr().err  # the count was ignored without a word: it calibrates int8 only
    assert "--representative-files calibrates --quantize int8 only; ignored with --quantize dynamic" in err
    assert "--quantize applies to LiteRT exports only" in err
    exports = sorted((run / "export").glob("*")) if (run / "export").exists() else []  # (the fixture's run is shared)
    assert export.main([str(run), "--output", ""]) == 2  # a script's unset variable silently meant the default place
    _assert_one_error(capsys, "--output is empty")
    assert (sorted((run / "export").glob("*")) if (run / "export").exists() else []) == exports

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / rd.INCOMPLETE_MARKER).write_text("")
    assert export.main([str(unfinished)]) == 2
    _assert_one_error(capsys, "unfinished run")

    # An --output whose parent is a file, or under a folder that cannot be made: refused before any work (was a
    # traceback from mkdir).
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert export.main([str(run), "--output", str(a_file / "export")]) == 2
    _assert_one_error(capsys, "Cannot create the export folder", str(a_file / "export"))
    assert export.main([str(run), "--format", "litert", "--output", str(a_file / "deeper" / "export")]) == 2
    _assert_one_error(capsys, "Cannot create the export folder", str(a_file))
    assert a_file.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a_file", "dangling", "taken", "unfinished"]

    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line, status 2
        export.main([str(run), "--format", "onnx"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


@pytest.mark.parametrize("garble", ["no files", "entry without split", "unknown label"])
def test_a_garbled_manifest_is_one_error_naming_it(image_run, tmp_path, capsys, garble):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(image_run[0], run, ignore=shutil.ignore_patterns("export", "eval", "logs"))
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    if garble == "no files":
        manifest = {"root": manifest["root"]}
    elif garble == "entry without split":
        del manifest["files"][0]["split"]
    else:
        next(f for f in manifest["files"] if f["split"] == "test")["label"] = "zebra"
    (run / rd.MANIFEST_FILE).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert export.main([str(run), "--format", "litert", "--quantize", "int8"]) == 2  # was a KeyError traceback
    _assert_one_error(capsys, str(run / rd.MANIFEST_FILE), "is damaged", "train.py --config")
    assert not (run / "export").exists()


def test_a_missing_held_out_file_is_one_error_naming_it_and_the_folder(image_run, tmp_path, capsys):
    import shutil

    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(image_run[0], run, ignore=shutil.ignore_patterns("export", "eval", "logs"))
    shutil.copytree(image_run[1], data)
    manifest = rd.read_json(run / rd.MANIFEST_FILE) | {"root": str(data)}
    (run / rd.MANIFEST_FILE).write_text(json.dumps(manifest))
    gone = data / next(f for f in manifest["files"] if f["split"] == "test")["path"]
    gone.unlink()
    capsys.readouterr()
    assert export.main([str(run)]) == 2  # the line read "... is cannot read file (...)"
    _assert_one_error(capsys, f"{str(gone)!r} is unusable: cannot read file (No such file or directory)",
                      f"Restore the training folder {str(data)!r}")
    assert not (run / "export").exists() or not any((run / "export").iterdir())


def test_int8_needs_enough_training_files(tmp_path, capsys):
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    for c, name in enumerate(["a", "b"]):
        (data / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(data / name / f"{i}.png")
    run = tmp_path / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--output", str(run)]) == 0
    capsys.readouterr()
    assert export.main([str(run), "--format", "litert", "--quantize", "int8"]) == 2
    _assert_one_error(capsys, "needs at least 20", "--quantize dynamic or float16")
    assert not (run / "export").exists() or not any((run / "export").iterdir())


def test_damaged_artifacts_are_one_clear_error(image_run, tmp_path, capsys):
    run, data = image_run
    truncated = tmp_path / "truncated.tflite"
    source = run / "export" / "litert-float32" / "model.tflite"
    if not source.exists():
        assert export.main([str(run), "--format", "litert"]) == 0
    truncated.write_bytes(source.read_bytes()[:200])
    capsys.readouterr()
    assert evaluate.main([str(run), str(data), "--artifact", str(truncated)]) == 2
    _assert_one_error(capsys, "Cannot load the LiteRT model", str(truncated))

    broken = tmp_path / "broken_savedmodel"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf at all")
    assert evaluate.main([str(run), str(data), "--artifact", str(broken)]) == 2
    _assert_one_error(capsys, "Cannot load the SavedModel", str(broken))

    assert evaluate.main([str(run), str(data), "--artifact", str(tmp_path / "missing")]) == 2
    _assert_one_error(capsys, "Artifact not found")


def test_leftovers_of_killed_exports_go_and_a_concurrent_export_is_one_error(image_run, tmp_path, monkeypatch,
                                                                             capsys):
    import app.exporting as exporting

    run, _ = image_run
    dead = tmp_path / f".tmp-{_exited_pid()}-served"  # an export killed before it finished
    (dead / "variables").mkdir(parents=True)
    scratch = tmp_path / f".tmp-{_exited_pid()}-served-scratch-abc"
    scratch.mkdir()
    report = tmp_path / f".tmp-{_exited_pid()}-served.parity-failed.json"  # killed while writing its report
    report.write_text('{"passed": fal')
    alive = tmp_path / f".tmp-{os.getppid()}-served"  # an export still running
    alive.mkdir()
    others = [tmp_path / f".tmp-{_exited_pid()}-served2", tmp_path / f".tmp-{_exited_pid()}-model.keras"]
    for other in others:  # another export's, another writer's: not this export's to tidy
        other.write_text("")
    exporting.remove_stale_staging(tmp_path / "served")
    assert not dead.exists() and not scratch.exists() and not report.exists() and alive.exists()
    assert all(other.exists() for other in others)

    # Another export finishing into the same --output while this one runs: one ERROR line, the other kept.
    output = tmp_path / "raced"
    original = exporting._export_savedmodel

    def other_export_lands_meanwhile(*args, **kwargs):
        report = original(*args, **kwargs)
        output.mkdir()
        (output / "saved_model.pb").write_bytes(b"the other export's")
        return report
    monkeypatch.setattr(exporting, "_export_savedmodel", other_export_lands_meanwhile)
    capsys.readouterr()
    assert export.main([str(run), "--output", str(output)]) == 2
    _assert_one_error(capsys, "was written by another export while this one ran", "Choose another --output")
    assert (output / "saved_model.pb").read_bytes() == b"the other export's"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".raced")] == []  # no staging left


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_text_export_given_to_an_image_run_names_the_modality(image_run, tmp_path, monkeypatch, capsys):
    # The text graph's WordPiece ops are unknown in a process that never imported tensorflow_text (an image run's);
    # within this test process they may already be registered, so TensorFlow's refusal is stood in for.
    import tensorflow as tf

    run, data = image_run
    folder = tmp_path / "text_export"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")

    def refuse(path):
        raise tf.errors.NotFoundError(None, None, "Op type not registered 'WordpieceTokenizeWithOffsets' in binary "
                                                  "running on host.\nMore detail")
    monkeypatch.setattr(tf.saved_model, "load", refuse)
    capsys.readouterr()
    assert evaluate.main([str(run), str(data), "--artifact", str(folder)]) == 2
    _assert_one_error(capsys, "it is the export of a text model", "python export.py RUN_DIR",
                      "Op type not registered 'WordpieceTokenizeWithOffsets'")


def test_export_failing_its_parity_check_writes_only_the_report(image_run, tmp_path, monkeypatch, capsys):
    import app.parity

    run, _ = image_run
    monkeypatch.setattr(app.parity, "MAX_QUANTIZED_ACCURACY_DROP", -1.0)  # no quantized model can pass
    output = tmp_path / "refused"
    capsys.readouterr()
    assert export.main([str(run), "--format", "litert", "--quantize", "dynamic", "--output", str(output)]) == 2
    _assert_one_error(capsys, "failed its parity check and was not written", "refused.parity-failed.json")
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["refused.parity-failed.json"]
    report = json.loads((tmp_path / "refused.parity-failed.json").read_text())
    assert report["passed"] is False and report["checks"][0]["num_files"] > 0

    # A later try that passes leaves only its export: the earlier failure's report no longer describes that path.
    monkeypatch.undo()
    assert export.main([str(run), "--format", "litert", "--quantize", "dynamic", "--output", str(output)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused"]


def test_export_paths_tensorflow_cannot_use_are_refused_before_any_work(image_run, tmp_path, capsys):
    """Each was a traceback after the artifact had been built (the report folder: after it was in place)."""
    run, _ = image_run
    capsys.readouterr()
    assert export.main([str(run), "--output", str(tmp_path / "caf\udce9")]) == 2  # the byte 0xE9: Latin-1, not UTF-8
    _assert_one_error(capsys, "is not UTF-8", "caf\\xe9", "convmv")
    # Its staging folder, scratch folder or failed report (the name plus up to ~32 bytes) would not fit.
    assert export.main([str(run), "--output", str(tmp_path / "new" / ("a" * 240))]) == 2
    _assert_one_error(capsys, "folder name is too long", "(240 bytes)", "Choose a name of at most")
    (tmp_path / "served.parity-failed.json").mkdir()
    assert export.main([str(run), "--format", "litert", "--output", str(tmp_path / "served")]) == 2
    _assert_one_error(capsys, "served.parity-failed.json' is a folder", "Move that folder away")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served.parity-failed.json"]

    # A --batch-size beyond TensorFlow's int64 overflowed its batching after the artifact was built: argparse's
    # one error line now, as for predict.py and evaluate.py (app/cli.batch_size).
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(run), "--format", "litert", "--batch-size", str(10**20), "--output", str(tmp_path / "lite")])
    assert exit_info.value.code == 2 and "must be at most 65536" in capsys.readouterr().err
    assert not (tmp_path / "lite").exists()


def test_a_damaged_parity_report_does_not_block_evaluating_the_export(image_run, tmp_path, capsys):
    import shutil

    run, data = image_run
    assert export.main([str(run), "--format", "litert", "--output", str(tmp_path / "lite")]) == 0
    for content in ("{bad", "[1, 2]"):
        copy = tmp_path / f"copy{len(content)}"
        shutil.copytree(tmp_path / "lite", copy)
        (copy / "parity.json").write_text(content)
        capsys.readouterr()
        assert evaluate.main([str(run), str(data), "--artifact", str(copy), "--bootstrap", "20",
                              "--name", f"damaged{len(content)}"]) == 0
        err = capsys.readouterr().err
        assert err.count("is unreadable or not an export's report") == 1 and "Traceback" not in err


def test_a_savedmodel_failing_on_a_batch_says_what_was_fed_and_what_to_do():
    """TensorFlow's first line can be the bare "Graph execution error:" (an image export fed a text run's strings,
    its parity.json gone): the message named nothing."""
    import tensorflow as tf

    from app.artifacts import InputSpec, SavedModelPredictor
    from app.errors import UserError

    predictor = object.__new__(SavedModelPredictor)  # no SavedModel to load: only the batch loop is under test
    predictor.tf, predictor.path = tf, Path("/exports/sm")
    predictor.spec = InputSpec("text", None, "stretch")

    def fails(chunk):
        raise tf.errors.InvalidArgumentError(None, None, "Graph execution error:\n\nDetected at node DecodeImage\n"
                                             "Unknown image file format. One of JPEG, PNG, GIF, BMP required.")

    with pytest.raises(UserError) as error:
        predictor._batched(fails, ["a text"], 8)
    message = str(error.value)
    assert "failed on a batch of this run's text inputs" in message and "Unknown image file format" in message
    assert "pass an export of this one (python export.py RUN_DIR)" in message
