"""The one exception type the command line turns into a one-line message and exit status 2."""


class UsageError(Exception):
    """Bad input or flags: the message names the problem (file and line where there is one)."""
