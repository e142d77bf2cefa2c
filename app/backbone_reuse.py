"""`--backbone RUN_DIR`: a finished run's (meta-)trained feature extractor as the backbone of a new run.

The reused backbone is the source run's raw input -> backbone features -> [meta-learned
embedding, hidden head layer] up to the input of its final head layer (`head_dense`; the
dropout in front of it is left out: it is the identity at inference and would only add noise
when the backbone is fine-tuned). It keeps the source's modality, input size and resize mode,
and its layers keep the source family's names, so `finetune` (and meta strategies on raw
inputs) unfreeze its top blocks by the family's block pattern; the source's embedding layers
come after the last block and join it. A backbone none of whose layers match the pattern is
refused for those strategies.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import keras

from app import run_dir as rd
from app.backbone_lineage import RECORDED_DIGEST, Lineage, backbone_lineage, files_digest
from app.errors import UserError
from app.model_parts import HEAD_LAYER
from app.run_integrity import open_run
from app.run_metadata import RunMetadata
from data.scan import with_article
from models.backbones import BackboneSpec, get_backbone
from models.fingerprint import weights_fingerprint

logger = logging.getLogger(__name__)
REUSED_NAME = "reused_backbone"
REUSED_WEIGHTS_PREFIX = "run:"  # `weights` of a run on a reused backbone: "run:" and its digest's first 16 digits


def is_run_dir(value: str | None) -> bool:
    """Whether --backbone names a run directory (finished or not) rather than a backbone name or a Hugging Face folder."""
    if not value:
        return False
    return rd.is_run_directory(Path(value).expanduser())


def penultimate_extractor(task_model: keras.Model) -> keras.Model:
    """Raw input -> the input of the final head layer, skipping the dropout layers right in front of it."""
    try:
        tensor = task_model.get_layer(HEAD_LAYER).input
    except ValueError:
        raise UserError(f"model.keras ({task_model.name!r}) has no {HEAD_LAYER!r} layer; was it written by train.py?") from None
    while True:
        operation = getattr(getattr(tensor, "_keras_history", None), "operation", None)
        if not isinstance(operation, keras.layers.Dropout):
            break
        tensor = operation.input
    return keras.Model(task_model.inputs, tensor, name=REUSED_NAME)


@dataclasses.dataclass
class ReusedBackbone:
    run_dir: Path
    metadata: RunMetadata
    spec: BackboneSpec  # the source family's spec, building the reused extractor instead
    size: int
    resize: str
    digest: str  # SHA-256 of the reused extractor's weights
    lineage: Lineage  # the files that trained it (the source run's and, down the chain, its sources')

    @property
    def weights(self) -> str:
        return f"{REUSED_WEIGHTS_PREFIX}{self.digest[:16]}"

    @property
    def record(self) -> dict:
        """metadata.json's `backbone_run`: where the backbone came from, and (when the whole chain could be read)
        a digest of the files that trained it, so that evaluate.py can tell a source trained again at the same
        path from the one this run reused."""
        record = {"path": str(self.run_dir.resolve()), "backbone": self.metadata.backbone,
                  "weights": self.metadata.weights, "strategy": self.metadata.strategy,
                  "weights_sha256": self.digest}
        if self.lineage.complete:
            record[RECORDED_DIGEST] = files_digest(self.lineage.hashes)
        return record


def _refuse_different(option: str, given, source_value, run_dir: Path) -> None:
    if given is not None and given != source_value:
        raise UserError(f"--backbone {run_dir} was trained with {option} {source_value}, which its reuse keeps. "
                        f"Received: {option} {given}. Leave {option} out (or pass {option} {source_value}).")


def open_backbone_run(path: str, modality: str, image_size: int | None, sequence_length: int | None,
                      resize: str, strategy: str, unfreeze_matters: bool) -> ReusedBackbone:
    """The source run, checked against the target: modality, input size, resize mode, block names."""
    try:
        run_dir, metadata, model = open_run(path)
    except UserError as error:
        raise UserError(f"--backbone {path}: {error}") from None
    source_modality = metadata.modality
    if source_modality != modality:
        raise UserError(f"--backbone {path} is {with_article(source_modality)} run but the folder holds {modality} files. "
                        f"Received: --backbone {path}. Pass {with_article(modality)} run, or {with_article(modality)} backbone name.")
    spec_in = metadata.input_spec
    if modality == "image":
        size, source_resize = int(spec_in["image_size"][0]), spec_in.get("resize", "stretch")
        _refuse_different("--image-size", image_size, size, run_dir)
        # "stretch" is also the default: only a different explicit choice can be told apart from it.
        _refuse_different("--resize", None if resize == "stretch" else resize, source_resize, run_dir)
    else:
        size, source_resize = int(spec_in["sequence_length"]), "stretch"
        _refuse_different("--sequence-length", sequence_length, size, run_dir)
    extractor = penultimate_extractor(model)
    name = metadata.backbone
    try:
        family = get_backbone(str(name))
    except Exception:  # noqa: BLE001  a family no longer available: the run still carries its weights
        family = BackboneSpec(name=str(name), modality=modality, default_size=size, feature_dim=0,
                              weights_source="a metatune run", block_pattern=r"(?!)", build_features=None)
    if unfreeze_matters and not family.blocks(extractor):
        raise UserError(f"--strategy {strategy} unfreezes the top blocks of the backbone, but no layer of --backbone "
                        f"{path} matches the {name} family's block names. Received: --backbone {path} --strategy "
                        f"{strategy}. Use --strategy linear or protonet, or a backbone name.")
    digest = weights_fingerprint(extractor)

    def build(size_: int, weights: str, pooling=None) -> keras.Model:
        return penultimate_extractor(open_run(run_dir)[2])

    spec = dataclasses.replace(family, name=str(name), default_size=size, feature_dim=int(extractor.output_shape[-1]),
                               weights_source=f"the run {run_dir}", build_features=build,
                               default_weights=f"{REUSED_WEIGHTS_PREFIX}{digest[:16]}")
    lineage = backbone_lineage({"path": str(run_dir.resolve())})
    return ReusedBackbone(run_dir, metadata, spec, size, source_resize, digest, lineage)


def check_recorded_weights(recorded: str | None, reused: ReusedBackbone, resume_dir) -> None:
    """config.json's `weights` (the reused backbone's digest when the run started) against the source run now.

    A source trained again at the same path since (or another run put there) has other weights: a resume went on
    training the head (or the embedding) it had begun on the old backbone's features over the new one's, and wrote
    a model of the two mixed, without a word. A new run from that config.json (`--config`) is whole on the new
    backbone: it is told only. Runs started before config.json recorded the digest (weights null) are not checked.
    """
    if not recorded or not recorded.startswith(REUSED_WEIGHTS_PREFIX) or recorded == reused.weights:
        return

    def changed(since: str) -> str:
        return (f"The run --backbone {reused.run_dir} changed since {since} recorded it: its weights are "
                f"{reused.weights} now, {recorded} then (it was trained again, or another run was put at that path)")

    if resume_dir is None:
        logger.warning("%s. This new run builds on its weights as they are now.", changed("the config file"))
        return
    config_file = Path(resume_dir) / rd.CONFIG_FILE
    raise UserError(f"{changed(repr(str(config_file)))}. Resuming would go on training over another backbone than "
                    f"the epochs before the interruption. Put that run back, or start a new run on it as it is now "
                    f"(python train.py --config {rd.shell_path(config_file)} --output NEW_DIR). Received: --resume "
                    f"{resume_dir}")


def warn_of_held_out_files_it_trained_on(reused: ReusedBackbone, examples) -> None:
    """The target's validation and test files that trained the reused backbone (the source run split the same
    folder otherwise: another --seed or fractions), said before training: its validation scores are optimistic on
    them, and "training never sees" the test files held them out from the head only."""
    counts = {split: sum(e.split == split and e.sha256 in reused.lineage.hashes for e in examples)
              for split in ("val", "test")}
    if not any(counts.values()):
        if not reused.lineage.complete:
            logger.warning("The files that trained --backbone %s cannot all be read (the run %s: %s): whether this "
                           "run's validation and test files trained its backbone cannot be checked.", reused.run_dir,
                           reused.lineage.broken_at, reused.lineage.problem)
        return
    # The split settings help only where test files overlap: on the source run's own folder with its own split, the
    # validation files are the source's too (they chose its epochs, and its refit trained on them), and advising its
    # --seed then told users to pass what they had passed.
    advice = ("On the source run's own folder, pass its --seed, --val-fraction and --test-fraction to keep its split."
              if counts["test"] else "Validation files that the source run never saw (a val/ folder of other files) "
              "give scores that are not optimistic.")
    logger.warning("%d validation and %d test file(s) of this run are byte-identical to files that trained its "
                   "backbone (--backbone %s, or a run down its chain): validation accuracy, early stopping, the "
                   "temperature and the unknown-class threshold are optimistic on them, and evaluate.py leaves those "
                   "test files out. %s", counts["val"], counts["test"], reused.run_dir, advice)
