"""Evaluation tasks: how a reply is scored against the gold answer, and which task a test file asks for.

Every task gives each problem two scores, as lm-evaluation-harness does for GSM8K:

- ``gsm8k``: ``strict_correct`` reads only a declared answer (``\\boxed{}``, ``#### N``),
  ``correct`` (flexible) falls back to the last number; numbers compared as values.
- ``exact_match``: the reply equals the gold assistant message after :func:`normalize_reply`;
  both scores are that one comparison.
- ``regex`` (NL-RX): ``strict_correct`` is exact match, ``correct`` is exact match or the same
  language (:func:`stepjepa.evaluation.regexes.regex_equivalent`, the DFA metric of Locascio et al. 2016).
  A reply that does not parse as a regex is wrong; its row's ``regex_error`` says why.
"""

from __future__ import annotations

from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.data.answers import answers_match, extract_answer, extract_strict
from stepjepa.evaluation.regexes import RegexSyntaxError, parse_regex, regex_equivalent

TASKS = ("gsm8k", "exact_match", "regex")
# What `accuracy` (flexible) and `strict_accuracy` measure, per task, for tables and reports.
SCORE_NAMES = {
    "gsm8k": ("accuracy", "strict"),
    "exact_match": ("exact match", "exact match"),
    "regex": ("equivalent", "exact match"),
}
# The same, as a sentence for reports.
SCORE_MEANINGS = {
    "gsm8k": "accuracy reads the reply's final number (flexible: else its last number); strict only a declared "
             "answer (\\boxed{} or ####)",
    "exact_match": "accuracy and strict are both exact match of the reply with the gold reply (surrounding "
                   "whitespace aside)",
    "regex": "accuracy counts a reply that is the gold regex or an equivalent one (the same language, DFA check); "
             "strict counts exact match only",
}


def normalize_reply(text: str) -> str:
    """A reply or gold message as compared by exact match: surrounding whitespace removed, nothing else."""
    return text.strip()


def last_assistant_message(row: Any) -> str | None:
    """Content of the last assistant message of a chat row, or None."""
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list):
        return None
    replies = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    return replies[-1] if replies and isinstance(replies[-1], str) else None


def detect_task(first_row: Any) -> str:
    """``exact_match`` for a chat whose gold reply declares no math answer; else ``gsm8k``.

    GSM8K as published (``question``/``answer``), chat rows with an ``answer`` field (what
    ``stepjepa prepare`` writes) and chats whose reply ends in ``\\boxed{}`` or ``#### N`` are
    math problems. The regex task is never guessed: ask for it with ``--task regex``.
    """
    if isinstance(first_row, dict) and "messages" in first_row and "answer" not in first_row:
        reply = last_assistant_message(first_row)
        if reply is not None and extract_strict(reply) is None:
            return "exact_match"
    return "gsm8k"


def gold_answer(task: str, truth: str | None) -> str:
    """The gold answer that replies are compared with; raises ValueError when the row has none usable."""
    if task == "gsm8k":
        answer = extract_answer(truth) if truth is not None else None
        if answer is None:
            raise UsageError("no numeric ground-truth answer ('answer' field, '#### N' or \\boxed{N})")
        return answer
    if truth is None or not normalize_reply(truth):
        raise UsageError("no assistant message to compare the reply with")
    if task == "regex":
        try:
            parse_regex(normalize_reply(truth))
        except RegexSyntaxError as exc:
            raise UsageError(f"the gold regex does not parse: {exc}") from None
    return normalize_reply(truth)


def score_reply(task: str, response: str, gt_answer: str) -> dict[str, Any]:
    """The scored fields of one result row: the reply's answer(s), ``correct`` and ``strict_correct``."""
    if task == "gsm8k":
        flexible, strict = extract_answer(response), extract_strict(response)
        return {
            "gen_answer": flexible,
            "gen_answer_strict": strict,
            "correct": answers_match(flexible, gt_answer),
            "strict_correct": answers_match(strict, gt_answer),
        }
    reply = normalize_reply(response)
    exact = reply == gt_answer
    if task == "exact_match":
        return {"gen_answer": reply, "correct": exact, "strict_correct": exact}
    error = None
    try:
        equivalent = exact or regex_equivalent(reply, gt_answer)
    except RegexSyntaxError as exc:
        equivalent, error = False, str(exc)
    return {"gen_answer": reply, "correct": equivalent, "strict_correct": exact, "regex_error": error}
