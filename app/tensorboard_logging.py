"""Everything metatune writes for TensorBoard beyond Keras' own callback.

Tag scheme (stable; documented in the README):
  logs/train/       epoch_loss, epoch_accuracy, epoch_learning_rate   (Keras, per epoch)
                    learning_rate                                     (per optimizer step, counted across
                                                                       phases; finetune: the head's rate,
                                                                       lower blocks use lr_decay**depth of it)
                    phase                                             (per epoch: 1 head, 2 backbone top)
                    sample_inputs                                     (image, once: a training batch)
                    sample_augmented_inputs                           (image, once: finetune phase 2 batch)
  logs/validation/  epoch_loss, epoch_accuracy                        (Keras, per epoch)
                    confusion_matrix                                  (image, per epoch)
                    worst_mistakes                                    (image or text, after training)
  logs/             hparams (the run's config + final metrics), text: config, data_report,
                    projector (validation embeddings with labels; sprite for images)
  logs/eval_<name>/ fewshot/<learner>_episode_accuracy                (histogram, step 0: per-episode query
                                                                       accuracies of evaluate.py --episodes)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from app import fonts
from app.errors import UserError, tensorflow_error_summary
from app.escaping import markdown_cell, visible
from app.metrics import confusion_matrix
from data.atomic_write import write_atomically, write_bytes_atomically
from data.images import load_image

logger = logging.getLogger(__name__)

TRAIN, VALIDATION = "train", "validation"
GRID_COLUMNS = 4
GRID_TILE = 176
CAPTION_FONT = 14  # px: legible in TensorBoard at its default zoom
CAPTION_LINES = 3  # "true ankle boot / pred sneaker 0.93" wraps instead of being cut
CAPTION_HEIGHT = CAPTION_LINES * (CAPTION_FONT + 3) + 6
SPRITE_TILE = 32
MAX_PROJECTOR_POINTS = 2000
MAX_WORST = 16
DRAWN_IN = "the TensorBoard images"  # where a class name's undrawable characters are reported
MTIME_SLACK_S = 2.0  # a file system may round modification times down to the second (FAT: two)


def _writer(log_dir: Path, run: str | None = None):
    folder = Path(log_dir) / run if run else Path(log_dir)
    try:
        return tf.summary.create_file_writer(str(folder))
    except tf.errors.OpError as error:  # the folder became a file, or unwritable, after check_events_folders
        check_events_folders(folder)
        raise UserError(f"Cannot write TensorBoard events into {str(folder)!r}: "
                        f"{tensorflow_error_summary(error)}. {_EVENTS_REMEDY}") from None


_EVENTS_REMEDY = ("Make it a writable folder (move away what is there), then run the same command again (an "
                  "interrupted train.py run: python train.py --resume RUN_DIR).")


def check_events_folders(*folders: Path) -> None:
    """A UserError when one of `folders` (RUN_DIR/logs, the folders under it that metatune writes events into) is
    there but cannot take event files: a file, a broken link, a folder this user may not write. Checked before
    any work: TensorFlow's writer failed with a traceback, at the end of an evaluation or in the middle of a
    resumed training. A missing folder is fine (the writer makes it)."""
    for folder in map(Path, folders):
        if folder.is_symlink() and not folder.exists():
            problem = f"a link to {os.readlink(folder)!r}, which does not exist"
        elif folder.exists() and not folder.is_dir():
            problem = "a file, not a folder"
        elif folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            problem = "a folder this user may not write"
        else:
            continue
        raise UserError(f"TensorBoard's events go into {str(folder)!r}, which is {problem}. {_EVENTS_REMEDY}")


def current_rate(optimizer) -> float:
    """The rate the optimizer's next step will use (a schedule's value at its current iteration)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class RunTensorBoard(keras.callbacks.TensorBoard):
    """Keras' callback with three changes for runs of several phases that may be killed at any moment:

    - each epoch's events are flushed at its end; app/phases.py lists the checkpoint callback after this
      one, so an epoch that a resumed run does not train again is always in TensorBoard (tf.summary
      writers otherwise hold events for up to two minutes, which a kill -9 loses);
    - `epoch_learning_rate` is the rate the epoch's last step used (Keras reads it after that step,
      which gives the next step's: 0 at the end of a cosine schedule that no step used);
    - `learning_rate`, written at every optimizer step (schedules change it within an epoch), is the rate
      the step used, read before it, at the step's number once taken;
    - both it and `evaluation_<metric>_vs_iterations` count optimizer steps across phases (each phase
      has its own optimizer, whose count starts at 0).
    Written by hand because Keras' callback has no hook for these; the private members it uses
    (`_writers`, `_val_writer`, `_pop_writer`, `_collect_learning_rate`) are those of Keras 3.15.
    """

    def __init__(self, log_dir: Path, step_offset: int = 0):
        super().__init__(log_dir=str(log_dir))
        self.step_offset = step_offset
        self._step_rate: float | None = None

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        self._step_rate = current_rate(self.model.optimizer)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        step = self.step_offset + int(self.model.optimizer.iterations.numpy())
        with self._train_writer.as_default():
            tf.summary.scalar("learning_rate", self._step_rate, step=step)

    def _collect_learning_rate(self, logs):
        logs = super()._collect_learning_rate(logs)
        if logs and "learning_rate" in logs and self._step_rate is not None:
            logs["learning_rate"] = self._step_rate
        return logs

    def on_test_end(self, logs=None):
        optimizer = self.model.optimizer
        if optimizer is not None and hasattr(optimizer, "iterations"):
            step = self.step_offset + int(keras.ops.convert_to_numpy(optimizer.iterations))
            with self._val_writer.as_default():
                for name, value in (logs or {}).items():
                    self.summary.scalar(f"evaluation_{name}_vs_iterations", value, step=step)
        self._pop_writer()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():
            writer.flush()


