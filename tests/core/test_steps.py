"""Steps found on the text, with their character spans counted by hand."""

from __future__ import annotations

import pytest

from stepjepa.core.steps import split_steps, step_char_spans


@pytest.mark.parametrize(
    ("text", "spans", "steps"),
    [
        # "A.\n\n" is 0-4 (its blank line included), "B." 4-6.
        ("A.\n\nB.", [(0, 4), (4, 6)], ["A.", "B."]),
        # A line of spaces and a tab is a blank line: "B.\n \t\n" is 4-10.
        ("A.\n\nB.\n \t\nC.", [(0, 4), (4, 10), (10, 12)], ["A.", "B.", "C."]),
        # A single newline stays inside its step: "A.\nstill A." is 11 characters, its blank line 11-13.
        ("A.\nstill A.\n\nB.", [(0, 13), (13, 15)], ["A.\nstill A.", "B."]),
        # Leading blank lines are skipped: the first step starts at 2.
        ("\n\nA.\n\nB.", [(2, 6), (6, 8)], ["A.", "B."]),
        # Trailing blank lines join the last step's span: 4-9.
        ("A.\n\nB.\n\n\n", [(0, 4), (4, 9)], ["A.", "B."]),
        # Windows line ends: "\r\n\r\n" is one blank line, 2-6.
        ("A.\r\n\r\nB.", [(0, 6), (6, 8)], ["A.", "B."]),
        ("one step only", [(0, 13)], ["one step only"]),
        ("", [], []),
        ("\n\n \n", [], []),
    ],
)
def test_spans_and_steps_by_hand(text: str, spans: list[tuple[int, int]], steps: list[str]) -> None:
    assert step_char_spans(text) == spans
    assert split_steps(text) == steps

