"""Few-shot (episodic) evaluation of a run: `evaluate.py RUN_DIR DATA_DIR --episodes N`.

The standard protocol: N-way K-shot episodes with Q queries per class drawn from the
evaluation files of a folder (their classes may be new to the run: that is the point),
mean query accuracy over the episodes with its 95% interval 1.96 * std / sqrt(episodes),
and two baselines on the same episodes (nearest centroid and logistic regression on the
frozen pretrained features of the run's backbone), so a learner that does not beat a
plain classifier on pretrained features is seen not to.

The run's learner:
- linear / finetune runs: nearest centroid (squared Euclidean, like ProtoNet) on the
  run's penultimate embedding, the input of its final `head_dense` layer;
- meta runs (protonet, reptile, fomaml, maml): the saved meta-learner
  (`meta_learner.keras`), which adapts on each episode's support and classifies its
  query (`MetaLearner.episode_logits`), on frozen features or raw inputs as recorded
  in metadata.json["meta"]["input"]; for protonet runs, logistic regression on the
  meta-learned embedding instead where the run chose it for that shot count
  (metadata.json["meta"]["episode_learner"], app/episode_learner.py).

Support fine-tuning (the "F" of P>M>F, app/support_finetuning.py): for meta runs on cached
features, the run's learner is also scored with its embedding + a prototype-initialised head
fine-tuned on each support, at the learning rate and steps the run chose on its validation
episodes (saved in metadata.json["meta"]["support_finetuning"]). Both rows are reported;
`mean_accuracy` is the chosen one (learning rate 0 = without). `support_finetune="off"` skips it.

Inputs are computed once per file (backbone features through the feature cache that
training also uses); every episode then runs on in-memory arrays. Episode n is a pure
function of (seed, n) (data/episodes.py), so `--seed S --episodes N` replays them.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from app import run_dir as rd
from app import support_finetuning as sft
from app import tensorboard_logging as tb
from app.config import META_STRATEGIES
from app.errors import UserError
from app.escaping import markdown_code
from app.episode_learner import EPISODE_LEARNERS, learner_for
from app.evaluation import LoadedRun, choose_evaluation_set, default_eval_name, load_run, source_files
from app.report_staging import METRICS_FILE, staged_report_dir
from app.run_integrity import load_model_file, retrain_remedy
from app.features import cached_features, extract_features, feature_store_key, tokenizer_identity
from app.fewshot_baselines import BASELINES, mean_and_ci95, nearest_centroid_predict
from app.inputs import example_dataset
from app.model_parts import HEAD_LAYER, apply_chain, feature_extractor_of, layers_between
from app.progress import on_terminal
from data.atomic_write import write_atomically
from data.episodes import EpisodeSampler
from data.errors import DataError
from data.records import Example
from data.shown_text import first_few
from models.errors import ModelError
from models.fingerprint import weights_fingerprint

logger = logging.getLogger(__name__)

META_LEARNER_FILE = rd.META_LEARNER_FILE
RUN_LEARNER = "run"
FINETUNED_LEARNER = "run_support_finetuned"
SUPPORT_FINETUNE_OPTIONS = ("auto", "off")
EPISODES_FILE = "episodes.csv"
CLASS_SEPARATOR = "/"  # between an episode's classes in episodes.csv, in episode label order
# The most episodes one evaluation runs. An episode takes about 0.015 s on cached features (the run's learner and
# both baselines; logistic regression most of it), 0.02-0.05 s in general and about 0.2 s with support fine-tuning:
# 100000 episodes are half an hour to several hours, and their 95% interval (1.96 * std / sqrt(episodes)) is then
# 0.1-0.2 percentage point either side, far below any difference between learners worth measuring (600 is the usual
# protocol, 10000 a tight one). More only costs time, then memory: every episode's number and accuracies are held in
# memory and written to metrics.json and episodes.csv (--episodes 1000000000000 ended in a MemoryError).
MAX_EPISODES = 100_000
# Predictor: (support inputs, support labels, query inputs, ways) -> predicted query labels.
Predict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


# --------------------------------------------------------------------------- the pool

@dataclass
class FewShotPool:
    """The evaluation files episodes are drawn from; labels index `class_names` (the pool's own)."""

    examples: list[Example]
    class_names: list[str]
    description: str
    name_suffix: str

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([e.label for e in self.examples], dtype=np.int64)


def choose_pool(run: LoadedRun, data_dir: str | Path) -> FewShotPool:
    """The same files as classification evaluation (`choose_evaluation_set`), any classes.

    The folder's test/ split; for the run's own training folder, the files held out at
    training time (manifest); a val/ split; else every file. Unlike classification,
    classes the run never saw are welcome. Labels are remapped to the classes present.
    """
    chosen = choose_evaluation_set(run, data_dir, any_classes=True)
    known = chosen.class_names
    present = sorted({known[e.label] for e in chosen.examples})
    index = {name: i for i, name in enumerate(present)}
    examples = [replace(e, label=index[known[e.label]]) for e in chosen.examples]
    return FewShotPool(examples, present, chosen.description, chosen.name_suffix)


# ------------------------------------------------------------------ the run's models

def penultimate_model(task_model: keras.Model) -> keras.Model:
    """Raw input -> the input of the final `head_dense` layer (the run's embedding)."""
    try:
        head = task_model.get_layer(HEAD_LAYER)
    except ValueError:
        raise UserError(f"model.keras has no {HEAD_LAYER!r} layer, so its embedding is unknown. "
                        f"Received layers: {[layer.name for layer in task_model.layers]}") from None
    return keras.Model(task_model.inputs, head.input, name="penultimate")


# ------------------------------------------------------------------------ learners

@dataclass
class Learner:
    key: str  # metrics / TensorBoard name
    label: str  # what it is, for the report
    inputs: np.ndarray  # one row per pool example
    predict: Predict


def load_meta_learner(run: LoadedRun):
    """The saved MetaLearner of a meta run (safe mode: no serialized Python code)."""
    import models.layers  # noqa: F401  (registers metatune's layers)
    import models.meta  # noqa: F401  (registers the meta-learners)

    if run.modality == "text":
        import models.text_layers  # noqa: F401
    path = run.path / META_LEARNER_FILE
    if not path.is_file():
        raise UserError(f"{str(run.path)!r} is a {run.metadata.strategy} run without {META_LEARNER_FILE}, so its "
                        "meta-learner cannot be evaluated episodically (trained by an older metatune?).")
    return load_model_file(path, lambda file: keras.saving.load_model(file, safe_mode=True, compile=False),
                           retrain_remedy(run.path))


def meta_learner_predict(learner, ways: int) -> Predict:
    """Adapt on the support, classify the query: one traced `episode_logits` for the evaluation."""
    from models.meta import GradientMetaLearner

    if isinstance(learner, GradientMetaLearner) and learner.ways != ways:
        raise UserError(
            f"The run's {type(learner).__name__} meta-learner has a fixed {learner.ways}-way head, so it cannot "
            f"classify {ways}-way episodes. Received: --ways {ways}. Evaluate with --ways {learner.ways}."
        )
    step = tf.function(lambda s, y, q: learner.episode_logits(s, y, q, ways=ways))

    def predict(support, support_labels, query, episode_ways):
        logits = step(tf.convert_to_tensor(support), tf.convert_to_tensor(support_labels, tf.int32),
                      tf.convert_to_tensor(query))
        return np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)

    return predict


