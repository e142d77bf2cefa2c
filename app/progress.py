"""Progress bars on a terminal only, cleared when done, so a log keeps one summary line per epoch.

Keras' own bars (`fit(verbose=1)`) leave a line per epoch and, when the output is a file,
write ANSI colour codes and backspaces into it; `verbose=2` still prints "Epoch n/N" plus a
metrics line beside metatune's own summary. So Keras runs silent (`verbose=0`) and this
callback draws one transient tqdm bar per epoch or prediction pass, only when stderr (where
the log goes too) is a terminal.
"""

from __future__ import annotations

import sys

import keras
from tqdm.auto import tqdm


def on_terminal(stream=None) -> bool:
    """True when `stream` (default stderr, where bars are drawn) is an interactive terminal, not a file or a pipe."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def input_progress(total: int, description: str):
    """A transient bar over `total` inputs, drawn when stderr is a terminal and stdout is not: predict.py's lines
    show its progress on a terminal themselves, but not when they go into a file or a pipe."""
    return tqdm(total=total, desc=description, unit="file", leave=False, dynamic_ncols=True,
                disable=on_terminal(sys.stdout) or not on_terminal())


class BatchProgress(keras.callbacks.Callback):
    """A transient bar over the batches of each training epoch and of each `predict` pass."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description
        self._bar = None

    def _open(self, description: str) -> None:
        self._close()
        self._bar = tqdm(total=self.params.get("steps") if self.params else None, desc=description, unit="batch",
                         leave=False, disable=not on_terminal(), dynamic_ncols=True)

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._open(f"{self.description} epoch {epoch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        self._advance()

    def on_epoch_end(self, epoch, logs=None):
        self._close()  # before the epoch's summary line is logged

    def on_train_end(self, logs=None):
        self._close()

    def on_predict_begin(self, logs=None):
        self._open(self.description)

    def on_predict_batch_end(self, batch, logs=None):
        self._advance()

    def on_predict_end(self, logs=None):
        self._close()
