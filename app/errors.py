"""User-facing errors: the CLI reports them in one clear message, never a traceback."""

import re

from data.errors import DataError
from models.errors import ModelError


class UserError(ValueError):
    """A problem the user can fix; the message says what was wrong and what to do."""


# Everything the entry scripts turn into "error: <message>" and exit status 2.
USER_ERRORS = (UserError, DataError, ModelError)


def tensorflow_error_summary(error: BaseException, limit: int = 160) -> str:
    """The first line of a TensorFlow error's message without its {{function_node ...}} prefix and its device
    and op suffixes, which say nothing to a user ("OOM when allocating tensor with shape[1280,1000000000] and
    type float"); at most `limit` characters."""
    message = str(getattr(error, "message", None) or error).strip().split("\n")[0]
    said = re.sub(r"\{\{.*?\}\}\s*|\s+on /job:.*|\s*\[Op:.*", "", message)
    return said[:limit] or "no detail"
