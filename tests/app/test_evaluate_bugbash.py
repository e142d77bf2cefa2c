"""evaluate.py bug-bash: report names that failed late or were deleted later, two evaluations of one name at once,
a run directory given as the data folder, --bootstrap without a bound, --apply-temperature refused only after the
whole pass, the --compare warning's counts, and Ctrl-C during the TensorFlow import."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import evaluate
import train
from app import cli, evaluation
from app.errors import UserError
from app.run_dir import REPORT_NAME_MAX_BYTES, check_report_name, holds_a_run
from colour_folders import write_colour_folder
from error_lines import one_error_line

KNOWN = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate-bugbash")
    data = write_colour_folder(root / "data", per_class=8, size=16, colours=KNOWN, seed=0)
    fresh = write_colour_folder(root / "fresh", per_class=3, size=16, colours=KNOWN, seed=7)  # files it never saw
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--image-size", "16", "--epochs", "2", "--seed", "1",
                       "--refit", "no", "--output", str(run)]) == 0
    return {"root": root, "run": run, "data": data, "fresh": fresh}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval_entries(run: Path) -> set[str]:
    return {p.name for p in (run / "eval").iterdir()} if (run / "eval").is_dir() else set()


# ----------------------------------------------------------------------------- --name, checked before any work


@pytest.mark.parametrize("name, fragment", [
    (".tmp-999999-mine", "must not begin with '.tmp-'"),  # the next evaluation removed it as a killed one's leftover
    ("y" * 250, "too long: 250 bytes"),  # failed with "File name too long" once every file was predicted
    ("a\nb", "control characters"),
    ("..", "plain folder name"),
])
def test_names_that_failed_late_or_were_deleted_later_are_refused(name, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        check_report_name(name)


@pytest.mark.parametrize("name", ["ünï€😀", "x" * REPORT_NAME_MAX_BYTES, ".hidden", "a b", "👨\u200d👩\u200d👧"])
def test_plain_names_stay_allowed(name):
    check_report_name(name)


def test_default_names_are_short_enough_and_never_a_staging_name(tmp_path):
    long_folder = tmp_path / ("z" * 250)
    name = evaluation.default_eval_name(long_folder, "heldout-test-litert-float16-5way-1shot")
    check_report_name(name)
    assert name.startswith("zzz") and name.endswith("-heldout-test-litert-float16-5way-1shot")
    assert len(f"{name}-999".encode()) <= REPORT_NAME_MAX_BYTES
    assert evaluation.default_eval_name(tmp_path / ".tmp-5-x", "all") == "tmp-5-x-all"
    assert evaluation.default_eval_name(tmp_path / "...", "all") == "data-all"


@pytest.mark.slow
def test_a_staging_like_name_is_refused_and_nothing_is_written(trained, capsys):
    run = trained["run"]
    before = _eval_entries(run)
    assert evaluate.main([str(run), str(trained["fresh"]), "--name", ".tmp-999999-mine", "--bootstrap", "10"]) == 2
    one_error_line(capsys.readouterr().err, "--name must not begin with '.tmp-'")
    assert _eval_entries(run) == before


@pytest.mark.slow
def test_a_data_folder_of_a_long_or_staging_like_name_gets_a_usable_report_name(trained, capsys):
    run = trained["run"]
    for folder_name in ("z" * 250, ".tmp-5-x"):
        folder = write_colour_folder(trained["root"] / folder_name, per_class=2, size=16, colours=KNOWN, seed=11)
        assert evaluate.main([str(run), str(folder), "--bootstrap", "10"]) == 0, capsys.readouterr().err
    assert evaluate.main([str(run), str(trained["fresh"]), "--bootstrap", "10", "--name", "later"]) == 0
    assert {"z" * (REPORT_NAME_MAX_BYTES - len("-all-999")) + "-all", "tmp-5-x-all"} <= _eval_entries(run)
    assert not [e for e in _eval_entries(run) if e.startswith(".tmp-")]


# ----------------------------------------------------------------------------- two evaluations of one name at once


@pytest.mark.slow
def test_a_second_evaluation_of_a_name_another_process_is_writing_is_refused(trained, capsys):
    run, name = trained["run"], "concurrent"
    assert evaluate.main([str(run), str(trained["fresh"]), "--bootstrap", "10", "--name", name]) == 0
    report, events = _snapshot(run / "eval" / name), _snapshot(run / "logs" / f"eval_{name}")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for the other evaluation
    try:
        staging = run / "eval" / f".tmp-{other.pid}-{name}" / name
        staging.mkdir(parents=True)
        capsys.readouterr()
        assert evaluate.main([str(run), str(trained["fresh"]), "--bootstrap", "10", "--name", name]) == 2
        one_error_line(capsys.readouterr().err, f"Another evaluation (PID {other.pid}) is writing", name)
        # Both said "Report: .../eval/NAME/report.md"; the second replaced the first, and logs/eval_NAME held both.
        assert _snapshot(run / "eval" / name) == report and _snapshot(run / "logs" / f"eval_{name}") == events
        assert staging.is_dir()  # the other's staging folder is the other's
        assert not list((run / "eval").glob(f".tmp-{os.getpid()}-*"))  # this one's own is gone
    finally:
        other.kill()
        other.wait()
    # Once the other process is gone, its folder is a leftover: the next evaluation tidies it and goes on.
    assert evaluate.main([str(run), str(trained["fresh"]), "--bootstrap", "10", "--name", name]) == 0
    assert not list((run / "eval").glob(".tmp-*"))


# ----------------------------------------------------------------------------- the data folder


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--episodes", "2", "--ways", "2", "--shots", "1", "--queries", "1"]])
def test_a_run_directory_given_as_the_data_folder_is_named_as_such(trained, capsys, extra):
    run = trained["run"]
    before = _eval_entries(run)
    assert evaluate.main([str(run), str(run), *extra]) == 2
    # It said the run's eval/ and logs/ were classes the model was not trained on, to "remove or rename".
    line = one_error_line(capsys.readouterr().err, "is a run directory", "--compare")
    assert "Remove or rename" not in line
    assert _eval_entries(run) == before


@pytest.mark.parametrize("layout", ["test", None])  # a test/ split (a skipped train/ file is not counted), no split
def test_unreadable_files_of_the_scored_folder_are_named_in_metrics_and_report(trained, tmp_path, layout):
    """The scan skipped them with a warning only: the report's accuracy was over fewer files without a word."""
    folder = tmp_path / "held"
    shutil.copytree(trained["fresh"], folder / layout if layout else folder)
    scored = folder / (layout or "") / "red"
    (scored / "broken.png").write_bytes(b"not a png")
    (scored / "empty.png").write_bytes(b"")
    if layout:
        shutil.copytree(trained["fresh"], folder / "train")
        (folder / "train" / "red" / "other.png").write_bytes(b"")  # not in the scored split
    assert evaluate.main([str(trained["run"]), str(folder), "--name", f"skipped-{layout}"]) == 0
    out = trained["run"] / "eval" / f"skipped-{layout}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(Path(item["path"]).name for item in metrics["skipped_files"]) == ["broken.png", "empty.png"]
    assert metrics["num_examples"] == 9 and "2 unreadable file(s) skipped, not scored" in metrics["split"]
    report = (out / "report.md").read_text()
    assert "Not scored, unreadable: 2 file(s)" in report and "broken.png" in report and "other.png" not in report
    # A folder whose files all read has an empty list and no line.
    assert evaluate.main([str(trained["run"]), str(trained["fresh"]), "--name", f"clean-{layout}"]) == 0
    clean = trained["run"] / "eval" / f"clean-{layout}"
    assert json.loads((clean / "metrics.json").read_text())["skipped_files"] == []
    assert "Not scored" not in (clean / "report.md").read_text()


