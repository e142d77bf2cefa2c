"""The input side of metatune: folder scanning and checks, splits, tf.data pipelines."""
