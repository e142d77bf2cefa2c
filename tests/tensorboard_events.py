"""Reading a run's TensorBoard event files back in tests."""

from __future__ import annotations

from pathlib import Path


def _events(run: Path, subdir: str, tag: str) -> list:
    """Every tensor event of `tag` over every event file of RUN/logs/<subdir> (a scalar's, a text's, an image's)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = []
    for events in (Path(run) / "logs" / subdir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["tensors"]:
            found += accumulator.Tensors(tag)
    return found


def scalar_points(run: Path, subdir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar over every event file of RUN/logs/<subdir>, in step order."""
    import tensorflow as tf

    return sorted((e.step, float(tf.make_ndarray(e.tensor_proto))) for e in _events(run, subdir, tag))


def tensor_steps(run: Path, subdir: str, tag: str) -> list[int]:
    """The steps of every event of a summary of any kind, in step order, repeats kept."""
    return sorted(e.step for e in _events(run, subdir, tag))
