"""Explanations: Grad-CAM overlays for image runs, token attributions (gradient x input on the token
embeddings) for text runs. `predict.py --explain OUT_DIR` writes one PNG (image) or one Markdown file
(text) per input; evaluate.py's report.md gets the most confident mistakes and a sample of correct
predictions (an image grid, or the texts with their most important words in bold)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from app import fonts
from app.errors import UserError
from app.run_dir import LOGS_DIR, is_run_directory
from app.escaping import markdown_code, markdown_text, safe_file_stem, visible
from data.atomic_write import write_atomically, write_bytes_atomically
from data.images import load_image

logger = logging.getLogger(__name__)
EXPLANATIONS_IMAGE = "explanations.png"
GRID_MISTAKES, GRID_CORRECT = 8, 4
TEXT_CORRECT = 2  # correct predictions shown after the mistakes in report.md (texts are long)
TOP_TOKENS = 5
TILE = 160
TILE_FONT = 11  # px, DejaVu Sans (Pillow's default font has no accented letters)
TILE_CAPTION_LINES = 2  # "WRONG ankle_boot -> sneaker 0.93" wraps instead of losing its confidence
TILE_CAPTION = TILE_CAPTION_LINES * (TILE_FONT + 2) + 6


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap in the jet colormap blended over the image (uint8 HxWx3)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def heatmaps_for(run, paths: list[str], classes, batch_size: int = 16, cam=None) -> tuple[np.ndarray, np.ndarray]:
    """(images as the model sees them, Grad-CAM heatmaps for `classes`); `cam`: the run's GradCam, when the caller
    explains several groups of files."""
    from models.gradcam import GradCam

    cam = cam if cam is not None else GradCam(run.model)
    size = (run.input_size, run.input_size)
    images = np.stack([_reloaded(p, size, run.resize) for p in paths]) if paths else np.zeros((0, *size, 3), np.uint8)
    maps = [cam.heatmaps(images[i:i + batch_size], np.asarray(classes[i:i + batch_size]))
            for i in range(0, len(paths), batch_size)]
    return images, (np.concatenate(maps) if maps else np.zeros((0, *size)))


def _reloaded(path: str, size: tuple[int, int], resize: str) -> np.ndarray:
    """An image read again for its heatmap, after its prediction (read_again_error when it cannot be)."""
    try:
        return load_image(path, size, resize)
    except (OSError, Image.DecompressionBombError) as error:
        raise read_again_error(path, error) from None


def read_again_error(path: str, error: Exception) -> UserError:
    """A file --explain reads after its prediction (an image for its heatmap, a text for its attributions) that can
    no longer be read: deleted or overwritten in between (minutes, for a large folder), which was a traceback
    once every prediction had been printed."""
    reason = getattr(error, "strerror", None) or error
    return UserError(f"Could not read {path!r} again to explain it: {reason}. It changed or disappeared after it "
                     "was predicted (the lines above stand); leave the files alone while the command runs, then run "
                     "it again for the explanations.")


def _save_png(pixels: np.ndarray, path: Path) -> None:
    write_atomically(path, lambda temporary: Image.fromarray(pixels).save(temporary, format="PNG"))


def _choose(labels, probabilities: np.ndarray, mistakes: int, correct: int, seed: int) -> tuple[list[int], list[int]]:
    """(the most confident mistakes, a random sample of correct predictions), as example indices."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = [int(i) for i in np.argsort(-confidence, kind="stable") if predicted[i] != labels[i]][:mistakes]
    right = np.flatnonzero(predicted == labels)
    right = np.random.default_rng(seed).choice(right, min(correct, len(right)), replace=False).tolist()
    return wrong, sorted(int(i) for i in right)