def drop_events_after(log_dir: Path, until: float | None) -> int:
    """Remove from the event files under `log_dir` every event logged after `until` (a time.time(); None:
    every event), and the temporary files a rewrite killed mid-way left; returns how many events went.

    For `--resume`: what a killed run logged after the checkpoint the resume continues from (an epoch
    whose events were flushed but whose checkpoint the kill prevented, the part of an epoch a writer had
    flushed, a phase's start) is logged again by the resumed run, which trains it again. Left in place it
    showed twice at the same step: the resumed run's point and a stale one that history.json does not have. TensorBoard's own
    remedies do not fit: its Python loader (`--load_fast=false`, EventAccumulator) keeps both points
    unless a SessionLog.START event purges *every* tag from its step on, which would also purge the
    per-optimizer-step tags (`learning_rate`, on another axis) of the epochs kept; its fast loader
    ignores SessionLog and keeps the newer point per tag. Removing the stale events gives every reader
    one point per step, the one history.json holds. Only the process holding the run's lock calls this.
    """
    dropped = 0
    for path in sorted(Path(log_dir).rglob("*tfevents*")):
        try:
            dropped += _drop_stale(path, until)
        except (OSError, tf.errors.OpError) as error:  # TensorBoard's view only: never worth stopping a resume for
            logger.warning("Could not remove the events logged after the checkpoint from %s (%s): TensorBoard may "
                           "show the steps this run trains again twice.", path, error)
    return dropped


def _drop_stale(path: Path, until: float | None) -> int:
    """One file of `drop_events_after`: how many of its events went."""
    if not path.is_file():
        return 0
    if path.name.startswith(".tmp-"):  # data/atomic_write.temporary_name: TensorBoard would read it too
        path.unlink(missing_ok=True)
        return 0
    if until is not None and path.stat().st_mtime + MTIME_SLACK_S <= until:  # older files hold nothing later
        return 0
    return _drop_from_file(path, until)


def _drop_from_file(path: Path, until: float | None) -> int:
    """Rewrite one event file without its events logged after `until` (removed when none is left)."""
    records = _event_records(path)
    kept = [] if until is None else [record for record in records
                                     if tf.compat.v1.Event.FromString(record).wall_time <= until]
    if len(kept) == len(records) and records:
        return 0
    if not kept:
        path.unlink(missing_ok=True)
        return len(records)

    def write(temporary: Path) -> None:
        with tf.io.TFRecordWriter(str(temporary)) as writer:
            for record in kept:
                writer.write(record)

    write_atomically(path, write)
    return len(records) - len(kept)


def _event_records(path: Path) -> list[bytes]:
    """The serialized events of an event file, up to a truncated or damaged record (a kill mid-write leaves
    one at the end; TensorBoard stops reading there too)."""
    records = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        pass
    return records


