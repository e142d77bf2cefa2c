"""Keras objects only: backbone registry, weight loaders, task heads, the task model."""
