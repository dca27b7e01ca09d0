"""From input rows of any format (gsm8k, trace, chat) to Step-JEPA chat rows, with what was dropped and changed.

Every output row is ``{"messages": [system, user, assistant], "question", "answer", "total_steps"}``
with the assistant's steps separated by blank lines. docs/DATA.md states the formats and rules.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.data.answers import hash_answer
from stepjepa.data.chat import DEFAULT_SYSTEM_PROMPT, chat_row
from stepjepa.data.fields import Dropped
from stepjepa.data.gsm8k import gsm8k_problem
from stepjepa.data.jsonl import Record
from stepjepa.data.trace import TRACE_FIELDS, trace_problem

FORMATS = ("gsm8k", "trace", "chat")
HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` names a Hugging Face dataset rather than a local file (``owner/name``, not on disk)."""
    return not Path(text).exists() and bool(HUB_ID.fullmatch(text)) and not text.endswith((".json", ".jsonl"))


def load_hub_records(name: str, config: str | None, split: str) -> list[Record]:
    """The rows of a Hugging Face dataset split, numbered from 1 like lines; ValueError when it cannot load."""
    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"{name} is not a local file; loading it from the Hugging Face Hub needs the `datasets` package "
            "(pip install datasets), or download the data and pass the file with --input"
        ) from None
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown id, wrong config or split: the user's next move is the same
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise UsageError(
            f"cannot load {name} (config {config}, split {split}) from the Hugging Face Hub "
            f"({type(exc).__name__}: {reason}); without network, download the data and pass the file with --input"
        ) from None
    return [(number, dict(row), None) for number, row in enumerate(dataset, start=1)]


def detect_format(row: Any, response_field: str | None = None) -> str:
    """``chat``, ``trace`` or ``gsm8k`` from one row's fields; a trace may also carry a GSM8K answer."""
    if isinstance(row, dict):
        if "messages" in row:
            return "chat"
        if (response_field or "") in row or any(name in row for name in TRACE_FIELDS):
            return "trace"
        if hash_answer(row.get("answer")) is not None:
            return "gsm8k"
    fields = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise UsageError(f"cannot tell the input format from the first row ({fields}); pass --format gsm8k, trace or chat")


@dataclass
class Conversion:
    """What :func:`convert_records` kept, dropped (line numbers per reason) and changed (rows per change)."""

    rows: list[dict] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    changed: Counter = field(default_factory=Counter)


def convert_records(
    records: list[Record],
    fmt: str,
    *,
    response_field: str | None = None,
    system_prompt: str | None = None,
    keep_calculator: bool = False,
    min_steps: int | None = None,
) -> Conversion:
    """Convert every record; rows that cannot be converted are dropped with their reason and line number.

    ``system_prompt`` None: the Step-JEPA prompt, and chat rows keep their own; ``min_steps`` None: 1 for
    chat, else 2.
    """
    first = next(value for _, value, error in records if error is None)
    fields = first if isinstance(first, dict) else {}
    response_field = response_field or next((name for name in TRACE_FIELDS if name in fields), None)
    if fmt == "trace" and response_field is None:
        raise UsageError(f"trace format: no {' or '.join(TRACE_FIELDS)} field; name it with --response_field")
    min_steps = min_steps or (1 if fmt == "chat" else 2)
    prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
    result = Conversion()
    for number, value, error in records:
        changes: Counter = Counter()  # counted only for rows that are kept
        try:
            if error:
                raise Dropped(error)
            if fmt == "chat":
                row = chat_row(value, system_prompt, changes)
            elif not isinstance(value, dict):
                raise Dropped("not a JSON object")
            elif fmt == "gsm8k":
                row = gsm8k_problem(value, keep_calculator, changes).to_row(prompt)
            else:
                row = trace_problem(value, response_field, changes).to_row(prompt)
            if row["total_steps"] < min_steps:
                raise Dropped(f"fewer than {min_steps} steps")
            result.rows.append(row)
            result.changed.update(changes.keys())  # rows with each change, not occurrences
        except Dropped as reason:
            result.dropped.setdefault(str(reason), []).append(number)
    return result
