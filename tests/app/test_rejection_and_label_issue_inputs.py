"""Awkward inputs around unknown-class rejection and label issues: each a clear error or a correct result, never a
number computed on the wrong files."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from app import label_issue_run
from app.config import TrainConfig
from app.errors import UserError
from app.open_set_evaluation import check_unknown_apart
from app.training import check_data
from app.unknown_scores import UnknownScorer
from app.unknown_selection import UnknownDetector
from app.unknown_store import DETECTOR_FILE, load_detector, save_detector

KNOWN = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
UNKNOWN = {"yellow": (230, 220, 20)}


def _folder(root, colours, per_class=6, seed=0, size=(16, 16)):
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _assert_clean_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rejection")
    data = _folder(root / "data", KNOWN)
    run = root / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--no-cache-features",
                       "--output", str(run)]) == 0
    return root, data, run


# --------------------------------------------------------------------------- evaluate.py --unknown


def test_unknown_files_identical_to_the_runs_own_files_are_left_out(tiny_run, capsys):
    """A copy of the training folder under another name (`--unknown backup/misc`) was scored as unknown: the AUROC
    measured how unfamiliar the model finds the files it trained on."""
    root, data, run = tiny_run
    mixed = _folder(root / "mixed-unknown", UNKNOWN, per_class=4, seed=5)
    (mixed / "misc").mkdir()
    for i, source in enumerate(sorted((data / "red").glob("*.png"))[:3]):
        shutil.copy(source, mixed / "misc" / f"copy{i}.png")
    assert evaluate.main([str(run), str(data), "--unknown", str(mixed), "--name", "mixed-copies"]) == 0
    assert "3 file(s) are byte-identical to files of classes the run knows" in capsys.readouterr().err
    open_set = json.loads((run / "eval" / "mixed-copies" / "metrics.json").read_text())["open_set"]
    assert open_set["num_unknown"] == 4 and open_set["left_out_known_copies"] == 3

    only_copies = root / "only-copies" / "misc"
    only_copies.mkdir(parents=True)
    for source in sorted((data / "green").glob("*.png")):
        shutil.copy(source, only_copies / source.name)
    assert evaluate.main([str(run), str(data), "--unknown", str(only_copies.parent)]) == 2
    _assert_clean_error(capsys, "ERROR", "no readable image files of classes the model does not know",
                        "byte-identical to a file of a class it knows")


def test_unknown_folder_inside_a_class_folder_of_the_data_is_refused(tiny_run, capsys):
    """`--unknown DATA/red/extra`: DATA_DIR's evaluation takes its files as red ones, and they were scored as
    unknown too (the AUROC compared files with themselves)."""
    root, data, run = tiny_run
    inside = _folder(data / "red" / "extra", UNKNOWN, per_class=2, seed=9)
    try:
        assert evaluate.main([str(run), str(data), "--unknown", str(inside)]) == 2
        _assert_clean_error(capsys, "ERROR", "apart from DATA_DIR's class folders", "'red'", str(inside))
    finally:
        shutil.rmtree(data / "red" / "extra")


def test_check_unknown_apart_refuses_only_folders_inside_a_class_folder(tmp_path):
    data = tmp_path / "data"
    for bad in (data / "red" / "extra", data / "test" / "red" / "x" / "y"):
        with pytest.raises(UserError, match="apart from DATA_DIR's class folders.*Received: --unknown"):
            check_unknown_apart(str(bad), str(data))
    # DATA_DIR itself, a split folder or a class folder: the folder-name check leaves their files out with its own
    # message; a parent of DATA_DIR or a folder beside it is fine.
    for fine in (data, data / "test", data / "red", data / "test" / "red", tmp_path, tmp_path / "other"):
        check_unknown_apart(str(fine), str(data))


# --------------------------------------------------------------------------- a damaged detector


def _saved_detector(run_dir, **changes):
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(12, 4)), np.repeat([0, 1, 2], 4)
    kernel, bias = rng.normal(size=(4, 3)), np.zeros(3)
    scorer = UnknownScorer.fit(embeddings, labels, kernel, bias)
    scorer.calibrate(embeddings)
    save_detector(run_dir, scorer, UnknownDetector("energy", 1.0, 0.95, "test"))
    stored = json.loads((run_dir / DETECTOR_FILE).read_text())
    (run_dir / DETECTOR_FILE).write_text(json.dumps({**stored, **changes}))
    return kernel.shape


@pytest.mark.parametrize("recall", [7, 0, 1, -0.5])
def test_a_stored_reject_recall_outside_zero_one_is_damage(tmp_path, recall):
    """evaluate.py --unknown reported such a threshold as one that "keeps 700% of known validation files"."""
    shape = _saved_detector(tmp_path, reject_recall=recall)
    with pytest.raises(UserError, match=rf"damaged run directory.*reject_recall must be in \(0, 1\), "
                                        rf"received {recall}"):
        load_detector(tmp_path, shape)


def test_a_stored_reject_recall_inside_zero_one_loads(tmp_path):
    shape = _saved_detector(tmp_path, reject_recall=0.5)
    assert load_detector(tmp_path, shape)[1].reject_recall == 0.5


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("value", [False, None, 3.5, 1e3])
def test_config_file_exclude_label_issues_of_another_type_says_what_it_takes(value):
    """`exclude_label_issues: no` (YAML's false), `1e3` or `null` were told the option "must be a string"."""
    with pytest.raises(UserError, match=r"in run\.yaml: exclude_label_issues must be a whole number of files, auto "
                                        r"or 0 \(none\)\. Received: exclude_label_issues="):
        TrainConfig.from_dict({"data_dir": "d", "exclude_label_issues": value},
                              where={"exclude_label_issues": "run.yaml"})


@pytest.mark.parametrize("value", [3, "3", "auto", "0"])
def test_config_file_exclude_label_issues_valid_values_still_load(value):
    assert TrainConfig.from_dict({"data_dir": "d", "exclude_label_issues": value}).exclude_label_issues == str(value)


# --------------------------------------------------------------------------- train.py --check --label-issues


def test_check_label_issues_ranks_with_a_reused_backbones_resize_mode(tmp_path, monkeypatch):
    """With --backbone RUN_DIR, training takes that run's resize mode; --check --label-issues took --resize's default
    instead, so on non-square images it listed other files than --exclude-label-issues N then left out."""
    from app import backbone_choice, features

    data = _folder(tmp_path / "data", KNOWN, per_class=7, size=(24, 12))
    reused = SimpleNamespace(reused=object(), resize="pad", size=16, weights=None, pooling=None, name="tiny_image",
                             spec=SimpleNamespace(build_features=lambda *args: None))
    monkeypatch.setattr(backbone_choice, "resolve_backbone", lambda config, modality: reused)
    used = []

    def fake_features(extractor, examples, modality, size, batch_size, resize, key):
        used.append(resize)
        return np.eye(3)[[e.label for e in examples]] + np.random.default_rng(0).normal(0, 0.1, (len(examples), 3))

    monkeypatch.setattr(features, "cached_features", fake_features)
    config = TrainConfig(data_dir=str(data), cache_features=False)
    scan, examples, report = check_data(config)
    label_issue_run.check_label_issues(config, scan, examples, report)
    assert used == ["pad"] and "label_issues" in report


def test_unknown_files_identical_to_the_evaluated_known_files_are_left_out(tiny_run, tmp_path, capsys):
    """A copy of a file of the evaluated folder (not one the run trained on) was scored as known and as unknown."""
    root, data, run = tiny_run
    evaluated = _folder(tmp_path / "new-known", KNOWN, per_class=4, seed=11)  # files the run never saw
    unknown = _folder(tmp_path / "unknown", UNKNOWN, per_class=4, seed=12)
    (unknown / "misc").mkdir()
    for i, source in enumerate(sorted((evaluated / "red").glob("*.png"))[:2]):
        shutil.copy(source, unknown / "misc" / f"copy{i}.png")
    assert evaluate.main([str(run), str(evaluated), "--unknown", str(unknown), "--name", "evaluated-copies"]) == 0
    assert "2 file(s) are byte-identical to files of classes the run knows" in capsys.readouterr().err
    open_set = json.loads((run / "eval" / "evaluated-copies" / "metrics.json").read_text())["open_set"]
    assert open_set["left_out_known_copies"] == 2 and open_set["num_unknown"] == 4 * len(UNKNOWN)


def test_an_exclusion_that_leaves_too_few_files_for_the_episodes_is_one_error_naming_it(tmp_path, monkeypatch,
                                                                                       capsys):
    """The episode check ran before --exclude-label-issues left files out: a protonet run whose classes no longer
    filled an episode failed later in meta-training, naming a class count that matched nothing the user typed."""
    import app.training as training
    from app.label_issue_run import exclude_label_issues
    from app.label_issues import LabelIssue

    data = _folder(tmp_path / "data", KNOWN, per_class=8)

    def leaves_most_red_files_out(report, issues, setting, train, train_features, val, val_features):
        # The real exclusion (its guards keep one red training file), on a ranking that lists every red file.
        red = [LabelIssue(e.path, "red", "green", 1.0) for e in train + val if Path(e.path).parent.name == "red"]
        return exclude_label_issues(report, red, setting, train, train_features, val, val_features)

    monkeypatch.setattr(training, "exclude_label_issues", leaves_most_red_files_out)
    run = tmp_path / "run"
    status = train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--no-cache-features",
                         "--strategy", "protonet", "--ways", "3", "--shots", "2", "--queries", "2",
                         "--exclude-label-issues", "20", "--output", str(run)])
    assert status == 2
    _assert_clean_error(capsys, "ERROR", "--exclude-label-issues 20 left too few training files for the episodes",
                        "queries=2. Start a new run (--output NEW_DIR)", f"{run} stays INCOMPLETE")


def test_the_kept_share_is_logged_as_asked_not_rounded_to_a_whole_percent(tmp_path, capsys):
    """--reject-recall 0.999 was logged as "keeps 100%", 1e-12 as "keeps 0%"."""
    data = _folder(tmp_path / "data", KNOWN)
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--no-cache-features",
                       "--reject-recall", "0.999", "--output", str(tmp_path / "run")]) == 0
    # 99.9% needs 999 validation files (app/unknown_scores.detector_threshold): this run's detector rejects nothing.
    assert "validation files are too few to keep 99.9%" in capsys.readouterr().err