def raw_inputs(run: LoadedRun, examples: list[Example], batch_size: int) -> np.ndarray:
    """What model.keras takes, decoded once: uint8 images at the run's size, or UTF-8 strings."""
    dataset = example_dataset(examples, run.modality, run.input_size, batch_size, run.resize)
    batches = [keras.ops.convert_to_numpy(batch) if run.modality == "image" else batch.numpy() for batch in dataset]
    return np.concatenate(batches, axis=0)


class _Features:
    """The run's extractor features and the pretrained baseline features, each computed at most once."""

    def __init__(self, run: LoadedRun, examples: list[Example], batch_size: int):
        self.run, self.examples, self.batch_size = run, examples, batch_size
        self.extractor = feature_extractor_of(run.model)
        self.pooling = self._pooling()
        self._run_features = None

    def _pooling(self) -> str | None:
        config_path = self.run.path / rd.CONFIG_FILE
        pooling = rd.read_json(config_path).get("pooling") if config_path.is_file() else None
        return None if pooling in (None, "auto") else pooling

    def cached(self, extractor: keras.Model, weights: str) -> np.ndarray:
        run = self.run
        key = feature_store_key(extractor, run.metadata.backbone, weights, run.modality, run.input_size,
                                run.resize, self.pooling)
        return np.asarray(cached_features(extractor, self.examples, run.modality, run.input_size, self.batch_size,
                                          run.resize, key))

    @property
    def run_features(self) -> np.ndarray:
        """Output of the run's own feature extractor (for linear runs: the frozen pretrained backbone)."""
        if self._run_features is None:
            logger.info("Features of the run's feature extractor for %d files", len(self.examples))
            self._run_features = self.cached(self.extractor, str(self.run.metadata.weights))
        return self._run_features

    def baseline_features(self) -> tuple[np.ndarray, str]:
        """(features, description): frozen pretrained backbone, or the run's own when there are none."""
        from models.backbones import get_backbone

        name = self.run.metadata.backbone
        try:
            spec = get_backbone(name)
        except ModelError as error:  # a local checkpoint folder moved or deleted since training: evaluate.py
            # needs only the run directory (it stopped with a line about a --backbone it was never given)
            note = f"the run's own {name} backbone features: the backbone could not be found ({error})"
            logger.warning("Baselines use %s.", note)
            return self.run_features, note
        if spec.default_weights == "none":
            note = (f"the run's own {name} backbone features: {name} has no pretrained weights "
                    "(trained from scratch), so there are no pretrained features to compare with")
            logger.warning("Baselines use %s.", note)
            return self.run_features, note
        try:
            pretrained = spec.build_features(self.run.input_size, spec.default_weights, self.pooling)
        except ModelError as error:
            note = (f"the run's own {name} backbone features: the pretrained ({spec.default_weights}) weights "
                    f"could not be loaded ({error})")
            logger.warning("Baselines use %s.", note)
            return self.run_features, note
        description = f"frozen pretrained {name} features ({spec.default_weights} weights)"
        # A frozen-backbone run: the same features, computed once. Not for a run whose saved tokenizer reads
        # text otherwise than the backbone does today (one trained before accents were stripped as its
        # checkpoint asks): its features are not the pretrained backbone's.
        if (weights_fingerprint(pretrained) == weights_fingerprint(self.extractor)
                and tokenizer_identity(pretrained) == tokenizer_identity(self.extractor)):
            return self.run_features, description
        logger.info("Pretrained %s features for %d files", name, len(self.examples))
        return self.cached(pretrained, spec.default_weights), description


