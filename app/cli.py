"""What the three entry scripts share: environment, logging, and turning errors into messages."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Callable


# A full disk, a quota, a read-only filesystem: the user's to fix, reported like any bad input.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def positive_int(text: str) -> int:
    """argparse type for counts such as --top-k: 0 and negatives were silently taken as 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number. Received: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {value}")
    return value


def prepare_environment() -> None:
    """Must run before TensorFlow/Keras are imported (entry scripts call it first)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up chatter


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("absl", "tensorflow", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_safely(command: Callable[[], int]) -> int:
    """Run `command`; user errors become one 'error:' line and exit status 2, no traceback."""
    from app.errors import USER_ERRORS

    try:
        return command()
    except USER_ERRORS as error:
        logging.getLogger("metatune").error("%s", error)
        return 2
    except OSError as error:
        if error.errno not in DISK_ERRORS:
            raise
        where = f" {error.filename}" if error.filename else ""
        logging.getLogger("metatune").error(
            "Could not write%s: %s. Nothing half-written was left in its place; free some space (or pick a "
            "writable --output), then run the same command again (train.py: with --resume RUN_DIR to continue "
            "an interrupted run).", where, error.strerror or error)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("metatune").error("Interrupted.")
        return 130
