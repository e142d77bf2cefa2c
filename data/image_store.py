"""On-disk store of decoded, resized images (`--image-cache disk`): for folders whose decoded
images do not fit in memory, or whose files are slow to decode (large photos, the Pillow route),
every epoch after the first reads raw pixels back instead of decoding again.

A store is one standard `.npy` file (uint8, [rows, height, width, 3]) under
`<cache dir>/images/`, named by a digest of everything its pixels depend on: the files' contents
(their SHA-256 from the data doctor; path, size and modification time where a file has none),
in the order of the rows, the image size, the resize mode and the resampling of data/resize.py.
It is written once, through the same decoding as every other pipeline, to a temporary name and
renamed into place (data/atomic_write.py), so a run killed while writing leaves no store that
looks complete; such leftovers are removed by the next build. Rows are read back in order by
`tf.data.FixedLengthRecordDataset` (graph ops only, sequential reads, which suit a disk), so a
shuffled store holds its rows in an order that is already random (sorted by a digest of each
file's identity) and each epoch reshuffles them through a bounded buffer, as the in-memory cache
does. An unshuffled store keeps the caller's order (validation predictions are matched to labels
by position).

A store that cannot be written (not enough free space, a read-only cache) or read costs only
speed: one warning, and the images are decoded as without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from data.atomic_write import process_alive, write_atomically
from data.cache import cache_dir
from data.errors import DataError
from data.resize import RESAMPLING
from data.scan import shown_path  # cache paths in log lines: a non-UTF-8 folder name printed as \xNN

logger = logging.getLogger(__name__)
IMAGE_STORE_FORMAT = 1
# Free space kept beyond the store itself, so that filling the disk is not the cache's doing.
FREE_SPACE_MARGIN = 1 << 30
WRITE_BATCH = 64
READ_BUFFER_BYTES = 4 << 20


def image_store_dir() -> Path:
    return cache_dir() / "images"


def file_identity(path: str, content_key: str) -> str:
    """The content digest when the doctor computed one; else what the file system says about it."""
    if content_key:
        return content_key
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def store_key(identities: list[str], image_size: tuple[int, int], resize: str) -> str:
    identity = {"format": IMAGE_STORE_FORMAT, "size": list(image_size), "resize": resize, "resampling": RESAMPLING,
                "rows": identities}
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def _readable(path: Path, rows: int, image_size: tuple[int, int]) -> int | None:
    """The header length of a complete store of `rows` images, or None (with a warning if the file is damaged)."""
    if not path.is_file():
        return None
    expected = (rows, image_size[0], image_size[1], 3)
    try:
        stored = np.load(path, mmap_mode="r", allow_pickle=False)  # numpy reads the header (and refuses a short file)
        if not isinstance(stored, np.memmap):  # an .npz archive under the store's name
            raise ValueError(f"it holds a {type(stored).__name__}, not one .npy array")
        offset, shape, dtype = stored.offset, stored.shape, stored.dtype
        if tuple(shape) != expected or dtype != np.uint8 or not stored.flags.c_contiguous:
            raise ValueError(f"it holds {dtype} {tuple(shape)}, not uint8 {expected} in C order")
        del stored
        if path.stat().st_size != offset + int(np.prod(expected)):
            raise ValueError(f"it is {path.stat().st_size} bytes long, not {offset + int(np.prod(expected))}")
    except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
        logger.warning("Ignoring damaged image cache %s (%s); the images will be decoded again.", shown_path(path), error)
        return None
    return offset


def _remove_abandoned_temporaries(folder: Path) -> None:
    """Temporary stores of processes that no longer run (a build killed midway): gigabytes otherwise."""
    for leftover in folder.glob(".tmp-*-*.npy"):
        pid = leftover.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)
            logger.info("Removed %s, left by an interrupted image-cache build.", shown_path(leftover))


def _write_store(path: Path, decoded: tf.data.Dataset, rows: int, image_size: tuple[int, int]) -> None:
    """Sequential writes after a standard .npy header, while the next batches decode (prefetch)."""
    shape = (rows, image_size[0], image_size[1], 3)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                          "fortran_order": False, "shape": shape})
            filled = 0
            with tqdm(total=rows, desc="Decoding into the image cache", unit="image", leave=False,
                      disable=not getattr(sys.stderr, "isatty", lambda: False)()) as progress:  # a terminal only
                for batch in decoded.batch(WRITE_BATCH).prefetch(2):
                    handle.write(memoryview(np.ascontiguousarray(batch.numpy())))
                    filled += len(batch)
                    progress.update(len(batch))
            if filled != rows:
                raise OSError(f"decoded {filled} images, expected {rows}")
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it the store

    write_atomically(path, write, label="image cache")


def stored_images(paths: list[str], content_keys: list[str] | None, image_size: tuple[int, int], resize: str,
                  shuffled: bool, decode: Callable[[np.ndarray], tf.data.Dataset]
                  ) -> tuple[tf.data.Dataset, np.ndarray] | None:
    """(images uint8 [height, width, 3] read from the store, the row order as indices into `paths`), or
    None where no store can be used (a warning said why). `decode(indices)` gives the decoded images of
    those `paths` in order (the pipeline's own decoding); it runs only when the store must be built.
    `shuffled`: the rows are stored in an order that is already random (by a digest of each file's
    identity), else in the order of `paths`."""
    if not paths:
        return None
    keys = content_keys if content_keys is not None else [""] * len(paths)
    try:
        identities = [file_identity(path, key) for path, key in zip(paths, keys)]
    except OSError as error:
        logger.warning("Image cache not used: %s", error)
        return None
    if shuffled:  # a digest of each identity: random-looking even where identities are paths (class folders)
        digests = [hashlib.sha256(identity.encode("utf-8")).hexdigest() for identity in identities]
        order = np.asarray(sorted(range(len(paths)), key=lambda i: (digests[i], i)), dtype=np.int64)
    else:
        order = np.arange(len(paths), dtype=np.int64)
    rows = len(paths)
    path = image_store_dir() / f"{store_key([identities[i] for i in order], image_size, resize)}.npy"
    offset = _readable(path, rows, image_size)
    if offset is None:
        warned = path.is_file()  # _readable said it is damaged: one warning, should it not be written either
        needed = rows * image_size[0] * image_size[1] * 3
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_temporaries(path.parent)
            free = shutil.disk_usage(path.parent).free
            if free < needed + FREE_SPACE_MARGIN:
                logger.warning("Image cache not used: %d decoded images take %.0f MiB, and %s has %.0f MiB free "
                               "(1 GiB is kept free); they will be decoded every epoch. Free some space or set "
                               "METATUNE_CACHE_DIR to a larger disk.", rows, needed / 2**20, shown_path(path.parent),
                               free / 2**20)
                return None
            started = time.perf_counter()
            logger.info("Decoding %d images into the image cache %s (%.0f MiB) ...", rows, shown_path(path),
                        needed / 2**20)
            _write_store(path, decode(order), rows, image_size)
            logger.info("Image cache written in %.1f s", time.perf_counter() - started)
        except OSError as error:
            if not warned:
                logger.warning("Could not write the image cache %s (%s); the images will be decoded every epoch.",
                               shown_path(path), error)
            return None
        except tf.errors.OpError as error:  # a file that decoded at the data check no longer does
            raise DataError(f"An image could not be decoded while writing the image cache: {error.message}. Did a "
                            "file change since the run started? Check the folder (train.py DATA_DIR --check) and "
                            "run again.") from None
        offset = _readable(path, rows, image_size)
        if offset is None:
            return None
    else:
        logger.info("Reading %d decoded images from the image cache %s", rows, shown_path(path))
    record = image_size[0] * image_size[1] * 3
    # Bytes: a str holding a non-UTF-8 cache folder's name (Python keeps its bytes as surrogates) was a ValueError
    # in TensorFlow. The store is opened again at every epoch: one removed during a run ends it (app/cli.py says
    # that, and that --resume builds it again).
    records = tf.data.FixedLengthRecordDataset(os.fsencode(path), record_bytes=record, header_bytes=offset,
                                               buffer_size=READ_BUFFER_BYTES)
    height, width = image_size
    images = records.map(lambda raw: tf.reshape(tf.io.decode_raw(raw, tf.uint8), (height, width, 3)),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Known length, as the other pipelines have: finetune phase 2 sizes its learning-rate schedule from it. Also
    # what catches a store truncated to whole images mid-run (app/cli.py turns its error into one line).
    images = images.apply(tf.data.experimental.assert_cardinality(rows))
    return images, order
