"""Errors about models and weights that the user can fix (the message says how)."""


class ModelError(ValueError):
    """A backbone, weights or saved model cannot be used as requested."""
