"""Export the bundled Fashion-MNIST sample from Debian's `dataset-fashion-mnist` package.

    apt-get install dataset-fashion-mnist
    python data/samples/make_fashion_mnist_sample.py [--train-per-class 30] [--test-per-class 20]

Writes data/samples/fashion_mnist/{train,test}/<class>/<index>.png. Train images
come from the package's training set, test images from its t10k set, chosen per
class with a fixed seed, so the sample is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
]


def read_idx(path: Path) -> np.ndarray:
    """IDX format: big-endian magic (dtype code, ndim), dims, then raw data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def export(images, labels, per_class, folder: Path, rng) -> None:
    for label, name in enumerate(CLASS_NAMES):
        chosen = np.sort(rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False))
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for index in chosen:
            Image.fromarray(images[index], mode="L").save(target / f"{index:05d}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=30)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "fashion_mnist")
    args = parser.parse_args()
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} not found: install Debian's package with `apt-get install dataset-fashion-mnist`.")
    if args.output.exists():
        shutil.rmtree(args.output)
    rng = np.random.default_rng(args.seed)
    export(read_idx(SOURCE / "train-images-idx3-ubyte.gz"), read_idx(SOURCE / "train-labels-idx1-ubyte.gz"),
           args.train_per_class, args.output / "train", rng)
    export(read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"), read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz"),
           args.test_per_class, args.output / "test", rng)


if __name__ == "__main__":
    main()
