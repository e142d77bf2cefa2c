"""The one line train.py prints about the files held out for testing (issue 23: say what was held out)."""

from types import SimpleNamespace

from app.config import TrainConfig
from app.training import held_out_line


def _scan(*splits):
    return SimpleNamespace(splits_present=lambda: list(splits))


def test_the_line_names_the_test_folder_the_carve_out_or_its_absence():
    config = TrainConfig(data_dir="d").validate()
    assert "test/ split (40 files)" in held_out_line(config, _scan("train", "test"), 40)
    carved = held_out_line(config, _scan(), 12, files_per_class=30)
    assert "12 files (20% of each class" in carved and "--test-fraction 0 trains on them" in carved
    few = held_out_line(config, _scan(), 10, files_per_class=5)  # the carve-out costs accuracy there
    assert "With 5 files per class that costs accuracy" in few and "consider --test-fraction 0" in few
    config.test_fraction = 0.0
    assert held_out_line(config, _scan(), 0).startswith("No test files held out")
