"""Bad input: library code raises ValueError (a bad value, flag or row) or FileNotFoundError; the command line
reports those in one line with exit status 2 (see :func:`stepjepa.cli.run_command`)."""


class UsageError(ValueError):
    """Bad flags of a command whose config still raises this name (bench, sweep, report); a ValueError."""
