"""Evaluation tasks: the reply normaliser, task detection from a file's first row, per-task scores."""

from __future__ import annotations

import pytest

from stepjepa.evaluation.tasks import detect_task, gold_answer, normalize_reply, score_reply


def chat(reply: str, system: str = "Convert natural language to regular expression.") -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "lines with 'dog'"},
                         {"role": "assistant", "content": reply}]}


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("  (dog)*\n", "(dog)*"),
        ("\t.*dog.*  \n\n", ".*dog.*"),
        ("a b", "a b"),  # inner whitespace is part of the answer
        ("DOG", "DOG"),  # so is case
        ("`dog`", "`dog`"),  # and any wrapping the model adds
        (" \n ", ""),
    ],
)
def test_normalize_reply_strips_only_surrounding_whitespace(text: str, normalised: str) -> None:
    assert normalize_reply(text) == normalised


@pytest.mark.parametrize(
    ("row", "task"),
    [
        ({"question": "2+2?", "answer": "2+2=4\n#### 4"}, "gsm8k"),
        (chat("2 + 2 = 4\n\nSo \\boxed{4}.", system="Solve."), "gsm8k"),
        ({**chat("It is four."), "answer": "4"}, "gsm8k"),  # prepare's chat rows carry the answer
        (chat(".*dog.*"), "exact_match"),
        (chat("([0-9]){3,}"), "exact_match"),  # numbers inside a regex are no declared answer
    ],
)
def test_detect_task_from_the_first_row(row: dict, task: str) -> None:
    assert detect_task(row) == task


def test_regex_scores_exact_equivalent_wrong_and_malformed() -> None:
    gold = gold_answer("regex", " (.*)(dog)(.*)\n")
    assert gold == "(.*)(dog)(.*)"
    exact = score_reply("regex", "(.*)(dog)(.*) ", gold)
    assert (exact["correct"], exact["strict_correct"], exact["regex_error"]) == (True, True, None)
    same_language = score_reply("regex", ".*dog.*", gold)
    assert (same_language["correct"], same_language["strict_correct"]) == (True, False)
    wrong = score_reply("regex", ".*dog", gold)  # misses "dogs"
    assert (wrong["correct"], wrong["strict_correct"], wrong["regex_error"]) == (False, False, None)
    malformed = score_reply("regex", "(.*dog", gold)
    assert (malformed["correct"], malformed["strict_correct"]) == (False, False)
    assert malformed["regex_error"] == "missing ')' at position 6"
    assert malformed["gen_answer"] == "(.*dog"


def test_exact_match_ignores_surrounding_whitespace_only() -> None:
    assert score_reply("exact_match", "\n.*dog.* ", ".*dog.*") == {
        "gen_answer": ".*dog.*", "correct": True, "strict_correct": True}
    # An equivalent regex is still a different string.
    assert score_reply("exact_match", "(.*)(dog)(.*)", ".*dog.*")["correct"] is False


def test_gsm8k_scores_flexible_and_strict() -> None:
    row = score_reply("gsm8k", "So 3 + 4 = 7 apples.", "7")
    assert (row["gen_answer"], row["gen_answer_strict"], row["correct"], row["strict_correct"]) == ("7", None, True, False)


@pytest.mark.parametrize(
    ("task", "truth", "message"),
    [
        ("gsm8k", "no number", "no numeric ground-truth"),
        ("exact_match", None, "no assistant message"),
        ("exact_match", "  ", "no assistant message"),
        ("regex", "(dog", "the gold regex does not parse: missing '\\)'"),
    ],
)
def test_unusable_gold_answers_are_refused(task: str, truth: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gold_answer(task, truth)
