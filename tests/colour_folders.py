"""Tiny learnable folders for tests: noisy solid-colour PNGs, one class per colour; short sentiment texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def write_colour_folder(root: Path, per_class: int = 6, size: int = 12, colours: dict | None = None,
                        seed: int = 0) -> Path:
    """ROOT/<colour>/<i>.png for the `colours` (default: the three COLOURS; seeded noise); returns `root`."""
    rng = np.random.default_rng(seed)
    for name, colour in (colours or COLOURS).items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_pillow_colour_folder(root: Path, per_class: int) -> Path:
    """Colour folders as RGBA PNGs: a file with an alpha channel takes Pillow's decoder inside tf.numpy_function
    (data/decode_route.py), where the tests that slow or park decoding patch it."""
    write_colour_folder(root, per_class=per_class, size=8)
    for path in root.rglob("*.png"):
        Image.open(path).convert("RGBA").save(path)
    return root


def write_sentiment_folder(root: Path, seed: int = 0) -> Path:
    """ROOT/neg, ROOT/pos: 6 short .txt sentences each, three neutral words and three of the class's; returns `root`."""
    rng = np.random.default_rng(seed)
    neutral = ["the", "movie", "film", "food", "service", "was", "is", "very", "and", "it"]
    for name, words in (("neg", ["bad", "awful", "hate", "not"]), ("pos", ["good", "great", "love", "fine"])):
        (root / name).mkdir(parents=True)
        for i in range(6):
            sentence = " ".join(rng.choice(neutral, 3).tolist() + rng.choice(words, 3).tolist())
            (root / name / f"{i}.txt").write_text(sentence, encoding="utf-8")
    return root
