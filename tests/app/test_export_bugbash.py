"""export.py on awkward runs and requests: --reject none, a damaged detector, a run being trained, held-out files
the graph cannot decode, unreadable calibration files, an export killed before its rename."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import export
import train
from app import run_dir as rd
from error_lines import one_error_line

ROOT = Path(__file__).resolve().parents[2]


def _image_folder(root: Path, suffix: str = "png", per_class: int = 14) -> Path:
    """Three classes told apart by brightness."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "mid", "light")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (20, 18, 3), dtype=np.uint8) + np.uint8(95 * c)
            Image.fromarray(pixels).save(root / name / f"{i}.{suffix}")
    return root


def _train(data: Path, run: Path) -> Path:
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "3", "--test-fraction", "0.25", "--seed", "3",
                       "--output", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bugbash-image")
    return _train(_image_folder(base / "data"), base / "run"), base / "data"


def _copy(run: Path, data: Path, into: Path) -> tuple[Path, Path]:
    """A copy of the run and of its training folder, the copy's manifest pointing at the copied folder."""
    shutil.copytree(run, into / "run", ignore=shutil.ignore_patterns("export", "eval", "logs"))
    shutil.copytree(data, into / "data")
    manifest = rd.read_json(into / "run" / rd.MANIFEST_FILE) | {"root": str(into / "data")}
    (into / "run" / rd.MANIFEST_FILE).write_text(json.dumps(manifest))
    return into / "run", into / "data"


def _one_error(capsys, *fragments) -> str:
    return one_error_line(capsys.readouterr().err, *fragments)


def test_reject_is_a_choice_and_changes_nothing_for_litert(image_run, tmp_path, capsys):
    run, _ = image_run
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(run), "--reject", "sometimes"])
    assert exit_info.value.code == 2 and "invalid choice: 'sometimes'" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    # Refused before any conversion (the output's parent is a file): the warning comes first, the ERROR line last.
    assert export.main([str(run), "--format", "litert", "--reject", "none", "--output", str(a_file / "x")]) == 2
    err = capsys.readouterr().err
    assert "--reject none changes nothing with --format litert" in err
    assert err.count(" ERROR ") == 1 and "Traceback" not in err


def test_an_output_ending_in_dot_dot_names_its_existing_grandparent(image_run, tmp_path, capsys):
    # It was exported and checked in full, then renaming the staging folder onto `..` was an EBUSY traceback.
    run, _ = image_run
    capsys.readouterr()
    assert export.main([str(run), "--output", str(tmp_path / "nope" / "..")]) == 2
    _one_error(capsys, "The output path already exists", f"--output {str(tmp_path)!r}")
    assert list(tmp_path.iterdir()) == []


def test_an_unfinished_run_being_trained_says_so_instead_of_resume(image_run, tmp_path, capsys):
    from app.run_lock import RunLock

    run, data = _copy(*image_run, tmp_path)
    (run / rd.INCOMPLETE_MARKER).write_text("")
    with RunLock(run):  # what train.py holds while it trains (another open file description: flock conflicts)
        capsys.readouterr()
        assert export.main([str(run)]) == 2
        line = _one_error(capsys, "is being trained right now", f"PID {os.getpid()}", "Wait for that training")
        assert "--resume" not in line  # it would be refused: the run is in use
    assert export.main([str(run)]) == 2  # nobody trains it: an interrupted run, resumable
    _one_error(capsys, "is an unfinished run", "train.py --resume")
    assert not (run / "export").exists()


