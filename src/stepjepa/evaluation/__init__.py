"""Scoring models: generation, tasks (GSM8K, exact match, NL-RX regexes) with their answer checks, the held-out
problems, and the ``evaluate`` and ``probe`` commands."""
