"""What the input-format converters share: the signal that drops a row, field lookup, line endings."""

from __future__ import annotations

from collections import Counter


class Dropped(Exception):
    """A row left out of the output; the message is the reason counted in the stats."""


def unix_newlines(texts: list[str], changes: Counter) -> list[str]:
    """The texts of one row with Windows and old-Mac line endings made ``\\n`` (counted once per row)."""
    if any("\r" in text for text in texts):
        changes["line endings normalised"] += 1
    return [text.replace("\r\n", "\n").replace("\r", "\n") for text in texts]


def text_field(row: dict, names: tuple[str, ...], what: str) -> str:
    """The first of ``names`` holding non-blank text; a row without one is dropped as having no ``what``."""
    for name in names:
        if isinstance(row.get(name), str) and row[name].strip():
            return row[name]
    raise Dropped(f"no {what}")