def test_unreadable_calibration_files_are_left_out_not_blamed_on_litert(image_run, tmp_path, caplog, capsys):
    from app.errors import UserError
    from app.evaluation import load_run
    from app.exporting import representative_paths

    run, data = _copy(*image_run, tmp_path)
    training = [data / f["path"] for f in rd.read_json(run / rd.MANIFEST_FILE)["files"] if f["split"] == "train"]
    assert len(training) == 21
    training[0].write_bytes(b"not an image any more")  # the converter failed with "an operation LiteRT lacks"
    loaded = load_run(run)
    with caplog.at_level(logging.WARNING, logger="app.exporting"):
        chosen = representative_paths(loaded, 500)
    assert str(training[0]) not in chosen and len(chosen) == 20
    assert "leaves out 1 training file(s) that can no longer be read" in caplog.text and str(training[0]) in caplog.text
    assert len(representative_paths(loaded, 5)) == 5  # asked for fewer than 20 (at least 20 exist): as before

    training[1].write_bytes(b"")
    with pytest.raises(UserError, match="only 19 of the 21 .* can still be read") as error:
        representative_paths(loaded, 500)
    assert "Restore the training folder" in str(error.value)
    capsys.readouterr()
    assert export.main([str(run), "--format", "litert", "--quantize", "int8"]) == 2
    _one_error(capsys, "needs at least 20", "can still be read")
    assert not (run / "export").exists() or not any((run / "export").iterdir())


@pytest.mark.slow
def test_reject_none_exports_a_run_whose_detector_is_damaged_without_unknown_outputs(image_run, tmp_path, capsys):
    import tensorflow as tf

    from app.evaluation import load_run
    from data.records import Example

    run, data = _copy(*image_run, tmp_path)
    (run / "unknown.npz").write_bytes((run / "unknown.npz").read_bytes()[:300])
    capsys.readouterr()
    assert export.main([str(run)]) == 2  # the detector cannot go into the graph: say how to go without it
    _one_error(capsys, "unknown.npz", "export.py --reject none")
    assert not (run / "export" / "savedmodel").exists()

    assert export.main([str(run), "--reject", "none"]) == 0
    out = capsys.readouterr().out
    assert "unknown-class score" not in out and "serving_default" in out
    exported = run / "export" / "savedmodel"
    parity = json.loads((exported / "parity.json").read_text())
    assert parity["passed"] and parity["unknown_checks"] == []
    assert any("--reject none" in note for note in parity["notes"])
    loaded = tf.saved_model.load(str(exported))
    for name in ("serving_default", "pixels"):
        assert set(loaded.signatures[name].structured_outputs) == {"probabilities", "top_class"}, name
    files = sorted(str(p) for p in data.rglob("*.png"))[:6]
    served = loaded.signatures["serving_default"](inputs=tf.constant([Path(f).read_bytes() for f in files]))
    keras_probabilities = load_run(run).predict_examples([Example(f, 0, None) for f in files])
    np.testing.assert_allclose(served["probabilities"].numpy(), keras_probabilities, atol=1e-5)


@pytest.mark.slow
def test_held_out_files_the_graph_cannot_decode_are_checked_through_pixels_only(tmp_path, capsys):
    run = _train(_image_folder(tmp_path / "data", "webp", per_class=8), tmp_path / "run")
    capsys.readouterr()
    assert export.main([str(run)]) == 0  # was a ValueError traceback (an empty result of another shape)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    parity = json.loads((run / "export" / "savedmodel" / "parity.json").read_text())
    held_out = parity["checks"][0]["num_files"]
    assert parity["passed"] and held_out > 0
    assert [c["signature"].split(" ")[0] for c in [*parity["checks"], *parity["unknown_checks"]]] == ["pixels"] * 2
    assert f"{held_out} of {held_out} held-out file(s) are WebP/TIFF" in " ".join(parity["notes"])
    # Every check is printed, the unknown-class one too (only the probability checks were).
    assert captured.out.count("pixels (uint8") == 2 and "unknown-class score" in captured.out


@pytest.mark.slow
def test_an_export_killed_before_its_rename_leaves_nothing_that_looks_done(image_run, tmp_path, capsys):
    run, _ = image_run
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"METATUNE_FAULT": "kill@label=parity.json"}
    killed = subprocess.run([sys.executable, str(ROOT / "export.py"), str(run), "--output", str(output)], env=env,
                            cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILLed with the checked export in its staging folder
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert not output.exists() and len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert export.main([str(run), "--output", str(output)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the dead export's staging folder went
    assert json.loads((output / "parity.json").read_text())["passed"]
