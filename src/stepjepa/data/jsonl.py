"""JSON Lines: the one reader (UTF-8, byte-order mark, line numbers) and row formatting."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from stepjepa.core.errors import UsageError

# (line number, value or None, what is wrong with the line or None)
Record = tuple[int, Any, "str | None"]


def json_line(value: Any) -> str:
    """One JSON Lines row (strict JSON: NaN raises); U+2028/U+2029 escaped so that no reader splitting on
    Unicode line breaks cuts a row."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def parse_line(raw: bytes) -> tuple[Any, str | None, str] | None:
    """One line's bytes as ``(value, error, detail)``, or None when blank: a line that is not UTF-8 or not JSON
    has value None, the error (one text per kind, so rows can be counted by it) and the error with its column."""
    try:
        line = raw.decode("utf-8-sig")  # -sig: a byte-order mark from Windows editors is not JSON
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        return None, "not UTF-8 text", f"not UTF-8 text ({where})"
    if not line.strip():
        return None
    try:
        return json.loads(line), None, ""
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg})", f"invalid JSON ({exc.msg} at column {exc.colno})"


def split_lines(data: bytes, first_line: int = 1) -> Iterator[tuple[int, Any, str | None, str]]:
    """Every non-blank line of ``data`` as ``(number, value, error, detail)`` (see :func:`parse_line`)."""
    # Split bytes on "\n" only, as JSON Lines does: U+2028 inside a string is not a line end, and a bad byte
    # costs one line.
    for number, raw in enumerate(data.split(b"\n"), start=first_line):
        parsed = parse_line(raw)
        if parsed is not None:
            yield (number, *parsed)


def _lines(path: Path) -> Iterator[tuple[int, Any, str | None, str]]:
    """Every non-blank line of the file as ``(number, value, error, detail)``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return split_lines(path.read_bytes())


def read_records(path: str | os.PathLike) -> list[Record]:
    """Every non-blank line, bad ones included (for tools that report them all); raises ValueError when the
    file is empty or no line is JSON, FileNotFoundError when it is missing."""
    path = Path(path)
    records = [(number, value, error) for number, value, error, _ in _lines(path)]
    if not records:
        raise UsageError(f"{path}: file is empty")
    if all(error for _, _, error in records):
        raise UsageError(f"{path}: no line is JSON; expected a JSONL file (one JSON object per line)")
    return records


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line_number, value)`` for every non-blank line; the first bad line raises ValueError naming
    ``path:line`` and the column."""
    path = Path(path)
    rows = []
    for number, value, error, detail in _lines(path):
        if error:
            raise UsageError(f"{path}:{number}: {detail}")
        rows.append((number, value))
    if not rows:
        raise UsageError(f"{path}: file is empty")
    return rows


def append_jsonl(path: str | os.PathLike, row: Any) -> None:
    """Append one whole line (a single write, flushed and synced) so a crash never leaves half a row."""
    line = json_line(row).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
