"""Unknown-class rejection through the CLIs: stored at training, used by predict.py and evaluate.py --unknown."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import predict
import train
from app import run_dir as rd
from app.escaping import markdown_cell
from app.unknown_store import ARRAYS_FILE, DETECTOR_FILE
from data.scan import skipped_by_name

pytestmark = pytest.mark.slow  # end-to-end runs of the real CLIs (make test-fast leaves them out)

KNOWN = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
UNKNOWN = {"yellow": (230, 220, 20), "magenta": (210, 30, 210)}
# 0.8: these runs hold 6 validation files, too few for a threshold that keeps 95% of known files (19 needed;
# app/unknown_scores.detector_threshold), with which the detector rejects nothing.
FAST = ["--backbone", "tiny_image", "--epochs", "30", "--seed", "1", "--reject-recall", "0.8"]


def _folder(root, colours, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("unknown")
    data = _folder(root / "data", KNOWN)
    run = root / "run"
    assert train.main([str(data), *FAST, "--output", str(run)]) == 0
    return root, data, run


def assert_clean_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def assert_threshold_set_on_files_new_to_the_scoring_head(run):
    """After a refit on train + validation that retrained only head_dense, the detector's head (unknown.npz) is
    the first model's, which never saw the validation files: it gives them the validation loss the run reports
    (the first model's), not the refitted head's, and the threshold keeps reject_recall of their scores.
    Scored by the refitted head, those files looked more familiar than new files of their classes: at 0.95 the
    threshold rejected 5.0-13.5% of new known files (Fashion-MNIST sample, 3 seeds), 2.0-4.5% with the first head."""
    from app.evaluation import load_run
    from app.open_set import embed_examples, head_weights
    from app.unknown_scores import detector_threshold, softmax_logits
    from app.unknown_store import load_detector
    from data.records import Example

    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["refit"]["applied"] is True  # else there is nothing to check
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    names = manifest["class_names"]
    val = [Example(str(Path(manifest["root"]) / f["path"]), names.index(f["label"]), "val")
           for f in manifest["files"] if f["split"] == "val"]
    loaded = load_run(run)
    embeddings, _ = embed_examples(loaded, val)
    scorer, detector = load_detector(run)
    labels = np.array([e.label for e in val])

    def val_loss(probabilities):
        return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0))))

    logits = softmax_logits(embeddings, scorer.kernel, scorer.bias)
    scored = np.exp(logits - logits.max(axis=1, keepdims=True))
    # Tight: these tiny heads barely learn, and the refitted one's loss on them differed by only 5e-5 (relative).
    assert val_loss(scored / scored.sum(axis=1, keepdims=True)) == pytest.approx(metadata["metrics"]["val_loss"],
                                                                                 rel=1e-6, abs=1e-7)
    assert not np.allclose(scorer.kernel, head_weights(loaded.model)[0])  # not the refitted head, which saw them
    assert detector.threshold == pytest.approx(detector_threshold(scorer.score(detector.score, embeddings),
                                                                  detector.reject_recall), rel=1e-5, abs=1e-6)
    assert "never saw the validation files" in detector.fitted_on


def test_training_stores_the_detector(trained):
    _, _, run = trained
    assert (run / DETECTOR_FILE).is_file() and (run / ARRAYS_FILE).is_file()
    detector = rd.read_json(run / DETECTOR_FILE)
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["unknown"]["score"] == detector["score"] and detector["reject_recall"] == 0.8
    assert detector["selection"]["auroc"]  # three classes: leave-one-class-out folds were measured
    assert_threshold_set_on_files_new_to_the_scoring_head(run)  # 7 training files per class: auto refits (linear)


def test_predict_marks_unknown_files_and_reject_none_turns_it_off(trained, capsys):
    root, data, run = trained
    unknown = _folder(root / "unknown-predict", UNKNOWN, per_class=6, seed=5)
    assert predict.main([str(run), str(unknown), str(data / "red"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    flagged = {r["file"]: r["unknown"] for r in rows}
    unknown_rate = np.mean([v for f, v in flagged.items() if "unknown-predict" in f])
    known_rate = np.mean([v for f, v in flagged.items() if "/red/" in f])
    assert unknown_rate > known_rate
    assert predict.main([str(run), str(unknown)]) == 0
    out = capsys.readouterr().out
    assert "unknown (closest: " in out
    assert predict.main([str(run), str(unknown), "--json", "--reject", "none"]) == 0
    assert all("unknown" not in r for r in json.loads(capsys.readouterr().out)["predictions"])


def test_a_detector_without_a_threshold_rejects_nothing_and_predict_says_so(trained, tmp_path, capsys):
    """A run with too few validation files for its --reject-recall stores threshold null (app/unknown_scores.
    detector_threshold): predict.py rejects nothing and says why, rather than rejecting its own classes' files."""
    import shutil

    root, data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    stored = rd.read_json(copy / DETECTOR_FILE)
    rd.write_json(copy / DETECTOR_FILE, {**stored, "threshold": None})
    unknown = _folder(root / "unknown-null", UNKNOWN, per_class=2, seed=7)
    assert predict.main([str(copy), str(unknown), "--json"]) == 0
    captured = capsys.readouterr()
    assert not any(r["unknown"] for r in json.loads(captured.out)["predictions"])
    assert "unknown-class detector rejects nothing" in captured.err and "Traceback" not in captured.err


def test_predict_in_groups_gives_what_one_pass_gives_and_prints_each_group_as_it_comes(trained, capsys, monkeypatch):
    """predict.py predicts CHUNK_INPUTS inputs at a time (bounded memory, output as it goes): the same lines,
    verdicts and scores as one pass, in the order given, with the run's embedding model built once."""
    from app import open_set, prediction

    root, data, run = trained
    inputs = [str(data / "red"), str(data / "green")]
    assert predict.main([str(run), *inputs, "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)["predictions"]
    assert predict.main([str(run), *inputs]) == 0
    whole_lines = capsys.readouterr().out.splitlines()
    built = []
    monkeypatch.setattr(prediction, "embedding_model",
                        lambda model: built.append(model) or open_set.embedding_model(model))
    monkeypatch.setattr(prediction, "CHUNK_INPUTS", 3)
    real = prediction.predictions_in_chunks
    printed = []  # the lines out before each group is predicted

    def watched(job):
        for chunk in real(job):
            printed.append(capsys.readouterr().out.splitlines())
            yield chunk

    monkeypatch.setattr(prediction, "predictions_in_chunks", watched)
    assert predict.main([str(run), *inputs, "--json"]) == 0
    grouped = json.loads(capsys.readouterr().out)["predictions"]
    assert len(whole) > 3 * 2 and [r["file"] for r in grouped] == [r["file"] for r in whole]
    for a, b in zip(grouped, whole):
        assert a["unknown"] == b["unknown"] and a["unknown_score"] == pytest.approx(b["unknown_score"], abs=1e-5)
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
    assert len(built) == 1
    printed.clear()
    assert predict.main([str(run), *inputs]) == 0
    printed.append(capsys.readouterr().out.splitlines())
    assert printed[0] == [] and all(len(lines) == 3 for lines in printed[1:-1])  # each group printed before the next
    assert [line for lines in printed for line in lines] == whole_lines


def test_jsonl_gives_the_skipped_files_then_one_line_per_prediction(trained, tmp_path, capsys):
    root, data, run = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    inputs = [str(data / "red"), str(broken)]
    assert predict.main([str(run), *inputs, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["skipped"] and document["predictions"]
    assert predict.main([str(run), *inputs, "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"file": s["file"], "skipped": s["reason"]} for s in document["skipped"]] + document["predictions"]
    with pytest.raises(SystemExit) as refused:  # one format or the other
        predict.main([str(run), *inputs, "--json", "--jsonl"])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_files_from_a_list_or_standard_input_adds_its_paths(trained, tmp_path, capsys, monkeypatch):
    import io
    import os
    import shutil
    import sys

    root, data, run = trained
    red = sorted((data / "red").iterdir())
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: read as the file's own bytes, it is found
    shutil.copy(red[0], odd)
    listing = tmp_path / "list.txt"
    listing.write_bytes(bytes(red[1]) + b"\r\n\n" + os.fsencode(odd) + b"\n" + bytes(data / "green") + b"\n")
    assert predict.main([str(run), "--files-from", str(listing), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    greens = sorted(str(p) for p in (data / "green").iterdir())
    assert [r["file"] for r in output["predictions"]] == [str(red[1]), *greens]
    # Found, then skipped as train.py skips it (TensorFlow cannot open a name that is not UTF-8), not "no such file".
    assert [s["reason"] for s in output["skipped"]] == [skipped_by_name(odd, "image").reason]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bytes(red[2]) + b"\n")))
    assert predict.main([str(run), str(red[3]), "--files-from", "-", "--json"]) == 0
    assert [r["file"] for r in json.loads(capsys.readouterr().out)["predictions"]] == [str(red[3]), str(red[2])]

    assert predict.main([str(run), "--files-from", str(tmp_path / "missing.txt")]) == 2
    assert_clean_error(capsys, "--files-from cannot read", "missing.txt", "No such file")
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert predict.main([str(run), "--files-from", str(tmp_path / "blank.txt")]) == 2
    assert_clean_error(capsys, "--files-from names no file", "blank.txt")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert predict.main([str(run), "--files-from", "-"]) == 2
    assert_clean_error(capsys, "--files-from names no file: standard input holds no path")


def test_evaluate_unknown_adds_open_set(trained, capsys):
    root, data, run = trained
    unknown = _folder(root / "unknown-eval", UNKNOWN, per_class=6, seed=6)
    assert evaluate.main([str(run), str(data), "--unknown", str(unknown), "--name", "open"]) == 0
    metrics = json.loads((run / "eval" / "open" / "metrics.json").read_text())
    open_set = metrics["open_set"]
    assert 0.0 <= open_set["auroc"] <= 1.0 and 0.0 <= open_set["fpr_at_95_tpr"] <= 1.0
    assert open_set["score"] == rd.read_json(run / DETECTOR_FILE)["score"]
    # Every candidate gets both numbers, and the chosen score's agree with the headline ones.
    assert set(open_set["fpr_at_95_tpr_by_score"]) == set(open_set["auroc_by_score"])
    assert open_set["fpr_at_95_tpr_by_score"][open_set["score"]] == open_set["fpr_at_95_tpr"]
    assert open_set["auroc_by_score"][open_set["score"]] == open_set["auroc"]
    assert open_set["num_unknown"] == 12 and open_set["known_accuracy"] == metrics["accuracy"]
    assert (run / "eval" / "open" / "open_set_histogram.png").is_file()
    assert "## Unknown classes" in (run / "eval" / "open" / "report.md").read_text()
    assert "AUROC" in capsys.readouterr().out


def test_unknown_folder_sharing_a_class_is_warned_and_left_out(trained, capsys):
    root, data, run = trained
    mixed = _folder(root / "mixed", {"red": KNOWN["red"], "yellow": UNKNOWN["yellow"]}, per_class=4, seed=7)
    assert evaluate.main([str(run), str(data), "--unknown", str(mixed), "--name", "mixed"]) == 0
    assert "red" in capsys.readouterr().err
    open_set = json.loads((run / "eval" / "mixed" / "metrics.json").read_text())["open_set"]
    assert open_set["num_unknown"] == 4 and open_set["left_out_folders"]


def test_a_known_class_folder_deeper_down_or_given_itself_is_left_out_of_the_unknown_set(trained, capsys,
                                                                                          monkeypatch):
    root, data, run = trained
    nested = root / "nested-unknown"
    _folder(nested / "more", {"red": KNOWN["red"], "yellow": UNKNOWN["yellow"]}, per_class=3, seed=8)
    (nested / "more" / "loop").symlink_to(nested)  # followed once, as collect_inputs does, not forever
    assert evaluate.main([str(run), str(data), "--unknown", str(nested), "--name", "nested"]) == 0
    assert "more/red" in capsys.readouterr().err
    open_set = json.loads((run / "eval" / "nested" / "metrics.json").read_text())["open_set"]
    assert open_set["num_unknown"] == 3 and open_set["left_out_folders"] == [str(nested / "more" / "red")]
    # The folder of a known class given as the unknown folder: nothing in it is unknown to the model.
    assert evaluate.main([str(run), str(data), "--unknown", str(data / "red")]) == 2
    assert_clean_error(capsys, "ERROR", "named like a known class")
    monkeypatch.chdir(data / "red")
    assert evaluate.main([str(run), str(data), "--unknown", "."]) == 2
    assert_clean_error(capsys, "ERROR", "named like a known class")


def test_empty_or_missing_unknown_folder_is_a_clear_error(trained, capsys):
    root, data, run = trained
    (root / "empty").mkdir()
    assert evaluate.main([str(run), str(data), "--unknown", str(root / "empty")]) == 2
    assert_clean_error(capsys, "--unknown", "no readable image files")
    assert evaluate.main([str(run), str(data), "--unknown", str(root / "absent")]) == 2
    assert_clean_error(capsys, "not a folder", "absent")


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_reject_recall_outside_zero_one_is_a_clear_error(tmp_path, capsys, value):
    data = _folder(tmp_path / "data", KNOWN, per_class=3)
    assert train.main([str(data), *FAST, "--reject-recall", value, "--output", str(tmp_path / "run")]) == 2
    assert_clean_error(capsys, "reject_recall must be in (0, 1)", value)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- label issues

def _noisy_colour_folder(root, per_class=10, flips=2):
    """Colour classes with `flips` files of red moved into green's folder (their label is wrong)."""
    data = _folder(root, KNOWN, per_class=per_class, seed=11)
    moved = []
    for i in range(flips):
        source = data / "red" / f"{i}.png"
        target = data / "green" / f"from-red-{i}.png"
        source.rename(target)
        moved.append(str(target))
    return data, moved


def test_check_label_issues_lists_the_moved_files_first(tmp_path, capsys):
    data, moved = _noisy_colour_folder(tmp_path / "data")
    assert train.main([str(data), "--backbone", "tiny_image", "--check", "--label-issues", "--test-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "Label issues:" in out
    listed = [line.split(": labelled")[0].split()[-1] for line in out.splitlines() if ": labelled " in line]
    assert set(listed[:len(moved)]) == set(moved)


def test_check_label_issues_lists_what_training_then_leaves_out(tmp_path, capsys):
    """A randomly initialised backbone (tiny_image, like --weights none) was built unseeded by --check: each call
    listed other files, and not the ones a run with --exclude-label-issues N leaves out."""
    data, _ = _noisy_colour_folder(tmp_path / "data")
    listings = []
    for _ in range(2):
        assert train.main([str(data), "--backbone", "tiny_image", "--check", "--label-issues", "--no-cache-features"]) == 0
        listings.append([line.split()[:2] for line in capsys.readouterr().out.splitlines() if ": labelled " in line])
    assert listings[0] and listings[0] == listings[1]
    run = tmp_path / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--no-cache-features",
                       "--output", str(run)]) == 0
    ranked = rd.read_json(run / rd.DATA_REPORT_FILE)["label_issues"]
    assert [[f"{i['score']:.3f}", i["path"] + ":"] for i in ranked] == listings[0]


def test_check_with_exclude_label_issues_previews_what_a_run_leaves_out(tmp_path, capsys):
    """`--check --exclude-label-issues N` ignored N: the doctor's report only, no sign of the files in question."""
    data, _ = _noisy_colour_folder(tmp_path / "data")
    assert train.main([str(data), "--backbone", "tiny_image", "--check", "--exclude-label-issues", "2",
                       "--no-cache-features", "--test-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "Label issues:" in out  # the ranking, without --label-issues
    preview = out.split("--exclude-label-issues 2: a training run would leave out 2 file(s) of training and "
                        "validation:\n")[1].split()[:2]
    run = tmp_path / "run"
    assert train.main([str(data), "--backbone", "tiny_image", "--epochs", "1", "--no-cache-features",
                       "--test-fraction", "0", "--exclude-label-issues", "2", "--output", str(run)]) == 0
    assert sorted(preview) == rd.read_json(run / rd.DATA_REPORT_FILE)["label_issues_excluded"]


def test_training_records_and_excludes_label_issues(tmp_path):
    data, moved = _noisy_colour_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert train.main([str(data), *FAST, "--exclude-label-issues", "auto", "--test-fraction", "0", "--output", str(run)]) == 0
    report = rd.read_json(run / rd.DATA_REPORT_FILE)
    assert {"path", "given", "suggested", "score"} == set(report["label_issues"][0])
    assert {i["path"] for i in report["label_issues"][:len(moved)]} == set(moved)
    # auto: every listed file leaves training and validation (no class or split here is close to the guards).
    assert set(report["label_issues_excluded"]) == {i["path"] for i in report["label_issues"]}
    # manifest.json says which files of the train and val splits did not train the run, and a resume still
    # recognises the data (it compares the manifest without those marks).
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    marked = {str(data / f["path"]) for f in manifest["files"] if "excluded" in f}
    assert marked == set(report["label_issues_excluded"])
    (run / rd.INCOMPLETE_MARKER).write_text("pretend it was killed")  # its checkpoints are gone: it trains again
    assert train.main(["--resume", str(run)]) == 0
    assert rd.read_json(run / rd.MANIFEST_FILE) == manifest
    # The moved files are misclassified by the fold heads: the recorded out-of-fold accuracy counts them.
    assert 0.0 < report["label_issues_fold_accuracy"] < 1.0
    assert f"out-of-fold accuracy {report['label_issues_fold_accuracy']:.3f}" in report["label_issues_note"]
    fresh = _folder(tmp_path / "fresh", KNOWN, per_class=3, seed=99)
    assert evaluate.main([str(run), str(fresh), "--name", "check"]) == 0
    text = (run / "eval" / "check" / "report.md").read_text()
    assert "## Likely label errors in the training data" in text and markdown_cell(moved[0]) in text
    assert (run / "eval" / "check" / "label_issues.png").is_file()


def test_label_issues_on_a_too_small_folder_is_a_clear_error(tmp_path, capsys):
    data = _folder(tmp_path / "data", KNOWN, per_class=3)
    assert train.main([str(data), "--backbone", "tiny_image", "--check", "--label-issues"]) == 2
    assert_clean_error(capsys, "at least 5 labelled files per class", "'red' has")
    assert train.main([str(data), *FAST, "--exclude-label-issues", "2", "--output", str(tmp_path / "run")]) == 2
    assert_clean_error(capsys, "at least 5 labelled files per class")
    assert not (tmp_path / "run").exists()
    assert train.main([str(data), "--backbone", "tiny_image", "--check", "--exclude-label-issues", "auto"]) == 2
    assert_clean_error(capsys, "at least 5 labelled files per class")


def test_label_issues_flag_needs_check(tmp_path, capsys):
    data = _folder(tmp_path / "data", KNOWN, per_class=3)
    assert train.main([str(data), "--label-issues"]) == 2
    assert_clean_error(capsys, "--label-issues goes with --check")


# ------------------------------------------------------------------------------- explanations

def test_predict_explain_writes_one_overlay_per_file(trained, tmp_path, capsys):
    _, data, run = trained
    out = tmp_path / "explain"
    assert predict.main([str(run), str(data / "blue"), "--explain", str(out)]) == 0
    overlays = sorted(out.glob("*-gradcam.png"))
    assert len(overlays) == len(list((data / "blue").iterdir()))
    assert Image.open(overlays[0]).size == (32, 32)  # tiny_image's default input size
    # A second call with fewer files into the same folder: the earlier overlays stay, and a warning says so.
    one = sorted((data / "blue").iterdir())[0]
    capsys.readouterr()
    assert predict.main([str(run), str(one), "--explain", str(out)]) == 0
    assert sorted(out.glob("*-gradcam.png")) == overlays
    err = capsys.readouterr().err
    assert f"also holds {len(overlays) - 1} explanation file(s) of an earlier call" in err
    # Its one overlay has the name of the earlier call's first one (0000-<stem>), which it replaced: said too.
    assert f"1 explanation file(s) of an earlier call had the names of this call's and were replaced (e.g. " \
           f"{overlays[0].name})" in err


def test_evaluate_report_has_the_gradcam_grid(trained):
    _, data, run = trained
    assert evaluate.main([str(run), str(data), "--name", "explained"]) == 0
    assert (run / "eval" / "explained" / "explanations.png").is_file()
    assert "## Where the model looked (Grad-CAM)" in (run / "eval" / "explained" / "report.md").read_text()


def test_protonet_run_rejects_through_its_prototypes(tmp_path, capsys):
    data = _folder(tmp_path / "data", KNOWN, per_class=12)
    run = tmp_path / "protonet"
    assert train.main([str(data), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-input", "features",
                       "--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "3",
                       "--meta-epochs", "2", "--embedding-units", "8", "--reject-recall", "0.8",
                       "--output", str(run)]) == 0
    detector = rd.read_json(run / DETECTOR_FILE)
    arrays = np.load(run / ARRAYS_FILE)
    assert arrays["kernel"].shape == (8, 3)  # the prototype layer over the 8-unit meta-learned embedding
    assert_threshold_set_on_files_new_to_the_scoring_head(run)  # meta strategies refit their classifier by default
    unknown = _folder(tmp_path / "unknown", UNKNOWN, per_class=3, seed=4)
    capsys.readouterr()  # training's output
    assert predict.main([str(run), str(unknown), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert all(isinstance(r["unknown"], bool) for r in rows) and detector["score"]


def test_predict_explain_into_a_folder_that_cannot_be_made_is_a_clear_error(trained, tmp_path, capsys):
    _, data, run = trained
    (tmp_path / "a-file").write_text("not a folder")
    one = str(sorted((data / "blue").iterdir())[0])
    assert predict.main([str(run), one, "--explain", str(tmp_path / "a-file" / "explain")]) == 2
    assert_clean_error(capsys, "ERROR", "--explain cannot write into", "a-file/explain")
