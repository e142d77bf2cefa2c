"""protonet / reptile / fomaml / maml through train.main: episodes, the classifier bundle, the saved learner."""

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from app import run_dir as rd
from app.config import TrainConfig
from app.meta_training import META_LEARNER_FILE, resolved_adapt
from models.task_model import load_task_model

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "grey": (128, 128, 128)}
EPISODES = ["--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch-size", "2", "--meta-steps", "3",
            "--meta-epochs", "2", "--inner-steps", "2", "--embedding-units", "8", "--epochs", "3", "--seed", "1"]
# tiny_image has random weights: "auto" would train it on raw inputs; these tests want the features mode.
FEATURES = ["--meta-input", "features"]


def _folder(root, colours, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def colour_folder(tmp_path):
    return _folder(tmp_path / "colours", COLOURS)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["protonet", "reptile", "fomaml", "maml"])
def test_meta_strategy_writes_a_standard_classifier_and_its_learner(colour_folder, tmp_path, strategy):
    run = tmp_path / strategy
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", strategy, "--output", str(run),
                       *EPISODES, *FEATURES]) == 0
    metadata = rd.read_json(run / rd.METADATA_FILE)
    assert metadata["strategy"] == strategy
    meta = metadata["meta"]
    assert meta["algorithm"] == strategy and meta["input"] == "features" and meta["ways"] == 3
    assert meta["batchnorm"] == ("inductive" if strategy == "protonet" else
                                 "inductive (queries normalised with the support's statistics)")
    assert meta["transductive"] is False
    # tiny_image has no pretrained weights: Reptile and FOMAML adapt every layer by default, MAML the head.
    assert meta["adapt"] == {"protonet": None, "maml": "head"}.get(strategy, "all")
    history = rd.read_json(run / rd.HISTORY_FILE)
    names = [p["name"] for p in history["phases"]]
    assert names == (["meta"] if strategy == "protonet" else ["meta", "head"])
    # The final classifier uses train + validation files; the head for as many epochs as early stopping chose.
    refit = metadata["refit"]
    assert refit["applied"] is True
    if strategy != "protonet":
        head_epochs = [e for e in history["epochs"] if e["phase"] == "head"]
        assert 1 <= refit["epochs"]["head"] <= len(head_epochs)
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, len(history["epochs"]) + 1))
    model = load_task_model(str(run / rd.MODEL_FILE))
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probabilities.shape == (2, 4) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    import models.meta  # noqa: F401  (registers the learners)

    learner = keras.saving.load_model(run / META_LEARNER_FILE, safe_mode=True, compile=False)
    assert type(learner).__name__.lower() == strategy.replace("protonet", "protonet")
    if strategy != "protonet":  # the saved learner keeps the query normalisation it was trained with
        assert learner.query_statistics == "support"
    assert evaluate.main([str(run), str(colour_folder), "--name", "check"]) == 0
    assert not (run / "checkpoints").exists() and not (run / rd.INCOMPLETE_MARKER).exists()


