"""--exclude-label-issues: the listed files leave both labelled splits, within the guards."""

import numpy as np

from app.label_issue_run import exclude_label_issues
from app.label_issues import LabelIssue
from data.records import Example


def _split(split, labels, start):
    examples = [Example(f"{split}{start + i}", label, split) for i, label in enumerate(labels)]
    features = np.arange(len(labels), dtype=np.float32)[:, None] + start
    return examples, features


def _issues(*paths):
    return [LabelIssue(path, "a", "b", 0.9 - 0.01 * i) for i, path in enumerate(paths)]


def test_listed_files_leave_train_and_validation_with_their_features():
    train, train_f = _split("train", [0, 0, 0, 1, 1, 1], 0)
    val, val_f = _split("val", [0, 1, 1], 100)
    report = {}
    kept = exclude_label_issues(report, _issues("val101", "train1", "train4", "train5"), "2", train, train_f, val, val_f)
    new_train, new_train_f, new_val, new_val_f = kept
    assert [e.path for e in new_train] == ["train0", "train2", "train3", "train4", "train5"]
    assert [e.path for e in new_val] == ["val100", "val102"]
    # Features follow their examples row for row.
    assert new_train_f[:, 0].tolist() == [0, 2, 3, 4, 5] and new_val_f[:, 0].tolist() == [100, 102]
    assert report["label_issues_excluded"] == ["train1", "val101"]


def test_a_class_keeps_one_training_file_and_validation_is_never_emptied(caplog):
    train, train_f = _split("train", [0, 0, 1, 1], 0)
    val, val_f = _split("val", [0, 1], 100)
    report = {}
    new_train, _, new_val, _ = exclude_label_issues(report, _issues("train0", "train1", "train2", "val100", "val101"),
                                                    "auto", train, train_f, val, val_f)
    assert [e.path for e in new_train] == ["train1", "train3"]  # class 0's last file stays; class 1 lost train2 only
    assert [e.path for e in new_val] == ["val100", "val101"]
    assert report["label_issues_excluded"] == ["train0", "train2"]
    err = caplog.text
    assert "each its class's last training file: train1" in err and "every validation file is listed" in err


def test_zero_or_no_issues_changes_nothing(caplog):
    train, train_f = _split("train", [0, 1], 0)
    val, val_f = _split("val", [0], 100)
    report = {}
    caplog.set_level("INFO")
    assert exclude_label_issues(report, _issues("train0"), "0", train, train_f, val, val_f)[0] == train
    assert "--exclude-label-issues" not in caplog.text  # 0 is the default: nothing to say
    assert exclude_label_issues(report, [], "auto", train, train_f, val, val_f)[2] == val
    assert "label_issues_excluded" not in report
    # Asked for and found nothing to leave out: said, not silent (it read as a setting that was ignored).
    assert "--exclude-label-issues auto: the ranking lists no likely mislabelled file, so none is left out" in caplog.text


def test_a_class_left_without_validation_files_is_named(caplog):
    train, train_f = _split("train", [0, 0, 1, 1], 0)
    val, val_f = _split("val", [0, 1, 1], 100)
    report = {}
    _, _, new_val, _ = exclude_label_issues(report, _issues("val100"), "auto", train, train_f, val, val_f)
    assert [e.path for e in new_val] == ["val101", "val102"]
    assert "no validation file is left for 1 class(es) (a)" in caplog.text
