"""The one exception type that means "the user must fix something".

The CLI prints these as a single line (no traceback) and exits with status 2; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in input, params or environment, with a message saying what to do."""
