"""Base error for problems the user can fix (bad input, missing upstream artifact, bad config).

Apps turn these into one clear message and a non-zero exit, without a traceback.
"""


class UserError(Exception):
    """An error whose message names the bad input and the fix."""
