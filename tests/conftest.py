"""Shared test setup: Keras backend, quiet TensorFlow, an isolated cache, tiny images."""

from __future__ import annotations

import os

# Must happen before anything imports keras / tensorflow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


# The files that take longest (minutes: every write boundary of a run killed and resumed), run
# first: with `make test`'s two workers (pytest-xdist, one file per worker at a time) a long file
# handed out last would keep one worker busy alone at the end.
LONGEST_FILES_FIRST = ("test_fault_injection.py", "test_finetune_and_resume.py", "test_multi_worker.py",
                       "test_meta_strategies.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_dir(tmp_path_factory):
    """Point METATUNE_CACHE_DIR at a temporary folder so no test touches ~/.cache."""
    cache = tmp_path_factory.mktemp("metatune-cache")
    previous = os.environ.get("METATUNE_CACHE_DIR")
    os.environ["METATUNE_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("METATUNE_CACHE_DIR", None)
    else:
        os.environ["METATUNE_CACHE_DIR"] = previous


@pytest.fixture(scope="session", autouse=True)
def few_support_finetuning_episodes():
    """Every meta run on features chooses its support fine-tuning on validation episodes (app/support_finetuning.py):
    50 episodes x 7 settings, seconds per run. Tests check what is chosen and how, not how precisely, so they use
    a few episodes and short fine-tuning; tests/app/test_support_finetuning.py sets its own."""
    from app import support_finetuning

    patch = pytest.MonkeyPatch()
    patch.setattr(support_finetuning, "CHOICE_EPISODES", 3)
    patch.setattr(support_finetuning, "STEPS", (2,))
    yield
    patch.undo()


@pytest.fixture
def make_image():
    """Return `make_image(path, mode="RGB", size=(8, 8), fmt=None, color=None) -> Path`.

    Writes a small real image with Pillow: random pixels from a seeded rng (or a
    solid `color`), in any of the modes RGB, RGBA, L, LA, P, I;16, CMYK, 1.
    `size` is (width, height) as in Pillow; `fmt` is a Pillow format name
    (default: from the file extension). Parent folders are created.
    """
    rng = np.random.default_rng(1234)

    def _make(path, mode="RGB", size=(8, 8), fmt=None, color=None, **save_kwargs) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height = size
        if color is not None:
            image = Image.new(mode, size, color)
        elif mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        elif mode == "P":
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(
                "P", palette=Image.Palette.ADAPTIVE, colors=16
            )
        elif mode == "1":
            image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).convert("1")
        else:
            bands = len(Image.new(mode, (1, 1)).getbands())
            shape = (height, width) if bands == 1 else (height, width, bands)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode) if bands == 1 else _from_bands(pixels, mode)
        image.save(path, format=fmt, **save_kwargs)
        return path

    return _make


def _from_bands(pixels: np.ndarray, mode: str) -> Image.Image:
    bands = [Image.fromarray(np.ascontiguousarray(pixels[..., i])) for i in range(pixels.shape[-1])]
    return Image.merge(mode, bands)


# Tests-only tiny backbones ("tiny_image", "tiny_text") for fast unit and CLI tests.
import tiny_backbones  # noqa: E402,F401
