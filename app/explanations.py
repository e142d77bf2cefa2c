"""Grad-CAM overlays for image runs: `predict.py --explain OUT_DIR` (one PNG per file) and the grid of
evaluate.py's report.md (most confident mistakes and a sample of correct predictions)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from app.errors import UserError
from data.images import load_image

logger = logging.getLogger(__name__)
EXPLANATIONS_IMAGE = "explanations.png"
GRID_MISTAKES, GRID_CORRECT = 8, 4
TILE = 160


def require_image_run(run) -> None:
    if run.modality != "image":
        raise UserError(f"--explain draws Grad-CAM heatmaps of image models; this run is a {run.modality} model. "
                        "Received: --explain with a text run. Drop --explain.")


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap in the jet colormap blended over the image (uint8 HxWx3)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def heatmaps_for(run, paths: list[str], classes, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(images as the model sees them, Grad-CAM heatmaps for `classes`)."""
    from models.gradcam import GradCam

    cam = GradCam(run.model)
    size = (run.input_size, run.input_size)
    images = np.stack([load_image(p, size, run.resize) for p in paths]) if paths else np.zeros((0, *size, 3), np.uint8)
    maps = [cam.heatmaps(images[i:i + batch_size], np.asarray(classes[i:i + batch_size]))
            for i in range(0, len(paths), batch_size)]
    return images, (np.concatenate(maps) if maps else np.zeros((0, *size)))


def _save_png(pixels: np.ndarray, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(pixels).save(temporary)
    os.replace(temporary, path)


def write_overlays(run, paths: list[str], classes, out_dir: str | Path) -> list[Path]:
    """One `<index>-<file stem>-gradcam.png` per file (the index keeps same-named files apart)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--explain needs a folder to write heatmaps into. Received: --explain {out_dir} (a file)")
    out.mkdir(parents=True, exist_ok=True)
    images, maps = heatmaps_for(run, paths, classes)
    written = []
    for i, (path, image, heatmap) in enumerate(zip(paths, images, maps)):
        target = out / f"{i:04d}-{Path(path).stem}-gradcam.png"
        _save_png(overlay(image, heatmap), target)
        written.append(target)
    logger.info("Grad-CAM overlays of %d file(s) written to %s", len(written), out)
    return written


def _tile(image: np.ndarray, caption: str) -> Image.Image:
    canvas = Image.new("RGB", (TILE, TILE + 24), "white")
    canvas.paste(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.BILINEAR), (0, 0))
    ImageDraw.Draw(canvas).text((2, TILE + 4), caption[:44], fill="black")
    return canvas


def explanation_grid(run, paths: list[str], labels, probabilities: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Grad-CAM of the predicted class for the most confident mistakes and a sample of correct
    predictions (captioned true / predicted / confidence); None when there is nothing to show."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = [i for i in np.argsort(-confidence, kind="stable") if predicted[i] != labels[i]][:GRID_MISTAKES]
    right = np.flatnonzero(predicted == labels)
    right = np.random.default_rng(seed).choice(right, min(GRID_CORRECT, len(right)), replace=False).tolist()
    chosen = list(wrong) + sorted(right)
    if not chosen:
        return None
    images, maps = heatmaps_for(run, [paths[i] for i in chosen], predicted[chosen])
    names = run.class_names
    tiles = [_tile(overlay(image, heatmap), ("WRONG " if i in wrong else "") +
                   f"{names[labels[i]]} -> {names[predicted[i]]} {confidence[i]:.2f}")
             for i, image, heatmap in zip(chosen, images, maps)]
    columns = 4
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * TILE, rows * (TILE + 24)), "white")
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % columns) * TILE, (k // columns) * (TILE + 24)))
    return np.asarray(grid)


def explanations_section(run, paths: list[str], labels, probabilities: np.ndarray, out_dir: Path) -> str:
    """report.md's Grad-CAM grid (explanations.png) and its TensorBoard image; '' for text runs."""
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
    return "\n".join(["## Where the model looked (Grad-CAM)", "",
                      f"Heatmaps of the predicted class on the backbone's last convolutional block: the most "
                      f"confident mistakes (up to {GRID_MISTAKES}, marked WRONG, true -> predicted confidence), "
                      f"then {GRID_CORRECT} correct predictions drawn at random.", "",
                      f"![Grad-CAM]({EXPLANATIONS_IMAGE})", ""])