class PhaseMarker(keras.callbacks.Callback):
    """Scalar `phase` per epoch (1 = head on cached features, 2 = backbone top unfrozen)."""

    def __init__(self, log_dir: Path, phase_number: int, description: str, resumed: bool = False):
        """`resumed`: the phase started in an earlier session, which described it (that event came before the
        phase's first checkpoint, so a resume keeps it): it is not described twice."""
        super().__init__()
        self.writer = _writer(log_dir, TRAIN)
        self.phase_number, self.description, self.resumed = phase_number, description, resumed

    def on_train_begin(self, logs=None):
        if self.resumed:
            return
        with self.writer.as_default():
            tf.summary.text("phases", f"phase {self.phase_number}: {self.description}", step=self.phase_number)

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            tf.summary.scalar("phase", self.phase_number, step=epoch,
                              description="1: head on cached features; 2: top backbone blocks unfrozen; "
                                          "3, 4: the refit's head and backbone phases")
        self.writer.flush()  # before the epoch's checkpoint (see RunTensorBoard)

    def on_train_end(self, logs=None):
        self.writer.flush()


class ConfusionMatrixPerEpoch(keras.callbacks.Callback):
    """Confusion matrix of the validation set as an image, once per epoch."""

    def __init__(self, log_dir: Path, inputs, labels, class_names: list[str]):
        super().__init__()
        self.writer = _writer(log_dir, VALIDATION)
        self.inputs, self.labels, self.class_names = inputs, np.asarray(labels), class_names

    def on_epoch_end(self, epoch, logs=None):
        predicted = self.model.predict(self.inputs, verbose=0).argmax(axis=1)
        matrix = confusion_matrix(self.labels, predicted, len(self.class_names))
        with self.writer.as_default():
            tf.summary.image("confusion_matrix", confusion_image(matrix, self.class_names)[None], step=epoch)
        self.writer.flush()  # before the epoch's checkpoint (see RunTensorBoard)

    def on_train_end(self, logs=None):
        self.writer.flush()


MAX_MATRIX_SIDE = 1800  # px of the cells: 22 px cells up to 81 classes, smaller ones beyond
MIN_NAMED_CELL = 16  # px: a cell lower than a 14 px name gets one only every k-th class
MIN_COUNTED_CELL = 20  # px: an 11 px count fits