@pytest.mark.slow
def test_protonet_head_is_the_prototypes_of_the_train_and_validation_files(colour_folder, tmp_path, monkeypatch):
    from app import support_finetuning

    seen, choose = [], support_finetuning.choose_support_finetuning
    monkeypatch.setattr(support_finetuning, "choose_support_finetuning", lambda embedding, inputs, labels, *args: (
        seen.append(len(inputs)) or choose(embedding, inputs, labels, *args)))
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run),
                       "--target-head", "prototypes", *EPISODES, *FEATURES]) == 0
    model = load_task_model(str(run / rd.MODEL_FILE))
    manifest = rd.read_json(run / rd.MANIFEST_FILE)
    # The refit: the final prototypes are those of every labelled training file, train + validation, never test.
    train_files = [(f["path"], manifest["class_names"].index(f["label"])) for f in manifest["files"]
                   if f["split"] in ("train", "val")]
    from data.images import load_image

    pixels = np.stack([load_image(str(colour_folder / p), (32, 32)) for p, _ in train_files])
    labels = np.asarray([y for _, y in train_files])
    embed = keras.Model(model.inputs, model.get_layer("head_dense").input)
    embeddings = embed.predict(pixels, verbose=0)
    prototypes = np.stack([embeddings[labels == c].mean(axis=0) for c in range(4)])
    distances = ((embeddings[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(model.predict(pixels, verbose=0).argmax(axis=1), distances.argmin(axis=1))
    # Exactly: the head's kernel is 2 * prototype, its bias -|prototype|^2.
    kernel, bias = model.get_layer("head_dense").get_weights()
    np.testing.assert_allclose(kernel.T / 2, prototypes, rtol=1e-4, atol=1e-5)
    refit = rd.read_json(run / rd.METADATA_FILE)["refit"]
    assert refit["applied"] is True and refit["num_files"] == len(train_files)
    # Support fine-tuning (app/support_finetuning.py) is chosen on the same train + validation files, never test.
    assert seen == [len(train_files)]
    choice = rd.read_json(run / rd.METADATA_FILE)["meta"]["support_finetuning"]
    assert choice["from"] == "episodes of the target's train + validation files"
    for shots, chosen in choice["by_shots"].items():
        assert set(choice["scores"][shots]) == set(choice["grid"]) and chosen in choice["grid"].values()
        setting = support_finetuning.setting_for(choice, int(shots))
        assert (setting.learning_rate, setting.steps) == (chosen["learning_rate"], chosen["steps"])


@pytest.mark.parametrize("strategy, weights, adapt, resolved", [
    ("reptile", "imagenet", "auto", "all"), ("reptile", "none", "auto", "all"),
    ("fomaml", "none", "auto", "all"), ("maml", "none", "auto", "head"),
    ("fomaml", "imagenet", "auto", "head"), ("maml", "imagenet", "auto", "head"),
    ("fomaml", "none", "head", "head"), ("maml", "imagenet", "all", "all"), ("fomaml", "none", "2", 2)])
def test_adapt_auto_is_every_layer_for_fomaml_from_scratch_and_the_head_for_maml(strategy, weights, adapt, resolved):
    config = TrainConfig(data_dir="unused", strategy=strategy, adapt=adapt)
    assert resolved_adapt(config, weights) == resolved


def test_adapt_beyond_the_embeddings_layers_says_every_layer_adapts(caplog):
    """--adapt 5 on an embedding of 2 layers with weights adapted them all without a word."""
    import keras

    from app.meta_training import _build_learner

    embedding = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(3)])
    config = TrainConfig(data_dir="unused", strategy="fomaml", adapt="5", ways=2)
    with caplog.at_level("WARNING", logger="app.meta_training"):
        learner, _ = _build_learner(config, embedding, (6,), "none")
    assert len(learner.adapted_layers) == 3  # both Dense layers and the head
    assert "--adapt 5: the embedding has 2 layers with weights, so every one of them adapts" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="app.meta_training"):
        _build_learner(TrainConfig(data_dir="unused", strategy="fomaml", adapt="2", ways=2), embedding, (6,), "none")
    assert "--adapt" not in caplog.text


@pytest.mark.slow
def test_raw_mode_trains_conv4_from_scratch(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "conv4", "--image-size", "16", "--strategy", "protonet",
                       "--output", str(run), *EPISODES]) == 0
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    assert meta["input"] == "raw"


def test_meta_data_folder_must_not_share_classes(colour_folder, tmp_path, capsys):
    meta = _folder(tmp_path / "meta", {"Red": (200, 0, 0), "cyan": (0, 200, 200), "pink": (250, 150, 150)})
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    assert "'Red' (target: 'red')" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or (tmp_path / "run" / rd.INCOMPLETE_MARKER).exists()


