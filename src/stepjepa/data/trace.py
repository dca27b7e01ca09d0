"""Reasoning traces written by a model (``{question or problem, deepseek_response or response}``): the
thinking removed, the solution cut into steps, the final answer checked against the row's reference."""

from __future__ import annotations

import re
from collections import Counter

from stepjepa.core.steps import join_steps, split_steps
from stepjepa.data.answers import answers_match, last_boxed
from stepjepa.data.fields import Dropped, text_field, unix_newlines
from stepjepa.data.gsm8k import gsm8k_final
from stepjepa.data.synthetic import Problem, boxed_final_step

# Fields looked for, in order, when --response_field / the question field is not named.
TRACE_FIELDS = ("deepseek_response", "response")
QUESTION_FIELDS = ("question", "problem")
REFERENCE_FIELDS = ("ground_truth", "answer")

THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
# "**Step 2:**", "## Step 2", "Step 2:" open a step; "2." / "2)" do when no "Step N" marker is used.
STEP_MARKER = re.compile(r"[ \t]*(?:#+[ \t]*)?(?:\*\*|__)?[ \t]*step[ \t]*\d+\b", re.IGNORECASE)
NUMBERED_MARKER = re.compile(r"[ \t]*(?:\*\*)?\d+[.)][ \t]")
# A heading of at most three words ending with a colon, alone on its line ("**Solution:**").
HEADING = re.compile(r"[#*_ \t]*[\w']+(?:[ \t]+[\w']+){0,2}[ \t]*:[*_ \t]*")


def strip_think(text: str) -> tuple[str, bool]:
    """The text outside ``<think>`` blocks (nested ones counted; a lone ``</think>`` closes all before it).

    Returns ``(text, removed)``; when nothing but thinking is there, the thinking itself with its tags removed.
    """
    outside, inside, depth, pos = [], [], 0, 0
    for tag in THINK_TAG.finditer(text):
        (inside if depth else outside).append(text[pos : tag.start()])
        pos = tag.end()
        if not tag.group(1):
            depth += 1
        elif depth:
            depth -= 1
        else:
            # R1-style traces often omit the opening tag: all so far was thinking.
            inside, outside = outside + inside, []
    (inside if depth else outside).append(text[pos:])
    kept = "".join(outside)
    if kept.strip():
        return kept, any(part.strip() for part in inside)
    return "".join(inside), False


def _trivial(paragraph: str) -> bool:
    """No letter or digit (rules, stray markup), or a lone short heading ending with a colon."""
    return not re.search(r"[^\W_]", paragraph) or bool(HEADING.fullmatch(paragraph))


def trace_steps(text: str, changes: Counter) -> list[str]:
    """Steps of a model-written solution: paragraphs, continuation paragraphs merged into their step.

    ``Step N`` markers (else ``N.`` markers) open steps; a paragraph without a marker after one is
    a continuation, joined to its step by a single newline; without markers every paragraph is a
    step. Trivial paragraphs (see :func:`_trivial`) are dropped.
    """
    paragraphs = split_steps(text)
    marker = next((m for m in (STEP_MARKER, NUMBERED_MARKER) if any(m.match(p) for p in paragraphs)), None)
    steps: list[str] = []
    opened = False
    for paragraph in paragraphs:
        if marker is not None and marker.match(paragraph):
            steps.append(paragraph)
            opened = True
        elif _trivial(paragraph):
            changes["trivial fragments dropped"] += 1
        elif opened:
            steps[-1] += "\n" + paragraph
            changes["continuation paragraphs merged"] += 1
        else:
            steps.append(paragraph)
    return steps


def reference_answer(row: dict) -> str | None:
    """The row's own final answer (``ground_truth``, else ``answer``; a ``####`` line is parsed), or None."""
    for name in REFERENCE_FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip():
            final = gsm8k_final(value)
            return final if final is not None else value.strip()
    return None


def trace_problem(row: dict, response_field: str, changes: Counter) -> Problem:
    """A model-written trace: ``<think>`` removed, steps found, final answer from ``\\boxed{}`` or the reference."""
    question, response = unix_newlines(
        [text_field(row, QUESTION_FIELDS, "question"), text_field(row, (response_field,), f"'{response_field}' text")], changes
    )
    question = question.strip()
    text, removed = strip_think(response)
    if removed:
        changes["think blocks removed"] += 1
    steps = trace_steps(text, changes)
    if not steps:
        raise Dropped("no reasoning steps")
    boxed, reference = last_boxed(join_steps(steps)), reference_answer(row)
    if boxed is None:
        if reference is None:
            raise Dropped("no final answer (no \\boxed{} and no reference answer)")
        steps[-1] = boxed_final_step(steps[-1], reference)
        changes["boxed answer appended"] += 1
        return Problem(question, steps, reference)
    if reference is not None and boxed.strip() != reference and not answers_match(boxed, reference):
        raise Dropped("boxed answer differs from the reference answer")
    return Problem(question, steps, boxed.strip())
