"""Runs built on other runs (`--backbone RUN_DIR`, `--init RUN_DIR`) over their life, bug-bash.

Found: a source run trained again at the same path after the target started let `train.py --resume` of the target go
on over the new backbone (a head begun on the old features finished on the new ones, without a word); the same
source trained again after the target finished made evaluate.py leave out the new source's files instead of those
that trained the backbone, silently; a target run on the source's own folder with another --seed was told its test
files were never seen by training, though they had trained its backbone; `--init` from a run on a reused backbone
(or into one) with another backbone of the same width started from an embedding of another feature space; and a
`backbone_run` record without a usable path was a TypeError traceback in evaluate.py.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import train
from app import run_dir as rd
from app.backbone_lineage import RECORDED_DIGEST, Lineage, backbone_lineage, files_digest
from app.backbone_reuse import REUSED_WEIGHTS_PREFIX, check_recorded_weights, warn_of_held_out_files_it_trained_on
from app.errors import UserError
from app.evaluation import _backbone_files_and_caveat, backbone_training_files
from app.meta_training import META_LEARNER_FILE, check_init_fits
from app.config import TrainConfig
from app.source_stage import dense_embedding
from colour_folders import write_colour_folder
from error_lines import one_error_line
from models.meta import build_meta_learner

QUICK = ["--backbone", "tiny_image", "--image-size", "16", "--epochs", "1", "--refit", "no", "--batch-size", "8",
         "--exclude-label-issues", "0"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def reuse(tmp_path_factory):
    """A source run on a folder, and a target run on the same folder with another --seed over its backbone (so some
    of the target's held-out files trained its backbone); the warnings the target's training logged."""
    root = tmp_path_factory.mktemp("reuse-lifecycle")
    data = write_colour_folder(root / "data", per_class=8)
    source, target = root / "source", root / "target"
    assert train.main([str(data), *QUICK, "--seed", "1", "--output", str(source)]) == 0
    records = _Records()
    logger = logging.getLogger("app.backbone_reuse")
    logger.addHandler(records)
    try:
        assert train.main([str(data), "--backbone", str(source), "--epochs", "1", "--refit", "no", "--batch-size",
                           "8", "--exclude-label-issues", "0", "--seed", "2", "--output", str(target)]) == 0
    finally:
        logger.removeHandler(records)
    return SimpleNamespace(root=root, data=data, source=source, target=target, warnings=records.lines)


def _manifest(run: Path, hashes_by_split: dict[str, list[str]], backbone_run: dict | None = None) -> Path:
    """A run directory holding only what the lineage reads: manifest.json (and metadata.json's backbone_run)."""
    run.mkdir(parents=True)
    files = [{"path": f"c/{h}.png", "split": split, "label": "c", "sha256": h}
             for split, hashes in hashes_by_split.items() for h in hashes]
    (run / rd.MANIFEST_FILE).write_text(json.dumps({"files": files}))
    (run / rd.METADATA_FILE).write_text(json.dumps({"backbone_run": backbone_run} if backbone_run else {}))
    return run


def _run_with(record) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(backbone_run=record))


# ---------------------------------------------------------------- train.py: what the target records and says

def test_target_records_its_backbone_weights_and_the_files_that_trained_it(reuse):
    config = json.loads((reuse.target / rd.CONFIG_FILE).read_text())
    metadata = json.loads((reuse.target / rd.METADATA_FILE).read_text())
    assert config["weights"] == metadata["weights"] and config["weights"].startswith(REUSED_WEIGHTS_PREFIX)
    record = metadata["backbone_run"]
    trained = {f["sha256"] for f in json.loads((reuse.source / rd.MANIFEST_FILE).read_text())["files"]
               if f["split"] in ("train", "val")}
    assert record[RECORDED_DIGEST] == files_digest(trained)


def test_held_out_files_that_trained_the_backbone_are_said_at_training(reuse):
    """The source split the same folder with --seed 1: some of the target's val and test files trained it."""
    trained = {f["sha256"] for f in json.loads((reuse.source / rd.MANIFEST_FILE).read_text())["files"]
               if f["split"] in ("train", "val")}
    held_out = [f for f in json.loads((reuse.target / rd.MANIFEST_FILE).read_text())["files"]
                if f["split"] in ("val", "test")]
    counts = {split: sum(f["split"] == split and f["sha256"] in trained for f in held_out) for split in ("val", "test")}
    assert counts["test"] > 0
    [line] = [w for w in reuse.warnings if "byte-identical to files that trained its backbone" in w]
    assert f"{counts['val']} validation and {counts['test']} test file(s)" in line and str(reuse.source) in line


@pytest.mark.parametrize("test_overlap", [True, False])
def test_the_advice_on_held_out_overlap_fits_what_overlaps(test_overlap, caplog):
    """Only validation files overlap on the source run's own folder and split (the source's validation files chose its
    epochs): "pass its --seed, --val-fraction and --test-fraction" told the user to pass what they had passed."""
    reused = SimpleNamespace(lineage=Lineage(hashes={"a", "b"}), run_dir=Path("source_run"))
    examples = [SimpleNamespace(split="val", sha256="a"),
                SimpleNamespace(split="test", sha256="b" if test_overlap else "c")]
    with caplog.at_level(logging.WARNING):
        warn_of_held_out_files_it_trained_on(reused, examples)
    [line] = [r.getMessage() for r in caplog.records if "byte-identical" in r.getMessage()]
    assert f"1 validation and {int(test_overlap)} test file(s)" in line
    assert ("pass its --seed, --val-fraction and --test-fraction" in line) == test_overlap
    assert ("Validation files that the source run never saw" in line) == (not test_overlap)


# ---------------------------------------------------------------- train.py --resume over a changed source

def test_resume_over_a_source_trained_again_is_refused(reuse, tmp_path, capsys):
    """Stands for a source run trained again at its path while the target was stopped: config.json's weights (the
    reused backbone's digest when the target started) no longer match the source's."""
    run = tmp_path / "target"
    shutil.copytree(reuse.target, run)
    for name in (rd.MODEL_FILE, rd.METADATA_FILE):
        (run / name).unlink()
    (run / rd.INCOMPLETE_MARKER).write_text("")
    config = json.loads((run / rd.CONFIG_FILE).read_text())
    current = config["weights"]
    config |= {"output": str(run), "weights": REUSED_WEIGHTS_PREFIX + "0" * 16}
    (run / rd.CONFIG_FILE).write_text(json.dumps(config))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 2
    one_error_line(capsys.readouterr().err, f"The run --backbone {reuse.source} changed since",
                   f"weights are {current} now, {REUSED_WEIGHTS_PREFIX}{'0' * 16} then", "--resume")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before and (run / rd.INCOMPLETE_MARKER).exists()


def test_recorded_weights_check(caplog):
    reused = SimpleNamespace(weights="run:aaaaaaaaaaaaaaaa", run_dir=Path("/s"))
    for recorded in (None, "run:aaaaaaaaaaaaaaaa"):  # a run from before the record, and the same source
        check_recorded_weights(recorded, reused, "/t")
    with caplog.at_level(logging.WARNING):
        check_recorded_weights("run:bbbbbbbbbbbbbbbb", reused, None)  # --config of that run: a new run, told
    assert "builds on its weights as they are now" in caplog.text
    with pytest.raises(UserError, match="Resuming would go on training over another backbone"):
        check_recorded_weights("run:bbbbbbbbbbbbbbbb", reused, "/t")


# ---------------------------------------------------------------- evaluate.py: the files that trained the backbone

def test_a_chain_of_sources_is_followed_and_its_digest_checked(tmp_path, caplog):
    first = _manifest(tmp_path / "first", {"train": ["a"], "val": ["b"], "test": ["z"]})
    second = _manifest(tmp_path / "second", {"train": ["c"], "test": ["y"]}, {"path": str(first)})
    record = {"path": str(second), RECORDED_DIGEST: files_digest({"a", "b", "c"})}
    with caplog.at_level(logging.WARNING):
        assert backbone_training_files(_run_with(record)) == {"a", "b", "c"}
    assert not caplog.text
    # The first run trained again at its path (another split): its files are not the ones that trained the backbone.
    shutil.rmtree(first)
    _manifest(first, {"train": ["z"], "val": ["b"], "test": ["a"]})
    with caplog.at_level(logging.WARNING):
        assert backbone_training_files(_run_with(record)) == set()
    assert "has changed since this run trained" in caplog.text and str(second) in caplog.text
    # ... and the evaluation's description (metrics.json's split, report.md) says what the warning said.
    _, caveat = _backbone_files_and_caveat(_run_with(record))
    assert "could not be left out" in caveat and "changed since" in caveat and "optimistic" in caveat


def test_a_source_gone_or_a_record_without_a_path_is_a_warning_not_a_traceback(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert backbone_training_files(_run_with({"path": str(tmp_path / "gone")})) == set()
        assert backbone_training_files(_run_with({"path": 5, "weights": "run:x"})) == set()
    assert "it is gone" in caplog.text and "names no run directory" in caplog.text
    assert not backbone_lineage({"path": ["a"]}).complete
    _, caveat = _backbone_files_and_caveat(_run_with({"path": str(tmp_path / "gone")}))
    assert "could not all be left out" in caveat and "optimistic" in caveat
    assert _backbone_files_and_caveat(_run_with(None)) == (set(), None)


# ---------------------------------------------------------------- --init across reused backbones

def _meta_run(folder: Path, weights: str, backbone_run: dict | None) -> Path:
    folder.mkdir()
    learner = build_meta_learner("protonet", dense_embedding(8, 8), 3)
    learner(np.zeros((2, 8), np.float32))
    learner.save(folder / META_LEARNER_FILE)
    metadata = {"strategy": "protonet", "backbone": "tiny_image", "weights": weights, "meta": {"input": "features"}}
    (folder / rd.METADATA_FILE).write_text(json.dumps(metadata | ({"backbone_run": backbone_run} if backbone_run
                                                                  else {})))
    (folder / rd.CONFIG_FILE).write_text(json.dumps({"backbone": "tiny_image", "embedding_units": 8}))
    return folder


def test_init_from_an_embedding_over_another_backbones_features_is_refused(tmp_path):
    """Both 8-d, so the shapes matched: an embedding meta-trained over a reused backbone's features started a run
    over the pretrained backbone's (and the other way round)."""
    extractor = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    reused_run = _meta_run(tmp_path / "on_reused", "run:aaaaaaaaaaaaaaaa", {"path": "/runs/source"})
    config = TrainConfig(data_dir="d", strategy="protonet", embedding_units=8, meta_input="features",
                         init=str(reused_run))
    check_init_fits(config, extractor, "tiny_image", "run:aaaaaaaaaaaaaaaa")  # the same reused backbone
    with pytest.raises(UserError, match=r"the run /runs/source's, weights run:a+\) than this run's \(tiny_image, "
                                        r"weights imagenet\)"):
        check_init_fits(config, extractor, "tiny_image", "imagenet")
    pretrained_run = _meta_run(tmp_path / "on_pretrained", "imagenet", None)
    with pytest.raises(UserError, match="another backbone"):
        check_init_fits(TrainConfig(data_dir="d", strategy="protonet", embedding_units=8, meta_input="features",
                                    backbone="/runs/source", init=str(pretrained_run)),
                        extractor, "tiny_image", "run:aaaaaaaaaaaaaaaa")


def test_evaluate_says_in_its_report_when_the_backbones_training_files_cannot_be_left_out(reuse):
    """With the source run gone, evaluate.py warned on stderr only: metrics.json and report.md presented the score
    (which may include files the backbone trained on) as an honest one."""
    import evaluate

    moved = reuse.source.rename(reuse.root / "source-moved")
    try:
        assert evaluate.main([str(reuse.target), str(reuse.data), "--name", "source-gone"]) == 0
    finally:
        moved.rename(reuse.source)
    out = reuse.target / "eval" / "source-gone"
    split = json.loads((out / "metrics.json").read_text())["split"]
    assert "could not all be left out" in split and "optimistic" in split
    assert "could not all be left out" in (out / "report.md").read_text()