def explain_folder(out_dir: str | Path) -> Path:
    """The --explain folder, created and checked writable (predict.py calls it before the prediction pass):
    a path under a file, or a folder that cannot be created or written to, is one ERROR line, not a
    traceback from mkdir or from the first overlay written after every file was predicted."""
    import tempfile

    if not str(out_dir).strip():  # '' wrote the overlays into the current folder, whatever it held
        raise UserError("--explain needs a folder to write explanations into. Received: --explain '' (empty). "
                        "Pass a folder, e.g. --explain explanations/")
    if str(out_dir) == "-":  # elsewhere standard output, which cannot hold a folder of files: not a folder named -
        raise UserError("--explain writes files into a folder, not to standard output. Received: --explain -. Pass a "
                        "folder, e.g. --explain explanations/ (./- for a folder named -)")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--explain needs a folder to write explanations into. Received: --explain {out_dir} (a file)")
    if is_run_directory(out):  # train.py's folder, which evaluate.py writes under eval/ only: not mixed with overlays
        raise UserError(f"--explain {out_dir} is a run directory; explanations are not written among a run's files. "
                        f"Pass a folder of their own, e.g. --explain {str(out / 'explanations')!r}")
    _refuse_replaced_run_folder(out, out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # a read-only folder refuses this
            pass
    except OSError as error:
        raise UserError(f"--explain cannot write into {str(out)!r}: {error.strerror or error}. Received: --explain "
                        f"{out_dir}. Choose a folder you can write to (it is created when missing).") from None
    return out


def refuse_input_folder(out_dir: str | Path, targets: list[str]) -> None:
    """UserError when the --explain folder is a folder being predicted or lies in one: the overlays were written
    among the inputs, so the next prediction of that folder predicted them too, and train.py on it trained on
    them as the class's files."""
    out = Path(out_dir).expanduser().resolve()
    for target in targets:
        try:
            folder = Path(target).expanduser()
            if not folder.is_dir():
                continue
            folder = folder.resolve()
        except (OSError, ValueError):  # collect_inputs reports a path it cannot read
            continue
        if out == folder or folder in out.parents:
            raise UserError(f"--explain {out_dir} lies in {target!r}, a folder being predicted: its explanation files "
                            f"would be read as inputs by the next prediction of that folder (and as training files by "
                            f"train.py). Pass a folder outside it, e.g. --explain "
                            f"{str(folder.parent / (folder.name + '-explanations'))!r}")


# A run directory's folders that its own commands replace or empty: evaluate.py swaps in RUN_DIR/eval/NAME and
# logs/eval_NAME whole, train.py --resume prunes checkpoints/. Overlays written there vanished with no word.
RUN_MANAGED_FOLDERS = ("eval", LOGS_DIR, "checkpoints")


def _refuse_replaced_run_folder(out: Path, out_dir: str | Path) -> None:
    """UserError when `out` is at or under one of a run directory's RUN_MANAGED_FOLDERS (a folder of its own
    inside the run, RUN_DIR/explanations, is fine)."""
    resolved = out.resolve()
    for run in resolved.parents:
        if is_run_directory(run):
            managed = resolved.relative_to(run).parts[0]
            if managed in RUN_MANAGED_FOLDERS:
                raise UserError(f"--explain {out_dir} lies in {str(run / managed)!r}, a folder the run's own commands "
                                f"replace (evaluate.py, train.py --resume): the explanations would be deleted with it. "
                                f"Pass a folder of their own, e.g. --explain {str(run / 'explanations')!r}")
            return


def _note_earlier_files(out: Path, written: list[Path], pattern: str, replaced: list[Path]) -> None:
    """Warn when the folder keeps explanations this call did not write (an earlier call's, of other inputs):
    they are left alone (they may be wanted), but must not be taken for this call's. And when this call replaced
    files of the same names (`replaced`: those that existed before it wrote), which were another call's."""
    earlier = sorted(set(out.glob(pattern)) - set(written))
    if earlier:
        logger.warning("%s also holds %d explanation file(s) of an earlier call (e.g. %s), left as they were; "
                       "pass an empty --explain folder to keep calls apart", out, len(earlier), earlier[0].name)
    if replaced:
        logger.warning("%s: %d explanation file(s) of an earlier call had the names of this call's and were replaced "
                       "(e.g. %s); pass an empty --explain folder to keep calls apart", out, len(replaced),
                       replaced[0].name)


def _output_stem(index: int, name: str) -> str:
    """`NNNN-<stem>`: the input's place in the call (which keeps same-named inputs apart) and its file
    stem, with control and path-hostile characters replaced (a name may hold a newline)."""
    return f"{index:04d}-{safe_file_stem(name)}"


# Files explained at a time by write_overlays: every image and its float heatmap held at once took gigabytes for a
# large folder (10,000 files at 224 px: 1.5 GB of pixels alone, their heatmaps more) after predict.py had streamed it.
OVERLAY_GROUP = 64


def write_overlays(run, paths: list[str], classes, out_dir: str | Path) -> list[Path]:
    """One `<index>-<file stem>-gradcam.png` per file (the index keeps same-named files apart)."""
    from models.gradcam import GradCam

    out = explain_folder(out_dir)
    written = [out / f"{_output_stem(i, Path(path).stem)}-gradcam.png" for i, path in enumerate(paths)]
    replaced = [target for target in written if target.exists()]
    cam = GradCam(run.model) if paths else None
    blank = []
    for start in range(0, len(paths), OVERLAY_GROUP):
        group = slice(start, start + OVERLAY_GROUP)
        images, maps = heatmaps_for(run, paths[group], classes[group], cam=cam)
        for target, image, heatmap in zip(written[group], images, maps):
            _save_png(overlay(image, heatmap), target)
            if not np.max(heatmap, initial=0.0) > 0:
                blank.append(target)
    logger.info("Grad-CAM overlays of %d file(s) written to %s", len(written), out)
    if blank:  # blue all over reads as "looked nowhere", and looks like a heatmap whose hot spot is off-screen
        logger.warning("%d of %d overlay(s) show no positive Grad-CAM evidence for the top class (blue all over, e.g. "
                       "%s): the class's gradient on the last feature map weighs against it everywhere, or is zero (a "
                       "blank or uniform image)", len(blank), len(written), blank[0].name)
    _note_earlier_files(out, written, "[0-9][0-9][0-9][0-9]*-*-gradcam.png", replaced)
    return written


def _tile(image: np.ndarray, caption: str) -> Image.Image:
    font = fonts.text_font(TILE_FONT)
    canvas = Image.new("RGB", (TILE, TILE + TILE_CAPTION), "white")
    canvas.paste(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(fonts.wrap(visible(caption), font, TILE - 4, TILE_CAPTION_LINES)):
        font.draw(draw, (2, TILE + 3 + k * (TILE_FONT + 2)), line, fill="black")
    return canvas


def explanation_grid(run, paths: list[str], labels, probabilities: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Grad-CAM of the predicted class for the most confident mistakes and a sample of correct
    predictions (captioned true / predicted / confidence); None when there is nothing to show."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong, right = _choose(labels, probabilities, GRID_MISTAKES, GRID_CORRECT, seed)
    chosen = wrong + right
    if not chosen:
        return None
    images, maps = heatmaps_for(run, [paths[i] for i in chosen], predicted[chosen])
    names = run.class_names
    fonts.report_undrawable([names[j] for i in chosen for j in (labels[i], predicted[i])], EXPLANATIONS_IMAGE)
    tiles = [_tile(overlay(image, heatmap), ("WRONG " if i in wrong else "") +
                   f"{names[labels[i]]} -> {names[predicted[i]]} {confidence[i]:.2f}")
             for i, image, heatmap in zip(chosen, images, maps)]
    columns = 4
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * TILE, rows * (TILE + TILE_CAPTION)), "white")
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % columns) * TILE, (k // columns) * (TILE + TILE_CAPTION)))
    return np.asarray(grid)


def explanations_section(run, paths: list[str], labels, probabilities: np.ndarray, out_dir: Path,
                         encodings: list[str] | None = None) -> str:
    """report.md's explanations: the Grad-CAM grid (explanations.png) and its TensorBoard image for
    image runs, the token attributions of text runs (`encodings`: the codec of each text file)."""
    if run.modality == "text":
        return text_explanations_section(run, paths, encodings or [""] * len(paths), labels, probabilities)
    if run.modality != "image":
        return ""
    try:
        grid = explanation_grid(run, paths, labels, probabilities)
    except ValueError as error:  # a backbone without a spatial feature map: nothing to draw
        logger.warning("No Grad-CAM heatmaps: %s", error)
        return ""
    if grid is None:
        return ""
    _save_png(grid, out_dir / EXPLANATIONS_IMAGE)
    import tensorflow as tf

    with tf.summary.create_file_writer(str(run.path / "logs" / f"eval_{out_dir.name}")).as_default():
        tf.summary.image("explanations/gradcam", grid[None], step=0,
                         description="Grad-CAM of the predicted class: most confident mistakes, then correct ones.")
    wrong, right = _choose(labels, probabilities, GRID_MISTAKES, GRID_CORRECT, seed=0)  # explanation_grid's
    return "\n".join(["## Where the model looked (Grad-CAM)", "",
                      f"Heatmaps of the predicted class on the backbone's last convolutional block, captioned true "
                      f"-> predicted confidence: {_shown(labels, probabilities, wrong, right)}. Red marks where the "
                      "evidence for the predicted class is strongest, blue where there is none; each heatmap is scaled "
                      "to its own maximum, so colours compare places within a tile, not tiles (a tile blue all over "
                      "had no positive evidence anywhere).", "",
                      f"![Grad-CAM]({EXPLANATIONS_IMAGE})", ""])


def _shown(labels, probabilities: np.ndarray, wrong: list[int], right: list[int]) -> str:
    """What an explanations section shows, counted: it said "then 4 correct predictions" of a grid that had none
    (a model wrong on every file), and "up to 8" mistakes left the reader to count the tiles."""
    mistakes = int(np.sum(probabilities.argmax(axis=1) != np.asarray(labels)))
    if not wrong:
        shown = "no mistakes (there were none)"
    elif len(wrong) == mistakes:
        shown = f"every mistake ({mistakes}, marked WRONG, most confident first)"
    else:
        shown = f"the {len(wrong)} most confident of the {mistakes} mistakes (marked WRONG)"
    correct = (f"{len(right)} correct prediction{'s' if len(right) != 1 else ''} drawn at random" if right
               else "no correct predictions (there were none)")
    return f"{shown}, then {correct}"


# ----------------------------------------------------------------------------------------- text

def _percent(share: float) -> str:
    return f"{share * 100:+.0f}%".replace("-", "\u2212")


def _word_shares(result) -> dict[str, tuple[float, list[int]]]:
    """Each distinct word of the text: (the sum of its occurrences' shares, their positions), in the order
    of first occurrence."""
    words: dict[str, tuple[float, list[int]]] = {}
    for i, (word, share) in enumerate(zip(result.words, result.shares())):
        total, positions = words.get(word, (0.0, []))
        words[word] = (total + share, positions + [i])
    return words


def _word_summary(word: str, share: float, positions: list[int]) -> str:
    times = f" ({len(positions)} occurrences)" if len(positions) > 1 else ""
    return f"{markdown_text(word)} {_percent(share)}{times}"


def render_attributions(result, top_k: int = TOP_TOKENS) -> list[str]:
    """Markdown lines: the text (as the model read it) as a quote, its top-k words in bold, every
    occurrence with its own signed share of the total absolute attribution; then those words listed,
    and the strongest word against the class. A word that occurs several times is one word there, with
    the sum of its occurrences' shares (a reader asks which words decided, not which positions)."""
    shares = result.shares()
    by_word = _word_shares(result)
    top = [w for w in sorted(by_word, key=lambda w: -by_word[w][0]) if by_word[w][0] > 0][:top_k]
    bold = {i for w in top for i in by_word[w][1]}
    words = [f"**{markdown_text(w)}** ({_percent(shares[i])})" if i in bold else markdown_text(w)
             for i, w in enumerate(result.words)]
    lines = ["> " + (" ".join(words) if words else "(no tokens)") + (" \u2026 (cut: the model read no further)"
                                                                      if result.truncated else ""), ""]
    listed = ", ".join(_word_summary(w, *by_word[w]) for w in top) or "none"
    lines.append(f"Top words for the class: {listed}.")
    against = min(by_word, key=lambda w: by_word[w][0], default=None)
    if against is not None and by_word[against][0] < 0:
        lines[-1] += f" Strongest against it: {_word_summary(against, *by_word[against])}."
    return lines + [""]


def text_attributions(run, texts: list[str], classes) -> list:
    from models.token_attribution import TokenAttribution

    return TokenAttribution(run.model).attribute(list(texts), np.asarray(classes))


def _read(paths: list[str], encodings: list[str]) -> list[str]:
    from data.pipeline import read_texts

    return list(read_texts(paths, encodings))


def text_explanations_section(run, paths: list[str], encodings: list[str], labels, probabilities: np.ndarray,
                              seed: int = 0) -> str:
    """report.md's token attributions: the most confident mistakes, then a few correct predictions."""
    wrong, right = _choose(labels, probabilities, GRID_MISTAKES, TEXT_CORRECT, seed)
    chosen = wrong + right
    if not chosen:
        return ""
    predicted = probabilities.argmax(axis=1)
    try:
        results = text_attributions(run, _read([paths[i] for i in chosen], [encodings[i] for i in chosen]),
                                    predicted[chosen])
    except ValueError as error:  # not a BERT-family extractor: nothing to attribute
        logger.warning("No token attributions: %s", error)
        return ""
    names = run.class_names
    lines = ["## Which words decided (token attributions)", "",
             "Gradient x input on the token embeddings, summed over the embedding dimension, for the predicted "
             "class's log-odds (log p - log(1 - p)); wordpieces merged back into words. Signed: a positive share is evidence "
             "for the predicted class, a negative one against it (shares of the total absolute attribution). "
             f"Shown: {_shown(labels, probabilities, wrong, right)}; the top {TOP_TOKENS} words for the "
             "predicted class in bold.", ""]
    for number, (i, result) in enumerate(zip(chosen, results), 1):
        verdict = "WRONG" if i in wrong else "correct"
        shown = markdown_code(f"{Path(paths[i]).parent.name}/{Path(paths[i]).name}")
        lines.append(f"**{number}. {verdict}** {shown}: true {markdown_text(names[labels[i]])}, "
                     f"predicted {markdown_text(names[predicted[i]])} ({probabilities[i, predicted[i]]:.2f})")
        lines.append("")
        lines.extend(render_attributions(result))
    return "\n".join(lines)


def text_attributor(run, out_dir: str | Path):
    """--explain's token attribution for a text run (models/token_attribution.TokenAttribution); a UserError
    where the run's predictions cannot be attributed to tokens, which predict.py asks before predicting
    anything (report.md leaves the section out instead, with a warning)."""
    from models.token_attribution import TokenAttribution

    try:
        return TokenAttribution(run.model)
    except ValueError as error:  # not a BERT-family extractor
        raise UserError(f"--explain cannot attribute this run's predictions to tokens: {error}. Received: "
                        f"--explain {out_dir} for {run.path}. Leave --explain out.") from None


def write_text_attributions(run, names: list[str], texts: list[str], probabilities: np.ndarray,
                            out_dir: str | Path, attributor=None, unknown: list | None = None) -> list[Path]:
    """One `<index>-<name>-tokens.md` per input: the attributions of its top class. `attributor`: the run's
    `text_attributor`, when the caller already built it; `unknown`: whether predict.py rejected each input as a
    class the run does not know (None: no rejection)."""
    predicted = probabilities.argmax(axis=1)
    attributor = attributor if attributor is not None else text_attributor(run, out_dir)
    results = attributor.attribute(list(texts), np.asarray(predicted))
    out = explain_folder(out_dir)
    written = [out / f"{_output_stem(i, 'text' if name.startswith('text: ') else Path(name).stem)}-tokens.md"
               for i, name in enumerate(names)]
    replaced = [target for target in written if target.exists()]
    for i, (target, name, result) in enumerate(zip(written, names, results)):
        predicted_name = run.class_names[predicted[i]]
        # A rejected input's line reads "unknown (closest: CLASS p)": "Predicted CLASS" here contradicted it.
        verdict = ("Rejected as unknown (a class the run does not know); closest class" if unknown and unknown[i]
                   else "Predicted")
        lines = [f"# {markdown_code(name)}", "",
                 f"{verdict} {markdown_text(predicted_name)} ({probabilities[i, predicted[i]]:.3f}). Token "
                 "attributions (gradient x input on the token embeddings, signed share of the total; the top "
                 f"{TOP_TOKENS} words for {markdown_text(predicted_name)} in bold):", "",
                 *render_attributions(result)]
        write_bytes_atomically(target, "\n".join(lines).encode("utf-8"))
    logger.info("Token attributions of %d input(s) written to %s", len(written), out)
    _note_earlier_files(out, written, "[0-9][0-9][0-9][0-9]*-*-tokens.md", replaced)
    return written
