"""The target stage's fine-tuning of a protonet run (app/target_finetuning.py): when it applies, the head it
starts from, and a text run with a source end to end (tiny_text)."""

import numpy as np
import pytest

import train
from app import run_dir as rd
from app.config import TrainConfig
from app.errors import UserError
from app.target_finetuning import written_starting_head, starting_head, target_finetune_applies
from models.meta import LOGIT_GAP
from models.task_model import load_task_model

WORDS = {"alpha": "apple apricot avocado", "beta": "banana berry brick", "gamma": "cherry cocoa crane",
         "delta": "date dune dust", "omega": "olive onion orbit", "sigma": "salt sand silk"}


def _texts(root, names, per_class, seed):
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            words = rng.choice(WORDS[name].split(), 4).tolist() + rng.choice(["the", "a", "of", "and"], 2).tolist()
            (root / name / f"{i}.txt").write_text(" ".join(words), encoding="utf-8")
    return root


def test_auto_fine_tunes_text_runs_with_a_source_only():
    text = TrainConfig(data_dir="d", strategy="protonet", meta_data="s")
    assert target_finetune_applies(text, "text", "features")[0] is True
    assert target_finetune_applies(text, "image", "features")[0] is False  # image results stay as measured
    assert target_finetune_applies(TrainConfig(data_dir="d", strategy="protonet"), "text", "features")[0] is False
    assert target_finetune_applies(text, "text", "raw")[0] is False
    assert target_finetune_applies(TrainConfig(data_dir="d", strategy="protonet", meta_data="s",
                                               target_finetune="no"), "text", "features")[0] is False
    with pytest.raises(UserError, match="--target-finetune yes needs --strategy protonet"):
        target_finetune_applies(TrainConfig(data_dir="d", strategy="reptile", target_finetune="yes"), "image",
                                "features")


def test_fine_tuning_starts_from_logistic_regression_unless_prototypes_are_asked_for_or_forced():
    auto = TrainConfig(data_dir="d", strategy="protonet", meta_data="s")
    assert starting_head(auto, 8) == "logistic_regression"  # whatever auto chose for the frozen embedding
    assert starting_head(TrainConfig(data_dir="d", strategy="protonet", meta_data="s",
                                     target_head="logistic_regression"), 8) == "logistic_regression"
    assert starting_head(TrainConfig(data_dir="d", strategy="protonet", meta_data="s", target_head="prototypes"),
                         8) == "prototypes"
    assert starting_head(auto, 101) == "prototypes"  # too many classes for logistic regression