@pytest.mark.slow
def test_meta_data_folder_and_init_from_an_earlier_run(colour_folder, tmp_path, capsys):
    meta = _folder(tmp_path / "meta", {f"c{i}": (40 * i, 255 - 40 * i, 90) for i in range(6)}, per_class=8, seed=3)
    first = tmp_path / "first"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--meta-data",
                       str(meta), "--output", str(first), *EPISODES, *FEATURES]) == 0
    assert str(meta) in rd.read_json(first / rd.METADATA_FILE)["meta"]["episodes_from"]
    # The meta-data folder's files and class-disjoint split are recorded, like the target's manifest.
    meta_manifest = rd.read_json(first / "meta_manifest.json")
    assert len(meta_manifest["files"]) == 6 * 8 and all(len(f["sha256"]) == 64 for f in meta_manifest["files"])
    splits = meta_manifest["class_splits"]
    assert set(splits) == {f"c{i}" for i in range(6)} and set(splits.values()) == {"meta_train", "meta_val"}
    assert all(f["split"] == splits[f["label"]] for f in meta_manifest["files"])
    # Few-shot evaluation never scores the source's files, nor calls its classes new to the run: they were
    # scored as novel classes, on the very files that meta-trained the run.
    assert evaluate.main([str(first), str(meta), "--episodes", "3", "--ways", "3", "--shots", "1", "--queries",
                          "1"]) == 2
    mixed = _folder(tmp_path / "mixed", {"c0": (0, 255, 90), "new": (250, 250, 10), "other": (10, 10, 10)},
                    per_class=4, seed=9)
    for source_file in sorted((meta / "c1").iterdir())[:3]:
        shutil.copy(source_file, mixed / "c0" / f"copied_{source_file.name}")
    assert evaluate.main([str(first), str(mixed), "--episodes", "3", "--ways", "3", "--shots", "1", "--queries",
                          "1", "--support-finetune", "off", "--name", "mixed"]) == 0
    metrics = rd.read_json(first / "eval" / "mixed" / "metrics.json")
    assert metrics["novel_classes"] == ["new", "other"] and metrics["num_examples"] == 12
    assert "without 3 file(s) byte-identical to the run's training or validation (or --meta-data source) files" \
        in metrics["split"]
    # Without meta_manifest.json the source's files cannot be left out: refused, not scored as new classes.
    lost = Path(shutil.copytree(first, tmp_path / "lost", ignore=shutil.ignore_patterns("eval", "logs")))
    (lost / "meta_manifest.json").unlink()
    assert evaluate.main([str(lost), str(meta), "--episodes", "3", "--ways", "3", "--shots", "1", "--queries",
                          "1"]) == 2
    err = capsys.readouterr().err
    assert f"{str(lost / 'meta_manifest.json')!r} is missing, but the run meta-trained on --meta-data {meta}" in err
    assert "Traceback" not in err and not (lost / "eval").exists()
    assert evaluate.main([str(lost), str(colour_folder)]) == 2  # classification evaluation leaves them out the same way
    assert "is missing, but the run meta-trained on --meta-data" in capsys.readouterr().err
    second = tmp_path / "second"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--init", str(first),
                       "--output", str(second), *EPISODES, *FEATURES]) == 0
    bad = tmp_path / "bad"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "reptile", "--init", str(first),
                       "--output", str(bad), *EPISODES, *FEATURES]) == 2
    # Refused before the run directory exists (they left an INCOMPLETE one, after the feature pass), and never
    # ignored (a transfer strategy took --init without a word).
    assert f"--init {first} is a fomaml run; this run is reptile" in capsys.readouterr().err
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--init",
                       str(tmp_path / "typo"), "--output", str(bad), *EPISODES, *FEATURES]) == 2
    assert f"--init {tmp_path / 'typo'}: Run directory not found" in capsys.readouterr().err
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "linear", "--init", str(first),
                       "--output", str(bad), "--epochs", "1"]) == 2
    assert "init applies to the meta strategies" in capsys.readouterr().err
    damaged = Path(shutil.copytree(first, tmp_path / "damaged"))  # a truncated learner was a traceback
    (damaged / META_LEARNER_FILE).write_bytes((first / META_LEARNER_FILE).read_bytes()[:3000])
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--init",
                       str(damaged), "--output", str(bad), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert f"{str(damaged / META_LEARNER_FILE)!r} is unreadable" in err and "Traceback" not in err
    assert not bad.exists()