def penultimate_embeddings(run: LoadedRun, features: _Features, batch_size: int) -> np.ndarray:
    """The run's embedding of every pool example (input of head_dense), from the cached extractor features.

    The layers between extractor and head are replayed on the features; checked against
    the sub-model of model.keras on a few files (else that sub-model is run on every file).
    """
    reference_model = penultimate_model(run.model)
    layers = layers_between(run.model)
    embeddings = apply_chain(layers, features.run_features, batch_size)
    few = features.examples[:4]
    reference = extract_features(reference_model, few, run.modality, run.input_size, batch_size, run.resize)
    if embeddings.shape[1:] == reference.shape[1:] and np.allclose(embeddings[:len(few)], reference,
                                                                  rtol=1e-4, atol=1e-4):
        return embeddings
    logger.info("The head is not a plain chain of layers; computing the penultimate embedding from raw inputs.")
    return extract_features(reference_model, features.examples, run.modality, run.input_size, batch_size, run.resize)


# The source stages that leave no meta-learned embedding (app/source_stage.py), and what the prototypes sit on.
STAGE_EMBEDDINGS = {"none": "the pretrained features (the source stage kept none: no source training helped the "
                            "target)",
                    "supervised": "the supervised source stage's embedding (softmax on the source classes)"}


def run_learner(run: LoadedRun, features: _Features, ways: int, shots: int,
                batch_size: int) -> tuple[Learner, dict, keras.Model | None]:
    """The run's own few-shot learner, what the metrics say about it, and its meta-learner (None for other runs)."""
    strategy = run.metadata.strategy
    if strategy not in META_STRATEGIES:
        embeddings = penultimate_embeddings(run, features, batch_size)
        label = f"nearest centroid on the run's penultimate embedding ({strategy} run, {embeddings.shape[1]} dims)"
        return Learner(RUN_LEARNER, label, embeddings, nearest_centroid_predict), {
            "kind": "nearest_centroid_on_penultimate", "strategy": strategy, "transductive": False}, None
    learner = load_meta_learner(run)
    meta = run.metadata.meta or {}
    source = meta.get("input", "features")
    if source not in ("features", "raw"):
        raise UserError(f"metadata.json meta.input must be 'features' or 'raw'. Received: {source!r}")
    predict = meta_learner_predict(learner, ways)  # refuses a fixed-head ways mismatch before any feature pass
    if meta.get("shots") not in (None, shots):
        logger.info("The meta-learner was trained %s-shot and is evaluated %d-shot.", meta.get("shots"), shots)
    inputs = features.run_features if source == "features" else raw_inputs(run, features.examples, batch_size)
    expected = learner.embedding.input_shape[1:]
    if tuple(inputs.shape[1:]) != tuple(expected) and not any(d is None for d in expected):
        raise UserError(f"The meta-learner takes inputs of shape {tuple(expected)} but the run's {source} inputs "
                        f"have shape {tuple(inputs.shape[1:])}; metadata.json meta.input may be wrong.")
    transductive = bool(getattr(learner, "transductive", meta.get("transductive", False)))
    algorithm = meta.get("algorithm", strategy)
    episode_learner = learner_for(meta.get("episode_learner"), shots) if algorithm == "protonet" else "prototypes"
    chosen_regression = episode_learner == "logistic_regression" and not transductive
    if chosen_regression:
        # Chosen at training time on the target's validation episodes for this shot count (app/episode_learner.py).
        inputs = keras.ops.convert_to_numpy(learner.embedding.predict(inputs, verbose=0, batch_size=batch_size))
        predict = EPISODE_LEARNERS[episode_learner]
    stage = (meta.get("source_stage") or {}).get("chosen")
    # Where the source stage kept no meta-training (none: the pretrained features; supervised: a softmax-trained
    # embedding), the learner is prototypes on that embedding, not a meta-learned one: the label says which.
    kind = (f"{algorithm} learner, prototypes on {STAGE_EMBEDDINGS[stage]}" if stage in STAGE_EMBEDDINGS
            else f"{algorithm} meta-learner")
    label = (f"{kind} ({type(learner).__name__}, {learner.ways}-way trained, on {source} inputs"
             f"{', transductive BatchNorm' if transductive else ''}"
             f"{', logistic regression on its embedding, chosen at training time' if chosen_regression else ''})")
    return Learner(RUN_LEARNER, label, inputs, predict), {
        "kind": "meta_learner", "strategy": strategy, "algorithm": algorithm, "input": source,
        "trained_ways": learner.ways, "trained_shots": meta.get("shots"), "transductive": transductive,
        "source_stage": stage,
        "episode_learner": episode_learner if algorithm == "protonet" else None}, learner