def test_the_starting_head_ranks_as_nearest_prototype_at_a_bounded_scale():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(0, 30, (30, 6)).astype(np.float32)  # large distances: raw logits would saturate
    labels = np.arange(30) % 3
    head = written_starting_head(3, 0, embeddings, labels, "prototypes")
    kernel, bias = head.dense.get_weights()
    logits = embeddings @ kernel + bias
    prototypes = np.stack([embeddings[labels == c].mean(axis=0) for c in range(3)])
    distances = ((embeddings[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)
    assert (logits.argmax(axis=1) == distances.argmin(axis=1)).all()
    gaps = ((prototypes[:, None] - prototypes[None]) ** 2).sum(axis=-1)
    # Logit differences between classes are the distance differences divided by the temperature.
    temperature = gaps.sum() / 6 / LOGIT_GAP
    assert np.allclose(logits[:, 0] - logits[:, 1], (distances[:, 1] - distances[:, 0]) / temperature, rtol=1e-3,
                       atol=1e-3)


def _text_meta_args(tmp_path, finetune_epochs: int) -> list[str]:
    target = _texts(tmp_path / "target", ["alpha", "beta", "gamma"], per_class=8, seed=0)
    source = _texts(tmp_path / "source", ["delta", "omega", "sigma"], per_class=8, seed=1)
    return [str(target), "--backbone", "tiny_text", "--sequence-length", "16", "--strategy", "protonet",
            "--meta-data", str(source), "--meta-input", "features", "--source-stage", "none",
            "--ways", "2", "--shots", "2", "--queries", "2", "--meta-steps", "2", "--meta-epochs", "1",
            "--finetune-epochs", str(finetune_epochs), "--unfreeze", "1", "--seed", "1",  # 1 of 2 blocks: the text cut
            # A recall its few validation files can keep: at 0.95 (19 files needed) the detector sets no threshold,
            # and there would be none to carry over from the first model (app/unknown_scores.detector_threshold).
            "--reject-recall", "0.6"]


class Crash(BaseException):
    """Stands for the process dying here (nothing in metatune catches a BaseException: no clean-up runs)."""


@pytest.mark.slow  # one tiny_text run killed in each fine-tuning phase, resumed each time (about 30-40 s on 2 cores)
def test_a_run_killed_in_each_target_fine_tuning_phase_resumes_and_completes(tmp_path, monkeypatch):
    from app.checkpoints import Checkpoints

    run = tmp_path / "run"
    real = Checkpoints.save
    # With the pair loss: its training model (models/pair_loss.py) must checkpoint and resume like the plain one.
    command = _text_meta_args(tmp_path, finetune_epochs=2) + ["--pair-loss", "1", "--output", str(run)]
    for phase in ("target_finetune", "refit_target_finetune"):
        def dies_after_the_first_epoch_of_the_phase(self, state, *args, phase=phase, **kwargs):
            written = real(self, state, *args, **kwargs)
            if state.phase == phase and not state.done:
                raise Crash()  # the checkpoint of the phase's first epoch is on disk, nothing after it
            return written

        monkeypatch.setattr(Checkpoints, "save", dies_after_the_first_epoch_of_the_phase)
        with pytest.raises(Crash):
            train.main(command)
        monkeypatch.undo()
        assert (run / rd.INCOMPLETE_MARKER).exists() and Checkpoints(run).latest().state.phase == phase
        command = ["--resume", str(run)]  # the next kill falls in the resumed run
    assert train.main(command) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    history = rd.read_json(run / rd.HISTORY_FILE)
    assert [p["name"] for p in history["phases"]] == ["meta", "target_finetune", "refit_target_finetune"]
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))  # continued, nothing repeated
    counts = {p["name"]: p["epochs"] for p in history["phases"]}
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["resumed"] is True and metadata["meta"]["target_finetune"]["pair_loss"] == 1.0
    # The refit ran the epochs the first fine-tuning kept, though that model was gone when it resumed.
    assert counts["refit_target_finetune"] == metadata["refit"]["epochs"]["target_finetune"]
    assert counts["target_finetune"] == metadata["meta"]["target_finetune"]["epochs_run"]
    # The first fine-tuned model's unknown-class thresholds survived the resume inside the refit, and were used.
    assert "threshold_offset" in rd.read_json(run / "unknown.json")["selection"]
    model = load_task_model(str(run / rd.MODEL_FILE), "text")
    probabilities = model.predict(np.asarray(["apple apricot", "cherry crane"], dtype=object), verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow  # a whole tiny_text run with both fine-tuning phases (about 20-40 s on 2 cores)
def test_a_text_run_with_a_source_fine_tunes_the_backbone_on_the_target_and_refits(tmp_path):
    run = tmp_path / "run"
    assert train.main(_text_meta_args(tmp_path, finetune_epochs=1) + ["--output", str(run)]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    tuned = metadata["meta"]["target_finetune"]
    assert tuned["applied"] is True and tuned["reason"].startswith("auto")
    assert tuned["head"] == "logistic_regression"  # the fine-tuning's start, whatever the frozen head chosen
    assert tuned["pair_loss"] == 0.0  # off unless asked for (models/pair_loss.py; the resume test asks for it)
    phases = [p["name"] for p in rd.read_json(run / rd.HISTORY_FILE)["phases"]]
    assert phases == ["meta", "target_finetune", "refit_target_finetune"]
    # The refit repeats the epochs early stopping chose, on train + validation files; the test split stays out.
    refit = metadata["refit"]
    assert refit["applied"] is True and 1 <= refit["epochs"]["target_finetune"] <= tuned["epochs_run"] == 1
    # The refit retrained the embedding: the unknown-class threshold is the first fine-tuned model's, carried over.
    assert "threshold is carried over from the first model's" in rd.read_json(run / "unknown.json")["fitted_on"]
    splits = rd.read_json(run / rd.DATA_REPORT_FILE)["splits"]
    assert refit["num_files"] == sum(sum(splits[name].values()) for name in ("train", "val"))
    model = load_task_model(str(run / rd.MODEL_FILE), "text")
    probabilities = model.predict(np.asarray(["apple apricot", "cherry crane"], dtype=object), verbose=0)
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
