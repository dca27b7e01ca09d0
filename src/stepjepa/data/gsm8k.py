"""GSM8K as published (``{question, answer}``, the answer's last line ``#### N``): its final answer and its
conversion to Step-JEPA steps."""

from __future__ import annotations

import re
from collections import Counter

from stepjepa.data.answers import HASH_MARK, hash_answer
from stepjepa.data.fields import Dropped, text_field, unix_newlines
from stepjepa.data.synthetic import Problem, boxed_final_step

CALCULATOR = re.compile(r"<<[^<>\n]*>>")


def gsm8k_final(text: str) -> str | None:
    """The ``####`` answer of a solution as a bare number (``'#### $1,234'`` -> ``'1234'``), or None without one."""
    declared = hash_answer(text)
    return None if declared is None else re.sub(r"[\s$,]", "", declared)


def gsm8k_problem(row: dict, keep_calculator: bool, changes: Counter) -> Problem:
    """A GSM8K row: each answer line but the last is a step; ``#### N`` becomes ``\\boxed{N}``."""
    texts = [text_field(row, ("question",), "question"), text_field(row, ("answer",), "answer")]
    question, answer = unix_newlines(texts, changes)
    lines = [line.strip() for line in answer.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not lines[-1].startswith(HASH_MARK):
        raise Dropped("no final '#### N' line")
    final = gsm8k_final(lines.pop())
    if not final:
        raise Dropped("empty '####' answer")
    if not keep_calculator and any(CALCULATOR.search(line) for line in lines):
        changes["calculator annotations removed"] += 1
        lines = [CALCULATOR.sub("", line).strip() for line in lines]
    steps = [line for line in lines if line]
    if len(steps) < len(lines):
        changes["empty lines removed"] += 1
    if not steps:
        raise Dropped("no reasoning steps")
    steps[-1] = boxed_final_step(steps[-1], final)
    return Problem(question.strip(), steps, final)