def test_source_copies_of_target_files_are_left_out_and_init_needs_an_embedding(colour_folder, tmp_path, capsys):
    """Source files byte-identical to target files are left out of the source. And a --meta-data protonet run whose
    source stage kept `none` saves an identity embedding: --init from it failed on the weights' shapes ("backbone,
    embedding_units or ways differ") after the run directory was made."""
    meta = _folder(tmp_path / "meta", {f"c{i}": (40 * i, 255 - 40 * i, 90) for i in range(4)}, per_class=5, seed=3)
    # Copies of target files under a source class (the class check passes) are left out of the source: they were
    # meta-trained on, test files included.
    for copied in sorted(colour_folder.glob("*/*.png"))[:12:4]:
        shutil.copy(copied, meta / "c0" / f"copy_{copied.parent.name}_{copied.name}")
    shutil.copytree(colour_folder / "red", meta / "crimson")  # a class of nothing but copies: no source class at all
    first = tmp_path / "first"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--source-stage", "none", "--output", str(first), *EPISODES, *FEATURES]) == 0
    err = capsys.readouterr().err
    assert "15 file(s) of --meta-data" in err and "class(es) 'crimson' hold only copies of target files" in err
    manifest = rd.read_json(first / "meta_manifest.json")
    assert {f["path"] for f in manifest["files"]} == {f"c{i}/{n}.png" for i in range(4) for n in range(5)}
    assert manifest["class_names"] == ["c0", "c1", "c2", "c3"]  # (it counted as a class with no file)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--init",
                       str(first), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert f"--init {first} has no meta-learned embedding to start from (its source stage kept 'none'" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def _many_classes(root, n, per_class, seed=0):
    """n distinguishable colour classes: hue around the colour wheel, brightness alternating."""
    import colorsys

    colours = {}
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb(i / n, 0.9, 0.9 if i % 2 else 0.6)
        colours[f"k{i:02d}"] = (int(255 * r), int(255 * g), int(255 * b))
    return _folder(root, colours, per_class=per_class, seed=seed)


def test_classic_layout_meta_trains_by_default_with_class_disjoint_validation(tmp_path, capsys):
    """Many classes of few files (Omniglot's shape): no flags beyond the strategy, queries fitted to the
    classes, meta-validation classes held out whole, the test split in no pool, one INFO line."""
    folder = _many_classes(tmp_path / "classic", 12, per_class=7)  # 5 train + 1 val + 1 test files a class
    run = tmp_path / "run"
    args = [str(folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run), "--ways", "3",
            "--shots", "2", "--meta-batch-size", "2", "--meta-steps", "2", "--meta-epochs", "1",
            "--embedding-units", "8", *FEATURES]
    assert train.main(args) == 0  # default --queries 10: more than any class holds
    meta = rd.read_json(run / rd.METADATA_FILE)["meta"]
    assert meta["pools"] == "class-disjoint"
    held = set(meta["meta_val_classes"])
    assert len(held) == 3  # ways; 20% of 12 would be fewer
    assert meta["train_episodes"] == {"ways": 3, "shots": 2, "queries": 3}  # 2 shots + 3 queries = 5 files
    assert meta["queries"] == 3 and meta["val_episodes"]["ways"] == 3
    lines = [line for line in capsys.readouterr().err.splitlines() if "meta-training episodes from" in line]
    assert len(lines) == 1 and "class-disjoint meta-validation classes" in lines[0] and "fitted" in lines[0]


def test_classic_layout_pools_never_hold_test_files_and_validation_classes_are_never_meta_trained(tmp_path):
    from app.config import TrainConfig
    from app.meta_pools import build_meta_pools
    from app.training import check_data

    folder = _many_classes(tmp_path / "classic", 16, per_class=6)
    config = TrainConfig(data_dir=str(folder), strategy="protonet", ways=4, shots=1)
    scan, examples, _ = check_data(config)
    train_files = [e for e in examples if e.split == "train"]
    val_files = [e for e in examples if e.split == "val"]
    pools = build_meta_pools(config, scan, train_files, val_files)
    names = scan.class_names
    assert {names[e.label] for e in pools.train}.isdisjoint({names[e.label] for e in pools.val})
    assert all(e.split == "train" for e in pools.train) and all(e.split in ("train", "val") for e in pools.val)
    assert len({names[e.label] for e in pools.val}) == 4
    # A folder of few classes keeps the within-class pools: the target's train and validation splits.
    few = build_meta_pools(TrainConfig(data_dir=str(folder), strategy="protonet", ways=5, shots=1), scan,
                           train_files, val_files)
    assert few.train == train_files and few.val == val_files and few.summary["pools"] == "within-class"


