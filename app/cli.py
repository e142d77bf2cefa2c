"""What the three entry scripts share: environment, logging, and turning errors into messages."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable


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
    except KeyboardInterrupt:
        logging.getLogger("metatune").error("Interrupted.")
        return 130
