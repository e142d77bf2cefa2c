"""User-facing errors: the CLI reports them in one clear message, never a traceback."""

from data.errors import DataError
from models.errors import ModelError


class UserError(ValueError):
    """A problem the user can fix; the message says what was wrong and what to do."""


# Everything the entry scripts turn into "error: <message>" and exit status 2.
USER_ERRORS = (UserError, DataError, ModelError)
