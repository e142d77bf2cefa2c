"""Small numpy and scikit-learn fits on one thread.

The fits metatune runs on cached features (scikit-learn's LogisticRegression for the label-issue
fold heads, the unknown-class folds and the meta target heads; the shrunk covariances of the
unknown-class scores; the few-shot baselines' softmax regression) have a few hundred rows. Split
across OpenBLAS's and OpenMP's worker threads they spend longer synchronising than computing, and
on a machine with other work running those threads spin waiting for a core. Measured with
`train.py data/samples/fashion_mnist` (features cached, 2 cores, the two versions alternated; bench/notes.md):
a median 23.8 s before, 17.2 s on one thread (3 runs each); with two busy processes on the cores,
56.6 / 64.5 s before, 29.0 / 42.0 s after.
TensorFlow's own thread pools are not affected: threadpoolctl limits the BLAS and OpenMP libraries.
"""

from __future__ import annotations

from contextlib import AbstractContextManager


def one_thread() -> AbstractContextManager:
    """A context manager inside which the loaded BLAS and OpenMP libraries use one thread each. Cheap enough to
    enter per fit (about 2 ms: threadpoolctl looks the libraries up each time, so ones loaded since are covered)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