def test_a_data_set_with_a_metadata_json_of_its_own_is_still_a_data_folder(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    assert not holds_a_run(tmp_path)


# ----------------------------------------------------------------------------- --bootstrap, --apply-temperature


@pytest.mark.parametrize("value", ["100001", "1000000000000"])
def test_a_bootstrap_count_past_the_bound_is_a_usage_error(value, capsys):
    # 10**8 ran for hours; 10**12 ended in an out-of-memory line naming other options.
    with pytest.raises(SystemExit) as exit_info:
        evaluate.build_parser().parse_args(["RUN", "DATA", "--bootstrap", value])
    assert exit_info.value.code == 2
    assert f"must be at most 100000 (1000 is usual). Received: {value}" in capsys.readouterr().err


@pytest.mark.slow
def test_apply_temperature_without_one_is_refused_before_any_prediction(trained, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    metadata = json.loads((run / "metadata.json").read_text())
    metadata["calibration"]["temperature"] = None
    (run / "metadata.json").write_text(json.dumps(metadata))

    def no_prediction(*_, **__):
        raise AssertionError("predicted before refusing --apply-temperature")

    monkeypatch.setattr(evaluation.LoadedRun, "predict_examples", no_prediction)
    assert evaluate.main([str(run), str(trained["fresh"]), "--apply-temperature"]) == 2
    one_error_line(capsys.readouterr().err, "has no fitted temperature")


# ----------------------------------------------------------------------------- --compare's warning


def test_the_compare_warning_counts_the_files_in_common(caplog):
    def opened(path, paths):
        return (path, None, SimpleNamespace(paths=paths, description=f"files of {path}"))

    first = [f"f{i}" for i in range(20)]
    with caplog.at_level(logging.WARNING):
        evaluation._warn_if_other_files([opened("run1", first), opened("run2", first[:4]), opened("run3", first)])
    warnings = [r.getMessage() for r in caplog.records]
    # A subset of the first run's files was reported as "0 of its 4 files ... are not among the 20".
    assert len(warnings) == 1 and "run2 scores other files than run1: 4 files" in warnings[0]
    assert "against 20, 4 of them the same" in warnings[0]


# ----------------------------------------------------------------------------- Ctrl-C in the first seconds


def test_ctrl_c_during_the_tensorflow_import_is_one_line_not_a_traceback(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "import_tensorflow_quietly", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.prepare_environment(splits_batches=False)
    assert exit_info.value.code == 130
    one_error_line(capsys.readouterr().err, "Interrupted.")
