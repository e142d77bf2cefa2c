import pytest
import csv
import json

import numpy as np
from PIL import Image

import evaluate
import train
from data import atomic_write
from data.atomic_write import FAULT_LOG_VARIABLE, FAULT_VARIABLE


def _data(root):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "mid", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 50, (16, 16, 3), dtype=np.uint8) + np.uint8(80 * c)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_compare_apply_temperature_and_mistake_csv(tmp_path, capsys, monkeypatch):
    data = _data(tmp_path / "data")
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "3", "--seed", str(seed),
                           "--output", str(run)]) == 0
        runs.append(run)
    capsys.readouterr()
    assert evaluate.main([str(runs[0]), str(data), "--compare", str(runs[1]), "--bootstrap", "200"]) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert table.count("| tiny_image | linear |") == 2 and "accuracy (95% CI)" in table
    # Each run scores its own held-out files: as many, described alike, but not the same files (another --seed).
    held_out = [{f["path"] for f in json.loads((run / "manifest.json").read_text())["files"] if f["split"] == "test"}
                for run in runs]
    assert len(held_out[0]) == len(held_out[1]) and held_out[0] != held_out[1]
    assert f"{runs[1]} scores other files than {runs[0]}" in captured.err

    # A run of the list that is missing (a typo) is refused before any run is evaluated: nothing written.
    assert evaluate.main([str(runs[0]), str(data), "--compare", str(tmp_path / "typo"), "--name", "early"]) == 2
    assert "typo" in capsys.readouterr().err and not (runs[0] / "eval" / "early").exists()

    # Two other folders of one name (no --name): the second's report goes beside the first's, never in its place.
    others = [tmp_path / parent / "data" for parent in ("elsewhere", "yet")]
    for level, other in enumerate(others):
        for c, name in enumerate(["dark", "mid", "light"]):
            (other / name).mkdir(parents=True)
            Image.fromarray(np.full((16, 16, 3), 20 + 80 * c + level, np.uint8)).save(other / name / "new.png")
        assert evaluate.main([str(runs[0]), str(other), "--bootstrap", "10"]) == 0
    reports = {json.loads(m.read_text())["data_dir"]: m.parent.name for m in (runs[0] / "eval").glob("*/metrics.json")}
    assert reports == {str(data): "data-heldout-test", str(others[0]): "data-all", str(others[1]): "data-all-2"}

    assert evaluate.main([str(runs[0]), str(data), "--apply-temperature", "--name", "cal"]) == 0
    metrics = json.loads((runs[0] / "eval" / "cal" / "metrics.json").read_text())
    metadata = json.loads((runs[0] / "metadata.json").read_text())
    assert metrics["calibration"]["temperature_applied"] is True
    assert metrics["calibration"]["fitted_temperature"] == metadata["calibration"]["temperature"] > 0
    rows = list(csv.DictReader((runs[0] / "eval" / "cal" / "misclassified.csv").open()))
    wrong = metrics["num_examples"] - round(metrics["accuracy"] * metrics["num_examples"])
    assert len(rows) == wrong
    assert all(r["true"] != r["predicted"] for r in rows)
    confidences = [float(r["confidence"]) for r in rows]
    assert confidences == sorted(confidences, reverse=True)

    # A full disk while a report file is written: one ERROR naming it, exit 2, no temporary file left.
    # (The report writers go through write_atomically, so they are fault-injection boundaries too.)
    log = tmp_path / "boundaries.log"
    monkeypatch.setenv(FAULT_LOG_VARIABLE, str(log))
    monkeypatch.setattr(atomic_write, "_count", 0)
    assert evaluate.main([str(runs[0]), str(data), "--name", "logged"]) == 0
    labels = [line.split("\t")[1] for line in log.read_text().splitlines()]
    monkeypatch.delenv(FAULT_LOG_VARIABLE)
    for written in ("misclassified.csv", "confusion_matrix.png"):
        capsys.readouterr()
        monkeypatch.setattr(atomic_write, "_count", 0)
        monkeypatch.setenv(FAULT_VARIABLE, f"enospc@{labels.index(written) + 1}")
        assert evaluate.main([str(runs[0]), str(data), "--name", "full"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR metatune: " in line]
        assert len(errors) == 1 and written in errors[0], errors
        assert not list((runs[0] / "eval").rglob(".tmp-*"))
        assert not (runs[0] / "eval" / "full" / "metrics.json").exists()  # written last: the evaluation did not finish


@pytest.mark.parametrize("episodes", ["100001", "1000000000000", "99999999999999999999999"])
def test_too_many_episodes_are_refused_with_one_error_line(tmp_path, capsys, episodes):
    """--episodes 1000000000000 ended in a MemoryError traceback (a list of every episode number), a larger number in
    an OverflowError: refused before any run is read, with the maximum and what to pass."""
    from app.episodic_evaluation import MAX_EPISODES, evaluate_episodes
    from app.errors import UserError

    assert evaluate.main([str(tmp_path / "run"), str(tmp_path / "data"), "--episodes", episodes]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR metatune: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"--episodes must be at most {MAX_EPISODES}" in errors[0] and f"Received: --episodes {episodes}." in errors[0]
    assert f"Pass --episodes {MAX_EPISODES} or fewer" in errors[0]
    with pytest.raises(UserError, match=f"--episodes must be at most {MAX_EPISODES}"):  # the API checks it too
        evaluate_episodes(tmp_path / "run", tmp_path / "data", int(episodes))
    assert evaluate.main([str(tmp_path / "run"), str(tmp_path / "data"), "--episodes", str(MAX_EPISODES)]) == 2
    assert "Run directory not found" in capsys.readouterr().err  # the maximum itself passes the check


@pytest.mark.parametrize("script", ["evaluate", "predict"])
@pytest.mark.parametrize("size", ["65537", str(2**31 - 1), str(10**20)])
def test_a_batch_size_past_the_bound_is_refused_before_any_work(tmp_path, capsys, script, size):
    """10**20 overflowed TensorFlow's int64 (a traceback), 2**31 - 1 hung prediction: argparse's error, status 2."""
    import importlib

    from app.config import MAX_BATCH_SIZE

    main = importlib.import_module(script).main
    with pytest.raises(SystemExit) as exit_info:  # before the run folder is even looked at: it does not exist
        main([str(tmp_path / "run"), str(tmp_path / "data"), "--batch-size", size])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"--batch-size: must be at most {MAX_BATCH_SIZE}" in err and f"Received: {size}" in err


def test_train_s_batch_size_is_bounded_the_same():
    from app.config import MAX_BATCH_SIZE, TrainConfig
    from app.errors import UserError

    TrainConfig(data_dir="data", batch_size=MAX_BATCH_SIZE).validate()
    with pytest.raises(UserError, match=f"batch_size must be from 1 to {MAX_BATCH_SIZE}"):
        TrainConfig(data_dir="data", batch_size=MAX_BATCH_SIZE + 1).validate()
