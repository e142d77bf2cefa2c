"""A tiny learnable image folder for crash and damage tests: noisy solid-colour PNGs, one class per colour."""

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