def _run_with_source(target, tmp_path, classes: int, per_class: int):
    """A protonet run meta-trained on a source of `classes` colour classes; its run directory and meta metadata."""
    step = 200 // classes
    meta = _folder(tmp_path / "meta", {f"c{i}": (step * i, 255 - step * i, 90) for i in range(classes)},
                   per_class=per_class, seed=3)
    run = tmp_path / "run"
    assert train.main([str(target), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(run), *EPISODES, *FEATURES]) == 0
    return run, rd.read_json(run / rd.METADATA_FILE)["meta"]


@pytest.mark.slow
def test_a_small_source_validates_with_fewer_ways(colour_folder, tmp_path):
    run, info = _run_with_source(colour_folder, tmp_path, classes=5, per_class=8)
    assert info["pools"] == "class-disjoint" and info["val_episodes"]["ways"] == 2
    manifest = rd.read_json(run / "meta_manifest.json")
    assert sorted(manifest["class_splits"].values()).count("meta_val") == 2


@pytest.mark.slow
def test_a_source_too_small_to_hold_classes_out_validates_on_held_out_examples(colour_folder, tmp_path):
    run, info = _run_with_source(colour_folder, tmp_path, classes=4, per_class=10)
    assert info["pools"] == "examples" and "not class-disjoint" in info["meta_validation"]
    files = rd.read_json(run / "meta_manifest.json")["files"]
    assert {f["split"] for f in files} == {"meta_train", "meta_val"}
    assert all(any(f["label"] == c and f["split"] == "meta_train" for f in files) for c in ["c0", "c1", "c2", "c3"])


def test_a_source_that_cannot_fill_the_episodes_is_one_error(colour_folder, tmp_path, capsys):
    meta = _folder(tmp_path / "meta", {f"c{i}": (80 * i, 250 - 80 * i, 90) for i in range(3)}, per_class=2, seed=3)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert (f"--meta-data {meta}: a 3-way 2-shot episode needs 3 classes with at least 3 files each (the shots and "
            "one query); only 0 of its 3 classes have that many") in err and "Traceback" not in err
    assert "Features for" not in err and not (tmp_path / "run").exists()  # refused before any work


def test_a_source_whose_meta_training_pool_cannot_fill_an_episode_is_refused_before_any_work(colour_folder, tmp_path,
                                                                                           capsys):
    """3 files per class pass the count for 2 shots and 1 query, but a source of 3 classes for 3-way episodes holds
    out one file per class for meta-validation: it was refused only after the feature pass, an INCOMPLETE run
    left behind."""
    meta = _folder(tmp_path / "meta", {f"c{i}": (80 * i, 250 - 80 * i, 90) for i in range(3)}, per_class=3, seed=3)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert (f"--meta-data {meta}: once a fifth of the files of each class of 3 or more are held out for "
            "meta-validation, the 6 meta-training files cannot fill one episode. A 3-way 2-shot episode needs 3 "
            "classes with at least 3 files each (the shots and one query") in err and "Traceback" not in err
    assert "Features for" not in err and not (tmp_path / "run").exists()


def test_a_target_that_cannot_fill_the_episodes_is_one_error_before_any_work(colour_folder, tmp_path, capsys):
    """Without --meta-data the episodes come from the target's 4 classes: 5 ways was refused only after the feature
    pass, leaving an INCOMPLETE run directory that blocked the same --output."""
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output",
                       str(tmp_path / "run"), *EPISODES, *FEATURES, "--ways", "5"]) == 2
    err = capsys.readouterr().err
    assert ("A 5-way 2-shot episode needs 5 classes with at least 3 files each (the shots and one query; --queries "
            "is fitted down to what the classes hold); only 4 of the 4 meta-training classes have that many. There "
            "are only 4 classes") in err and "Traceback" not in err
    assert "Features for" not in err and not (tmp_path / "run").exists()


