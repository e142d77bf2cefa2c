"""Errors about the user's data: always say what was wrong, the value, what to do."""


class DataError(ValueError):
    """The data folder cannot be used as given; the message tells the user how to fix it."""
