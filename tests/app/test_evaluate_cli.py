import pytest
import csv
import json

import numpy as np
from PIL import Image

import evaluate
import train


def _data(root):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "mid", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 50, (16, 16, 3), dtype=np.uint8) + np.uint8(80 * c)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_compare_apply_temperature_and_mistake_csv(tmp_path, capsys):
    data = _data(tmp_path / "data")
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "3", "--seed", str(seed),
                           "--output", str(run)]) == 0
        runs.append(run)
    capsys.readouterr()
    assert evaluate.main([str(runs[0]), str(data), "--compare", str(runs[1]), "--bootstrap", "200"]) == 0
    table = capsys.readouterr().out
    assert table.count("| tiny_image | linear |") == 2 and "accuracy (95% CI)" in table

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
