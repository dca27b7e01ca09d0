"""The one error type for wrong input: the CLI prints it as one line and exits with status 2."""


class UsageError(ValueError):
    """Input the user can fix (a flag, a file, a path): its message names the problem in one line.

    A ValueError for compatibility with callers that catch one; a plain ValueError from a library stays a bug
    and keeps its traceback.
    """