def support_finetuned_learner(run: LoadedRun, meta_learner, features: _Features, ways: int, shots: int,
                              option: str) -> tuple[Learner | None, dict]:
    """The run's learner with fine-tuning on each support (app/support_finetuning.py), and what was decided.

    Shown at the setting the run chose for this shot count; where it chose no fine-tuning, at the
    best fine-tuning setting of its validation episodes, so the report still shows what F gives.
    """
    reason = "turned off (--support-finetune off)" if option == "off" else sft.unsupported_reason(run.metadata)
    choice = (run.metadata.meta or {}).get("support_finetuning")
    if reason is None and not choice:
        reason = ("the run saved no support fine-tuning choice (trained by an older metatune, or its target had too "
                  "few classes or examples for validation episodes)")
    if reason is not None:
        logger.info("No support fine-tuning: %s.", reason)
        return None, {"applied": False, "reason": reason}
    chosen, shown = _saved_finetune_settings(run, choice, shots)
    info = {"applied": chosen.enabled, "chosen": {"learning_rate": chosen.learning_rate, "steps": chosen.steps},
            "validation_scores": choice["scores"], "augmentation": choice.get("augmentation")}
    if shown is None:
        return None, {**info, "reason": "no fine-tuning setting was scored on validation episodes"}
    finetuner = sft.SupportFinetuner(meta_learner.embedding, ways)
    origin = "chosen at training time" if chosen.enabled else "best on validation episodes, not chosen"
    label = (f"the run's embedding + prototype-initialised head fine-tuned on each support "
             f"({shown.steps} Adam steps at learning rate {shown.learning_rate:g}, {origin})")
    info["shown"] = {"learning_rate": shown.learning_rate, "steps": shown.steps}
    return Learner(FINETUNED_LEARNER, label, features.run_features, finetuner.predictor(shown)), info


