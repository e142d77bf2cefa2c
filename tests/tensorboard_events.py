"""Reading a run's TensorBoard event files back in tests."""

from __future__ import annotations

from pathlib import Path


def scalar_points(run: Path, subdir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar over every event file of RUN/logs/<subdir>, in step order."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for events in (Path(run) / "logs" / subdir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["tensors"]:
            points += [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    return sorted(points)


def tensor_steps(run: Path, subdir: str, tag: str) -> list[int]:
    """The steps of every event of a summary (a text's, an image's: any kind), over every event file of
    RUN/logs/<subdir>, in step order, repeats kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in (Path(run) / "logs" / subdir).glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["tensors"]:
            steps += [e.step for e in accumulator.Tensors(tag)]
    return sorted(steps)
