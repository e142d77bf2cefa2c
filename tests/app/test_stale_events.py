"""A resume drops the TensorBoard events a killed run logged after its checkpoint (app/tensorboard_logging.py)."""

import tensorflow as tf

from app.tensorboard_logging import drop_events_after


def _event(wall_time: float, step: int | None = None) -> bytes:
    event = tf.compat.v1.Event(wall_time=wall_time)
    if step is None:
        event.file_version = "brain.Event:2"
    else:
        event.step = step
        event.summary.value.add(tag="epoch_loss", simple_value=float(step))
    return event.SerializeToString()


def _write(path, records, tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    with open(path, "ab") as handle:
        handle.write(tail)


def _wall_times(path) -> list[float]:
    return [tf.compat.v1.Event.FromString(r.numpy()).wall_time for r in tf.data.TFRecordDataset(str(path))]


def test_events_after_the_checkpoint_go_those_before_stay(tmp_path):
    logs = tmp_path / "logs"
    kept = logs / "train" / "events.out.tfevents.100.host.1.0.v2"
    _write(kept, [_event(100), _event(101, 0), _event(105, 1)], tail=b"\x17\x00\x00")  # a kill mid-write: partial
    later = logs / "validation" / "events.out.tfevents.106.host.1.1.v2"
    _write(later, [_event(106), _event(107, 1)])
    leftover = logs / "train" / ".tmp-1-events.out.tfevents.100.host.1.0.v2"  # a rewrite killed mid-way
    _write(leftover, [_event(100), _event(105, 1)])

    assert drop_events_after(logs, 103.0) == 3
    assert _wall_times(kept) == [100, 101]  # whole records only: it reads to the end without an error
    assert not later.exists() and not leftover.exists()
    assert drop_events_after(logs, 103.0) == 0  # nothing left to drop: the file stays as it is


def test_without_a_checkpoint_every_event_goes(tmp_path):
    logs = tmp_path / "logs"
    _write(logs / "train" / "events.out.tfevents.100.host.1.0.v2", [_event(100), _event(101, 0)])
    assert drop_events_after(logs, None) == 2
    assert not list(logs.rglob("*tfevents*"))
