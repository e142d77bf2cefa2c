"""The entry scripts' logging: TensorFlow's Python warnings come out once, in metatune's format, and its
advice about its own retracing (not the user's to act on) not at all."""

import tensorflow as tf

from app.cli import setup_logging


def test_tensorflow_warnings_come_once_and_its_retracing_advice_not_at_all(capsys):
    setup_logging()
    tf.get_logger().warning("5 out of the last 16 calls to <function f at 0x1> triggered tf.function retracing. "
                            "Tracing is expensive and the excessive number of tracings could be due to ...")
    tf.get_logger().warning("a warning the user should see")
    err = capsys.readouterr().err
    assert err.count("a warning the user should see") == 1, err
    assert "WARNING tensorflow: a warning the user should see" in err  # metatune's format, not TF's own
    assert "retracing" not in err