def _saved_finetune_settings(run: LoadedRun, choice, shots: int) -> tuple[sft.FinetuneSetting,
                                                                           sft.FinetuneSetting | None]:
    """(the setting the run chose for `shots`, the one to show) from metadata.json's meta.support_finetuning.

    A damaged entry (edited by hand, cut short) was an AttributeError or KeyError traceback after the feature pass.
    """
    try:
        chosen = sft.setting_for(choice, shots)
        if chosen is None:
            raise ValueError("no setting per shot count (by_shots)")
        if not isinstance(choice.get("scores"), dict):
            raise ValueError("no validation scores (scores)")
        return chosen, chosen if chosen.enabled else sft.best_enabled_setting(choice, shots)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{str(run.path / rd.METADATA_FILE)!r} is damaged: its meta.support_finetuning entry cannot "
                        f"be read ({type(error).__name__}: {error}), so the support fine-tuning the run chose is "
                        f"unknown. Evaluate without it (--support-finetune off). "
                        f"{rd.retrain_remedy(run.path)}") from None


# ------------------------------------------------------------------------ the loop

def run_episodes(sampler: EpisodeSampler, numbers: list[int],
                 learners: list[Learner]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-episode query accuracy of every learner, all on the same episodes, and each one's seconds per episode."""
    accuracies = {learner.key: np.zeros(len(numbers)) for learner in learners}
    seconds = {learner.key: 0.0 for learner in learners}
    # A live bar on a terminal; in a log file one line at the end instead of a line every 50 ms.
    progress = keras.utils.Progbar(len(numbers), unit_name="episode", verbose=1 if on_terminal() else 2,
                                   stateful_metrics=[f"{learner.key}_acc" for learner in learners])
    for i, number in enumerate(numbers):
        episode = sampler.episode(number)
        for learner in learners:
            start = time.perf_counter()
            predicted = learner.predict(learner.inputs[episode.support_index], episode.support_labels,
                                        learner.inputs[episode.query_index], sampler.ways)
            seconds[learner.key] += time.perf_counter() - start
            accuracies[learner.key][i] = float(np.mean(np.asarray(predicted) == episode.query_labels, axis=0))
        progress.update(i + 1, [(f"{k}_acc", float(np.mean(v[:i + 1], axis=0))) for k, v in accuracies.items()])
    return accuracies, {key: total / max(len(numbers), 1) for key, total in seconds.items()}


def _verdict(metrics: dict) -> tuple[bool, str]:
    mine, baselines = metrics["mean_accuracy"], metrics["baselines"]
    shown = ", ".join(f"{n.replace('_', ' ')} {100 * b['mean_accuracy']:.2f}%" for n, b in baselines.items())
    not_beaten = [n.replace("_", " ") for n, b in baselines.items() if mine <= b["mean_accuracy"]]
    if not_beaten:
        return False, (f"The run's learner does NOT beat both baselines: {100 * mine:.2f}% vs {shown}; "
                       f"it is not above {' or '.join(not_beaten)}.")
    best = max(baselines.values(), key=lambda b: b["mean_accuracy"])
    caveat = ("; the margin over the best baseline is within the 95% intervals, so it is not clearly significant"
              if mine - metrics["ci95"] <= best["mean_accuracy"] + best["ci95"] else "")
    return True, f"The run's learner beats both baselines: {100 * mine:.2f}% vs {shown}{caveat}."


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _run_rows(metrics: dict) -> list[str]:
    """The run's learner without and with support fine-tuning; the chosen one in bold."""
    finetuning = metrics.get("support_finetuning") or {}
    if "with" not in finetuning:
        return [f"| **run: {metrics['learner']['label']}** | **{_percent(metrics['mean_accuracy'])}** | "
                f"± {_percent(metrics['ci95'])} |"]
    rows = []
    for row, applied in (("without", False), ("with", True)):
        result, chosen = finetuning[row], finetuning["applied"] == applied
        text = [f"run, {row} support fine-tuning: {result['label']}", _percent(result["mean_accuracy"])]
        if chosen:
            text = [f"**{part} (chosen)**" if i == 0 else f"**{part}**" for i, part in enumerate(text)]
        rows.append(f"| {text[0]} | {text[1]} | ± {_percent(result['ci95'])} |")
    return rows


def render_fewshot_report(metrics: dict) -> str:
    learner = metrics["learner"]
    transductive = ("yes (query batch statistics; not comparable with inductive results)" if metrics["transductive"]
                    else "no (inductive)")
    numbers = metrics["episode_numbers"]
    lines = [
        f"# Few-shot evaluation: {metrics['ways']}-way {metrics['shots']}-shot, {metrics['queries']} queries per class",
        "",
        f"- Run: {markdown_code(metrics['run_dir'])} (strategy {learner['strategy']}, backbone {metrics['backbone']})",
        f"- Data: {markdown_code(metrics['data_dir'])} ({metrics['split']}): {len(metrics['class_names'])} classes "
        f"({len(metrics['novel_classes'])} new to the run), {metrics['num_examples']} examples",
        f"- Episodes: {metrics['episodes']} (seed {metrics['episode_seed']}, numbers {numbers[0]}..{numbers[-1]}); "
        f"replay with `--seed {metrics['episode_seed']} --episodes {metrics['episodes']}`",
        f"- Transductive BatchNorm: {transductive}",
        f"- Baseline features: {metrics['baseline_features']}",
        f"- Seconds per episode: " + ", ".join(f"{key.replace('_', ' ')} {value:.4f}"
                                               for key, value in metrics.get("seconds_per_episode", {}).items()),
        "",
        "| learner | mean accuracy | 95% CI |",
        "|---|---:|---:|",
        *_run_rows(metrics),
    ]
    for name, result in metrics["baselines"].items():
        lines.append(f"| baseline: {name.replace('_', ' ')} | {_percent(result['mean_accuracy'])} | "
                     f"± {_percent(result['ci95'])} |")
    lines += [
        "",
        f"**Verdict:** {metrics['verdict']}",
        "",
        *[f"Note: {note}\n" for note in metrics.get("notes", [])],
        "95% CI = 1.96 · std / √episodes over the per-episode query accuracies (all learners on the same "
        f"episodes; per-episode values in {EPISODES_FILE}).",
        "",
    ]
    return "\n".join(lines)


def _write_episodes_csv(path: Path, sampler: EpisodeSampler, numbers: list[int], class_names: list[str],
                        accuracies: dict[str, np.ndarray]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["episode", "classes", *accuracies])
            for i, number in enumerate(numbers):
                # "/", which no class folder's name holds: names with spaces ("golden retriever") were ambiguous.
                classes = CLASS_SEPARATOR.join(class_names[c] for c in sampler.episode(number).classes)
                writer.writerow([number, classes, *(f"{values[i]:.6f}" for values in accuracies.values())])

    write_atomically(path, write)


def _check_count(flag: str, value, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{flag} must be an integer >= {minimum}{why}. Received: {flag} {value!r}. Pass {flag} "
                        f"{minimum} or more.")
    return int(value)


def check_episode_count(episodes) -> int:
    """--episodes from 1 to MAX_EPISODES: evaluate.py checks it before reading any run, the API here the same way."""
    episodes = _check_count("--episodes", episodes, 1)
    if episodes > MAX_EPISODES:  # a huge count ended in a MemoryError or OverflowError traceback
        raise UserError(f"--episodes must be at most {MAX_EPISODES} (600 is the usual protocol, 10000 a tight "
                        f"one; {MAX_EPISODES} take from half an hour to hours). Received: --episodes "
                        f"{episodes}. Pass --episodes {MAX_EPISODES} or fewer.")
    return episodes


def _named_classes(names: list[str]) -> str:
    """Long lists of classes are cut in a note: the first few tell the user enough."""
    return first_few([repr(name) for name in names])


def known_classes_note(pool_classes: list[str], novel: list[str]) -> str | None:
    """A note when the folder holds classes the run trained (or meta-trained) on, else None. Few-shot evaluation
    measures learning new classes from a few examples; episodes of known classes were scored as such without a
    word on the console (report.md only counted "N new to the run")."""
    novel = set(novel)
    known = [name for name in pool_classes if name not in novel]
    if not known:
        return None
    share = (f"All {len(known)}" if len(known) == len(pool_classes) else f"{len(known)} of the {len(pool_classes)}")
    return (f"{share} classes of the folder are classes the run trained on ({_named_classes(known)}): episodes of "
            "them measure how well it tells known classes apart, not few-shot learning of new ones, so the result "
            "is optimistic. For the few-shot protocol, evaluate on a folder of classes the run never saw.")


def _default_name(data_dir, suffix: str, ways: int, shots: int) -> str:
    return default_eval_name(data_dir, f"{suffix}-{ways}way-{shots}shot")


def evaluate_episodes(run_path: str | Path, data_dir: str | Path, episodes: int, ways: int = 5, shots: int = 1,
                      queries: int = 15, seed: int = 0, name: str | None = None,
                      batch_size: int = 32, support_finetune: str = "auto") -> tuple[dict, Path]:
    """Few-shot evaluation of a run; writes eval/<name>/{metrics.json, report.md, episodes.csv}.

    Returns (metrics, output folder). Raises UserError / DataError with a clear
    message for bad counts or a folder with too few classes or examples.
    """
    episodes = check_episode_count(episodes)
    # The episode shape before any file is read (the sampler checks it against the folder later, in its own words).
    ways = _check_count("--ways", ways, 2, " (an episode tells at least 2 classes apart)")
    shots, queries = _check_count("--shots", shots, 1), _check_count("--queries", queries, 1)
    batch_size = _check_count("--batch-size", batch_size, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # numpy's generators: >= 0
        raise UserError(f"--seed must be a whole number >= 0. Received: --seed {seed!r}")
    if support_finetune not in SUPPORT_FINETUNE_OPTIONS:
        raise UserError(f"--support-finetune must be one of {', '.join(SUPPORT_FINETUNE_OPTIONS)}. "
                        f"Received: --support-finetune {support_finetune!r}")
    run = load_run(run_path)
    pool = choose_pool(run, data_dir)
    if not pool.examples:
        raise UserError(f"No files to evaluate in {str(data_dir)!r} ({pool.description}).")
    # The sampler checks ways / shots / queries against the pool before any expensive pass.
    try:
        sampler = EpisodeSampler(pool.labels, ways, shots, queries, seed=seed, class_names=pool.class_names)
    except DataError as error:
        raise DataError(f"Episodes are drawn from {str(data_dir)!r} ({pool.description}, {len(pool.examples)} "
                        f"files): {error}") from None
    numbers = list(range(episodes))
    logger.info("Few-shot evaluation of %s: %d episodes, %d-way %d-shot, %d queries per class, from %d files (%s)",
                run.path, episodes, ways, shots, queries, len(pool.examples), pool.description)
    # Classes of the run's --meta-data source meta-trained it: not new to it either.
    novel = sorted(set(pool.class_names) - set(run.class_names) - source_files(run.path)[1])
    known_note = known_classes_note(pool.class_names, novel)
    if known_note:  # said before the feature pass, so a wrong folder can be stopped early
        logger.warning("%s", known_note)

    features = _Features(run, pool.examples, batch_size)
    mine, learner_info, meta_learner = run_learner(run, features, ways, shots, batch_size)
    finetuned, finetune_info = support_finetuned_learner(run, meta_learner, features, ways, shots, support_finetune)
    baseline_inputs, baseline_note = features.baseline_features()
    learners = [mine] + ([finetuned] if finetuned else [])
    learners += [Learner(key, f"{key.replace('_', ' ')} on {baseline_note}", baseline_inputs, predict)
                 for key, predict in BASELINES.items()]
    accuracies, seconds = run_episodes(sampler, numbers, learners)

    # The run's chosen learner: with support fine-tuning where the run chose a learning rate above 0.
    chosen_key = FINETUNED_LEARNER if finetune_info["applied"] and finetuned else RUN_LEARNER
    mean, ci = mean_and_ci95(accuracies[chosen_key])
    finetune_info["seconds_per_episode"] = {key: seconds[key] for key in (RUN_LEARNER, FINETUNED_LEARNER)
                                            if key in seconds}
    for key, row in ((RUN_LEARNER, "without"), (FINETUNED_LEARNER, "with")):
        if key in accuracies:
            row_mean, row_ci = mean_and_ci95(accuracies[key])
            finetune_info[row] = {"mean_accuracy": row_mean, "ci95": row_ci, "label": next(
                learner.label for learner in learners if learner.key == key)}
    metrics = {
        "mode": "episodic",
        "episodes": episodes, "ways": ways, "shots": shots, "queries": queries,
        "mean_accuracy": mean, "ci95": ci,
        "learner": {"label": mine.label, **learner_info},
        "support_finetuning": finetune_info,
        "seconds_per_episode": seconds,
        "baselines": {},
        "baseline_features": baseline_note,
        "transductive": learner_info["transductive"],
        "episode_seed": int(seed),
        "episode_numbers": numbers,
        "data_dir": str(Path(data_dir).expanduser().resolve()),
        "split": pool.description,
        "class_names": pool.class_names,
        "novel_classes": novel,
        "num_examples": len(pool.examples),
        "run_dir": str(run.path),
        "backbone": run.metadata.backbone,
    }
    if finetune_info["applied"]:
        metrics["learner"]["label"] += f"; with support fine-tuning ({finetuned.label})"
    for key in BASELINES:
        b_mean, b_ci = mean_and_ci95(accuracies[key])
        metrics["baselines"][key] = {"mean_accuracy": b_mean, "ci95": b_ci}
    metrics["beats_baselines"], metrics["verdict"] = _verdict(metrics)
    metrics["notes"] = [known_note] if known_note else []
    drawn = set(sampler.eligible.tolist())
    never_drawn = [name for c, name in enumerate(pool.class_names) if c not in drawn]
    if never_drawn:  # the sampler warned on the console; the report counted them among the classes evaluated
        metrics["notes"].append(f"{len(never_drawn)} of the {len(pool.class_names)} classes have fewer than "
                                f"{shots + queries} files (shots + queries) and are in no episode: "
                                f"{_named_classes(never_drawn)}.")
    if not finetune_info["applied"] and finetune_info.get("reason"):
        metrics["notes"].append(f"No support fine-tuning: {finetune_info['reason']}.")
    if mine.predict is nearest_centroid_predict and np.array_equal(mine.inputs, baseline_inputs):
        metrics["notes"].append("The run's penultimate embedding is the baseline feature itself (a linear head on "
                                "frozen features), so its learner is the nearest-centroid baseline.")
    (logger.info if metrics["beats_baselines"] else logger.warning)("%s", metrics["verdict"])

    out_dir = run.path / "eval" / name if name else rd.default_report_dir(
        run.path / "eval", _default_name(data_dir, pool.name_suffix, ways, shots), data_dir)
    with staged_report_dir(out_dir, run.path) as staging:  # in place of out_dir only once written whole
        _write_episodes_csv(staging / EPISODES_FILE, sampler, numbers, pool.class_names, accuracies)
        metrics["tensorboard"] = str(tb.log_episode_accuracies(run.path / rd.LOGS_DIR, out_dir.name, accuracies,
                                                               {learner.key: learner.label for learner in learners}))
        rd.write_text(staging / "report.md", render_fewshot_report(metrics))
        rd.write_json(staging / METRICS_FILE, metrics)  # last: its presence means the evaluation finished
    return metrics, out_dir
