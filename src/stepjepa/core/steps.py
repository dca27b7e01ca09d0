"""Reasoning steps of an assistant message: blank-line separated, found on the text."""

from __future__ import annotations

import re

# A blank line: a newline, then one or more lines holding only spaces/tabs (CRLF tolerated).
STEP_SEPARATOR = re.compile(r"\r?\n(?:[ \t]*\r?\n)+")


def step_char_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of each step; a step's span includes its trailing separator.

    Leading blank lines are skipped; the last step runs to the end of the text.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    lead = re.match(r"(?:[ \t]*\r?\n)+", text)
    if lead:
        start = lead.end()
    for match in STEP_SEPARATOR.finditer(text, start):
        if match.start() > start:
            spans.append((start, match.end()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    elif spans:
        # Trailing blank lines belong to the last step's separator.
        spans[-1] = (spans[-1][0], len(text))
    return spans


def split_steps(text: str) -> list[str]:
    """The steps of ``text`` without their separators."""
    return [STEP_SEPARATOR.sub("", text[a:b]).strip("\r\n") for a, b in step_char_spans(text)]


def join_steps(steps: list[str]) -> str:
    """Inverse of :func:`split_steps` for steps without blank lines inside."""
    return "\n\n".join(steps)