def confusion_image(matrix, class_names: list[str]) -> np.ndarray:
    """Row-normalised confusion matrix with counts and full class names, drawn with Pillow.

    Sized to be read in TensorBoard at its default zoom: 14 px text, row names written out
    and column names written vertically (not cut to a few letters), cells of 34 px shrinking to
    22 px as the classes grow to 50. Why not the matplotlib figure of report.md: it takes ~0.5 s
    to render, which every epoch would dwarf a head epoch on cached features (milliseconds).
    Names are drawn with a font that has their characters where one is installed (one warning names
    those drawn as boxes), control characters written as escapes.
    Bounded however many classes: beyond 81 the cells shrink to keep the matrix within MAX_MATRIX_SIDE px (counts
    left out below MIN_COUNTED_CELL px, every k-th class named below MIN_NAMED_CELL px). Before, 500 classes drew
    an 11,000 px square every epoch, taking 10 s and a gigabyte of memory each time.
    """
    matrix = np.asarray(matrix)
    n = len(class_names)
    cell = max(1, min(int(np.clip(700 // max(n, 1), 22, 34)), MAX_MATRIX_SIDE // max(n, 1)))
    every = max(1, -(-MIN_NAMED_CELL // cell))
    named = range(0, n, every)
    small = fonts.pil_font(11 if cell < 30 else 13)
    fonts.report_undrawable(class_names, DRAWN_IN)
    font = fonts.text_font(14)
    names = {i: fonts.fit(visible(class_names[i]), font, 220) for i in named}
    label_width = int(max((font.getlength(name) for name in names.values()), default=0)) + 12
    top = label_width + 8  # the column names stand vertically above the cells
    legend = "rows: true class, columns: predicted (row-normalised colour, counts)"
    if every > 1:
        legend += f"; 1 class in {every} named"
    width = max(label_width + n * cell + 8, int(fonts.pil_font(13).getlength(legend)) + 8)
    height = top + n * cell + 28
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[top:top + n * cell, label_width:label_width + n * cell] = _cells(share, cell)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, name in names.items():
        half = (cell - 14) // 2 if every == 1 else 0  # a shared label starts at its class's row
        font.draw(draw, (4, top + i * cell + half), name, fill="black")
        column = Image.new("RGB", (label_width, max(cell, 16)), "white")  # drawn sideways, then turned upright
        font.draw(ImageDraw.Draw(column), (4, max(half, 0)), name, fill="black")
        image.paste(column.rotate(90, expand=True), (label_width + i * cell, top - label_width - 4))
    if cell >= MIN_COUNTED_CELL:
        for t, p in zip(*np.nonzero(matrix)):
            x0, y0 = label_width + p * cell, top + t * cell
            draw.text((x0 + cell // 2, y0 + cell // 2), str(int(matrix[t, p])), anchor="mm", font=small,
                      fill="white" if share[t, p] > 0.5 else "black")
    draw.text((4, height - 22), legend, fill="black", font=fonts.pil_font(13))
    return np.asarray(image)


def _cells(share: np.ndarray, cell: int) -> np.ndarray:
    """The matrix's cells as pixels: blue as dark as the share, a light grey outline where cells are large enough
    to have one."""
    level = (255 * (1 - share)).astype(np.uint8)
    colours = np.stack([level, level, np.full_like(level, 255)], axis=-1)
    pixels = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    if cell >= 8:  # smaller cells would be mostly outline
        pixels[::cell, :] = pixels[cell - 1::cell, :] = 220
        pixels[:, ::cell] = pixels[:, cell - 1::cell] = 220
    return pixels


def _captioned_tile(image: Image.Image, caption: str) -> Image.Image:
    font = fonts.text_font(CAPTION_FONT)
    lines = fonts.wrap(visible(caption), font, GRID_TILE - 6, CAPTION_LINES)
    canvas = Image.new("RGB", (GRID_TILE, GRID_TILE + CAPTION_HEIGHT), "white")
    canvas.paste(image.resize((GRID_TILE, GRID_TILE), Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        font.draw(draw, (3, GRID_TILE + 3 + i * (CAPTION_FONT + 3)), line, fill="black")
    return canvas


def _grid(tiles: list[Image.Image]) -> np.ndarray:
    rows = max(1, -(-len(tiles) // GRID_COLUMNS))
    width, height = GRID_TILE, GRID_TILE + CAPTION_HEIGHT
    grid = Image.new("RGB", (GRID_COLUMNS * width, rows * height), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % GRID_COLUMNS) * width, (i // GRID_COLUMNS) * height))
    return np.asarray(grid)


def image_grid(paths: list[str], captions: list[str], size: tuple[int, int], resize: str) -> np.ndarray:
    """A captioned grid (uint8 HxWx3) of up to MAX_WORST images."""
    fonts.report_undrawable(captions[:MAX_WORST], DRAWN_IN, what="caption")
    return _grid([_captioned_tile(Image.fromarray(load_image(p, size, resize)), c)
                  for p, c in zip(paths[:MAX_WORST], captions[:MAX_WORST])])


def log_sample_inputs(log_dir: Path, paths: list[str], labels: list[int], class_names: list[str],
                      size: tuple[int, int], resize: str, note: str) -> None:
    """One batch of training inputs exactly as the model sees them (after decode and resize)."""
    fonts.report_undrawable([class_names[y] for y in labels], DRAWN_IN)
    grid = image_grid(paths, [class_names[y] for y in labels], size, resize)
    with _writer(log_dir, TRAIN).as_default():
        tf.summary.image("sample_inputs", grid[None], step=0, description=note)


def log_augmented_batch(log_dir: Path, images: np.ndarray, labels: list[int], class_names: list[str]) -> None:
    """One training batch after augmentation, as the fine-tuned model receives it."""
    fonts.report_undrawable([class_names[label] for label in labels[:MAX_WORST]], DRAWN_IN)
    grid = _grid([_captioned_tile(Image.fromarray(np.asarray(image, np.uint8)), class_names[label])
                  for image, label in zip(images[:MAX_WORST], labels)])
    with _writer(log_dir, TRAIN).as_default():
        tf.summary.image("sample_augmented_inputs", grid[None], step=0,
                         description="A finetune phase-2 training batch after augmentation (flip, rotation, "
                                     "zoom, contrast).")


def log_worst_mistakes(log_dir: Path, examples, probabilities: np.ndarray, class_names: list[str],
                       modality: str, size: int, resize: str, texts: list[str] | None = None) -> int:
    """The most confident validation mistakes: an image grid (images) or a table (text)."""
    labels = np.asarray([e.label for e in examples])
    predicted = probabilities.argmax(axis=1)
    wrong = [i for i in np.argsort(-probabilities.max(axis=1)) if predicted[i] != labels[i]][:MAX_WORST]
    captions = [f"true {class_names[labels[i]]} / pred {class_names[predicted[i]]} {probabilities[i].max():.2f}"
                for i in wrong]
    with _writer(log_dir, VALIDATION).as_default():
        if not wrong:
            tf.summary.text("worst_mistakes", "No validation mistakes.", step=0)
        elif modality == "image":
            fonts.report_undrawable([class_names[j] for i in wrong for j in (labels[i], predicted[i])], DRAWN_IN)
            grid = image_grid([examples[i].path for i in wrong], captions, (size, size), resize)
            tf.summary.image("worst_mistakes", grid[None], step=0)
        else:
            rows = ["| true / predicted | text |", "|---|---|"]
            rows += [f"| {markdown_cell(c)} | {markdown_cell(excerpt((texts or [''] * len(examples))[i]))} |"
                     for c, i in zip(captions, wrong)]
            tf.summary.text("worst_mistakes", "\n".join(rows), step=0)
    return len(wrong)


EXCERPT_CHARS = 200  # of a text in a table row


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of `text` for a table row, ending with "…" when it goes on (a text cut silently read as whole)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def log_text_summaries(log_dir: Path, config: dict, data_report_text: str) -> None:
    with _writer(log_dir).as_default():
        tf.summary.text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", step=0)
        tf.summary.text("data_report", "```\n" + data_report_text + "\n```", step=0)


def _hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else str(value)


def log_hparams(log_dir: Path, config: dict, final_metrics: dict[str, float]) -> None:
    """The config as hyperparameters plus final metrics, so runs line up in the HParams tab."""
    from tensorboard.plugins.hparams import api as hp

    hparams = {key: _hparam_value(value) for key, value in config.items() if key not in ("output", "data_dir")}
    metrics = [hp.Metric("epoch_accuracy", group=VALIDATION, display_name="validation accuracy (per epoch)"),
               hp.Metric("epoch_loss", group=VALIDATION, display_name="validation loss (per epoch)")]
    metrics += [hp.Metric(f"final/{name}", display_name=name) for name in final_metrics]
    with _writer(log_dir).as_default():
        hp.hparams_config(hparams=[hp.HParam(key) for key in hparams], metrics=metrics)
        hp.hparams(hparams, trial_id=Path(config.get("output") or log_dir).name)
        for name, value in final_metrics.items():
            tf.summary.scalar(f"final/{name}", value, step=0)


def _sprite(paths: list[str], size: tuple[int, int], resize: str) -> Image.Image:
    side = int(np.ceil(np.sqrt(len(paths))))
    sprite = Image.new("RGB", (side * SPRITE_TILE, side * SPRITE_TILE), "white")
    for i, path in enumerate(paths):
        tile = Image.fromarray(load_image(path, size, resize)).resize((SPRITE_TILE, SPRITE_TILE))
        sprite.paste(tile, ((i % side) * SPRITE_TILE, (i // side) * SPRITE_TILE))
    return sprite


def write_projector(log_dir: Path, embeddings: np.ndarray, examples, class_names: list[str], modality: str,
                    size: int, resize: str) -> None:
    """Validation embeddings (the head's input) with their labels, and a sprite for images."""
    from tensorboard.plugins import projector

    count = min(len(examples), MAX_PROJECTOR_POINTS)
    embedding = tf.Variable(np.asarray(embeddings[:count], np.float32), name="embedding")
    tf.train.Checkpoint(embedding=embedding).save(str(log_dir / "embedding.ckpt"))
    # Control characters written as escapes (a tab as \\t), as labels.txt writes them: a tab in a name started another
    # column and a newline another row, so every later point took the wrong label.
    rows = "".join(f"{visible(class_names[example.label])}\t{visible(Path(example.path).name)}\n"
                   for example in examples[:count])
    write_bytes_atomically(log_dir / "metadata.tsv", ("label\tfile\n" + rows).encode("utf-8"))
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    entry.metadata_path = "metadata.tsv"
    if modality == "image":
        sprite = _sprite([e.path for e in examples[:count]], (size, size), resize)
        write_atomically(log_dir / "sprite.png", lambda temporary: sprite.save(temporary, format="PNG"))
        entry.sprite.image_path = "sprite.png"
        entry.sprite.single_image_dim.extend([SPRITE_TILE, SPRITE_TILE])
    projector.visualize_embeddings(str(log_dir), config)


def log_episode_accuracies(log_dir: Path, name: str, accuracies: dict[str, np.ndarray],
                           descriptions: dict[str, str] | None = None) -> Path:
    """Few-shot evaluation: one histogram of per-episode query accuracies per learner.

    Written to `log_dir/eval_<name>/` with tags `fewshot/<learner>_episode_accuracy`
    (learner: run, nearest_centroid, logistic_regression), step 0. Returns the folder.
    """
    folder = Path(log_dir) / f"eval_{name}"
    writer = _writer(folder)
    with writer.as_default():
        for learner, values in accuracies.items():
            tf.summary.histogram(f"fewshot/{learner}_episode_accuracy", np.asarray(values, np.float32), step=0,
                                 buckets=20, description=(descriptions or {}).get(learner))
    writer.close()
    return folder
