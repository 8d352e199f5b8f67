"""The one exception type that turns into a one-line message and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: a flag, a suite file, a folder, a size."""
