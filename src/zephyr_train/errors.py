"""The one exception type that means "the user can fix this".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug (exit 1).
"""


class UserError(Exception):
    """A mistake in a recipe, a path or the data, with the fix in the message."""
