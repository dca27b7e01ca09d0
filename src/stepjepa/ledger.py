"""A sweep's ledger: one JSON line per finished run, which ``stepjepa sweep`` appends and ``stepjepa report`` reads."""

from __future__ import annotations

from pathlib import Path

from stepjepa.data import read_jsonl

LEDGER = "ledger.jsonl"
BASE = "base"  # the run (and its mode) that evaluates the untrained model


def read_ledger(path: Path) -> dict[str, dict]:
    """The last ledger entry of every run, by run name (a redone run's newer entry replaces the older)."""
    if not path.is_file() or not path.read_bytes().strip():
        return {}
    entries = {}
    for line, entry in read_jsonl(path):
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
            raise ValueError(f"{path}:{line}: not a ledger entry of stepjepa sweep")
        entries[entry["run"]] = entry
    return entries