def test_a_source_the_listing_cannot_judge_is_left_to_the_checked_files(colour_folder, tmp_path, capsys):
    # 3 files per class fill a 3-way 2-shot episode only with 1 query (fitted down from 2): the early check
    # (which counts files, not their contents) lets it through, and the real pools decide.
    meta = _folder(tmp_path / "meta", {f"c{i}": (80 * i, 250 - 80 * i, 90) for i in range(6)}, per_class=3, seed=3)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(meta), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 0
    assert "fitted: --queries 2 is more than most classes hold" in capsys.readouterr().err


def test_an_embedding_too_large_for_memory_is_one_error_naming_the_sizes(colour_folder, tmp_path, monkeypatch,
                                                                        capsys):
    """--embedding-units 100000000 (a 1280 x 10^8 kernel; now above the bound, refused before any work) or a
    --meta-batch-size too large for memory was TensorFlow's ResourceExhaustedError traceback; here the allocation
    fails as it does there, for a size within the bounds that this machine's memory still cannot hold."""
    import tensorflow as tf

    from app import meta_training

    def too_large(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__X_device_/job:localhost}} OOM "
                                               "when allocating tensor with shape[8,65536] and type float on "
                                               "/job:localhost/replica:0/task:0/device:CPU:0 by allocator mklcpu")

    monkeypatch.setattr(meta_training, "dense_embedding", too_large)
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run),
                       *EPISODES, *FEATURES, "--embedding-units", "65536"]) == 2
    err = capsys.readouterr().err
    assert ("Meta-training ran out of memory (OOM when allocating tensor with shape[8,65536] and type float): "
            "the embedding") in err
    assert "Received: --embedding-units 65536, --meta-batch-size 2, --ways 3 --shots 2 --queries 2" in err
    assert "Traceback" not in err and err.count("ERROR") == 1 and (run / rd.INCOMPLETE_MARKER).exists()


def test_meta_data_of_the_other_modality_is_one_error(colour_folder, tmp_path, capsys):
    texts = tmp_path / "texts"
    for name in ("alpha", "beta", "gamma"):
        (texts / name).mkdir(parents=True)
        for i in range(4):
            (texts / name / f"{i}.txt").write_text(f"{name} text number {i}", encoding="utf-8")
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(texts), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert "holds text files but the target folder holds image files" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_missing_meta_data_folder_is_named_before_any_work(colour_folder, tmp_path, capsys):
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                       str(tmp_path / "typo"), "--output", str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    err = capsys.readouterr().err
    assert f"--meta-data {tmp_path / 'typo'}: Data folder does not exist." in err and "Traceback" not in err
    assert "Features for" not in err and not (tmp_path / "run").exists()


def test_meta_data_with_a_transfer_strategy_says_it_does_nothing(colour_folder, tmp_path, capsys):
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "linear", "--meta-data",
                       str(tmp_path / "anything"), "--output", str(tmp_path / "run"), "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "has no effect with --strategy linear" in err and "--backbone RUN_DIR" in err


def test_refit_no_keeps_the_prototypes_of_the_training_split(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--output", str(run),
                       "--refit", "no", *EPISODES, *FEATURES]) == 0
    refit = rd.read_json(run / rd.METADATA_FILE)["refit"]
    assert refit == {"applied": False, "reason": "--refit no"}


def test_maml_refuses_when_second_order_would_not_fit(colour_folder, tmp_path, monkeypatch, capsys):
    import models.meta.memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda *args, **kwargs: 1024)
    assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "maml", "--output",
                       str(tmp_path / "run"), *EPISODES, *FEATURES]) == 2
    assert "fomaml" in capsys.readouterr().err


