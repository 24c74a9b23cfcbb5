"""The one exception type for user mistakes.

Raise `UserError` for anything a user can fix (missing file, bad flag, corrupt
input). The CLI prints its message on one line and exits non-zero with no
traceback; programming errors keep their tracebacks.
"""


class UserError(Exception):
    """A mistake in the user's input: the message says what, where, and what to do."""
