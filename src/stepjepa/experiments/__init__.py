"""Comparing runs: the ``sweep`` command (its grid, child jobs and ledger) and the ``report`` command over a ledger."""