@pytest.mark.slow
def test_meta_run_killed_mid_meta_epoch_resumes(colour_folder, tmp_path):
    """kill -9 during meta-training, then --resume: the meta phase continues from its last completed
    epoch, the head follows, the history is continuous and the run ends complete with its learner."""
    from app.checkpoints import Checkpoints
    from tests.parked_training import kill_inside_epoch_after

    run = tmp_path / "run"
    args = [str(colour_folder), "--backbone", "tiny_image", "--strategy", "fomaml", "--output", str(run),
            *EPISODES, *FEATURES, "--meta-epochs", "4", "--meta-steps", "6", "--patience", "10"]
    kill_inside_epoch_after(args, run, "meta-epoch-0001", tmp_path)
    assert (run / rd.INCOMPLETE_MARKER).exists()
    state = Checkpoints(run).latest().state
    done_before = len(state.history)
    assert done_before >= 1 and all(e["phase"] == "meta" for e in state.history)

    assert train.main(["--resume", str(run)]) == 0
    assert not (run / rd.INCOMPLETE_MARKER).exists()
    history = rd.read_json(run / rd.HISTORY_FILE)["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, len(history) + 1))
    assert history[:done_before] == state.history
    phases = [e["phase"] for e in history]
    assert phases == sorted(phases, key=["meta", "head"].index) and phases[-1] == "head"
    assert phases.count("meta") == 4  # the four meta epochs in all, none repeated
    assert rd.read_json(run / rd.METADATA_FILE)["resumed"] is True
    assert (run / META_LEARNER_FILE).is_file()
    load_task_model(str(run / rd.MODEL_FILE))


def test_resume_refuses_a_meta_data_folder_changed_since_the_run_started(colour_folder, tmp_path, monkeypatch,
                                                                          capsys):
    """The source's class-disjoint meta-validation classes depend on its classes: with one added after an
    interruption, the resume meta-trained on classes that had chosen its epochs, and rewrote meta_manifest.json
    as if it never had. Refused like a changed target folder."""
    from app import meta_training

    meta = _folder(tmp_path / "meta", {f"c{i}": (40 * i, 255 - 40 * i, 90) for i in range(6)}, per_class=6, seed=3)
    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C once the source meta-trained the run
        patch.setattr(meta_training, "target_classifier", interrupted)
        assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                           str(meta), "--source-stage", "protonet", "--output", str(run), *EPISODES,
                           *FEATURES]) == 130
    before = rd.read_json(run / "meta_manifest.json")
    _folder(meta / "added", {"c6": (250, 250, 250)}, per_class=6, seed=4)
    (meta / "added" / "c6").rename(meta / "c6")
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"The --meta-data folder {str(meta)!r} changed since {str(run)!r} started" in err and "Traceback" not in err
    assert rd.read_json(run / "meta_manifest.json") == before and (run / rd.INCOMPLETE_MARKER).exists()


def test_resume_continues_on_a_meta_data_folder_moved_with_its_files(colour_folder, tmp_path, monkeypatch, capsys):
    """The source moved elsewhere, config.json's meta_data set to its new place (as README says for data_dir): the
    same files, so the run continues, and meta_manifest.json names the new folder. It was refused as "changed
    (files added, removed or edited)", none of which had happened."""
    import json

    from app import meta_training

    meta = _folder(tmp_path / "meta", {f"c{i}": (40 * i, 255 - 40 * i, 90) for i in range(6)}, per_class=6, seed=3)
    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(meta_training, "target_classifier", interrupted)
        assert train.main([str(colour_folder), "--backbone", "tiny_image", "--strategy", "protonet", "--meta-data",
                           str(meta), "--source-stage", "protonet", "--output", str(run), *EPISODES,
                           *FEATURES]) == 130
    before = rd.read_json(run / "meta_manifest.json")
    moved = meta.rename(tmp_path / "moved_meta")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"meta_data": str(moved)}))
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    after = rd.read_json(run / "meta_manifest.json")
    assert after["root"] == str(moved) and after | {"root": before["root"]} == before
    assert not (run / rd.INCOMPLETE_MARKER).exists()
