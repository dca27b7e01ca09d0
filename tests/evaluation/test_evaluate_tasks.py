"""`stepjepa evaluate --task`: exact match and regex equivalence end to end, task detection, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NLRX, NLRX_SYSTEM, SHARED_DATA, nlrx_row
from transformers import AutoTokenizer

import stepjepa.evaluation.evaluate as evaluate
from stepjepa.cli import run_command
from stepjepa.evaluation.config import EvaluateConfig
from stepjepa.evaluation.evaluate import load_problems, run_evaluate, summary_path
from stepjepa.evaluation.generation import END_OF_TURN, Generation


# Four NL-RX-SYNTH test rows (their natural language and gold regex as in the data set).
def read_rows(path: Path) -> list[dict]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["index"])


@pytest.fixture
def nlrx_file(tmp_path) -> Path:
    path = tmp_path / "nlrx.jsonl"
    path.write_text("".join(json.dumps(nlrx_row(q, r)) + "\n" for q, r in NLRX))
    return path


@pytest.fixture
def canned(monkeypatch, tiny_model_dirs):
    """Replies: the gold regex written differently, the gold itself (with a newline), a malformed one, a wrong one."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    monkeypatch.setattr(evaluate, "_load", lambda model_path, device, dtype: (None, tokenizer))
    replies = {
        NLRX[0][0]: "([0-9]|.).*[AEIOUaeiou].*",  # same language: [0-9]|. is just .
        NLRX[1][0]: "(.*)(dog.*[0-9].*)\n",
        NLRX[2][0]: "~((dog.*[0-9].*){3,}",
        NLRX[3][0]: "(.*)([AEIOUaeiou])",
    }
    calls: list[list[str]] = []

    def iter_generations(model, tokenizer, prompts, batch_size, max_new_tokens, temperature=0.0):
        texts = [tokenizer.decode(ids) for ids in prompts]
        calls.append(texts)
        for start in range(0, len(prompts), batch_size):
            yield [Generation(i, next(r for q, r in replies.items() if q in texts[i]), 1, END_OF_TURN)
                   for i in range(start, min(start + batch_size, len(prompts)))]

    monkeypatch.setattr(evaluate, "iter_generations", iter_generations)
    return calls


def test_regex_task_scores_exact_and_equivalent(tmp_path, nlrx_file, canned, capsys) -> None:
    """Equivalent: rows 0 and 1 (2/4 = 0.5); exact match: row 1 only (1/4 = 0.25); row 2 does not parse."""
    out = tmp_path / "res.jsonl"
    assert run_evaluate(EvaluateConfig(model_path="m", test_file=str(nlrx_file), output_file=str(out),
                                       task="regex", batch_size=3)) == 0
    rows = read_rows(out)
    assert [r["correct"] for r in rows] == [True, True, False, False]
    assert [r["strict_correct"] for r in rows] == [False, True, False, False]
    assert [r["regex_error"] for r in rows] == [None, None, "missing ')' at position 20", None]
    assert rows[1]["gen_answer"] == rows[1]["gt_answer"] == NLRX[1][1]
    assert all(r["task"] == "regex" for r in rows)
    summary = json.loads(summary_path(out).read_text())
    assert summary["task"] == "regex"
    assert (summary["accuracy"], summary["strict_accuracy"], summary["correct"]) == (0.5, 0.25, 2)
    assert "task regex: equivalent 50.0% (exact match 25.0%) on 4 problems" in capsys.readouterr().out
    # The prompt is the chat's own: its system message, then the question (never the reply).
    assert NLRX_SYSTEM in canned[0][0] and NLRX[0][1] not in canned[0][0]


def test_chat_file_defaults_to_exact_match(tmp_path, nlrx_file, canned, capsys) -> None:
    """Exact match after stripping: only row 1 (1/4); the equivalent row 0 is wrong here."""
    out = tmp_path / "res.jsonl"
    run_evaluate(EvaluateConfig(model_path="m", test_file=str(nlrx_file), output_file=str(out)))
    assert [r["correct"] for r in read_rows(out)] == [False, True, False, False]
    summary = json.loads(summary_path(out).read_text())
    assert (summary["task"], summary["accuracy"], summary["strict_accuracy"]) == ("exact_match", 0.25, 0.25)
    assert "task exact_match (chosen from the first row): exact match 25.0%" in capsys.readouterr().out


def test_resume_keeps_rows_and_refuses_another_task(tmp_path, nlrx_file, canned, monkeypatch) -> None:
    """Interrupted after 3 rows, a rerun generates only the fourth; rows of another task are not mixed in."""
    out = tmp_path / "res.jsonl"
    cfg = EvaluateConfig(model_path="m", test_file=str(nlrx_file), output_file=str(out), task="regex", batch_size=1)
    real_append, written = evaluate.append_jsonl, []

    def append_then_die(path, row):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(row["index"])
        real_append(path, row)

    monkeypatch.setattr(evaluate, "append_jsonl", append_then_die)
    # Ctrl-C ends evaluate with one line and status 130, the finished rows kept.
    assert run_evaluate(cfg) == 130
    monkeypatch.setattr(evaluate, "append_jsonl", real_append)
    run_evaluate(cfg)
    assert [len(texts) for texts in canned] == [4, 1]
    assert [r["index"] for r in read_rows(out)] == [0, 1, 2, 3]
    assert json.loads(summary_path(out).read_text())["correct"] == 2
    before = out.read_text()
    with pytest.raises(ValueError, match="holds results of task regex, not exact_match"):
        run_evaluate(EvaluateConfig(model_path="m", test_file=str(nlrx_file), output_file=str(out),
                                    task="exact_match"))
    assert out.read_text() == before


def test_prompt_is_every_message_before_the_last_reply(tmp_path) -> None:
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
                        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                        {"role": "assistant", "content": "a2"}]}
    path = tmp_path / "multi.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [problem] = load_problems(str(path), task="exact_match")
    assert problem.messages == row["messages"][:4]
    assert (problem.question, problem.gt_answer) == ("q2", "a2")


def test_bad_task_and_bad_gold_regex_are_usage_errors(tmp_path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(nlrx_row(*NLRX[0])) + "\n" + json.dumps(nlrx_row("q", "[z-a]")) + "\n")
    assert run_command("evaluate", ["--model_path", "m", "--test_file", str(path), "--task", "regexp"]) == 2
    assert "--task must be one of gsm8k, exact_match, regex, got 'regexp'" in capsys.readouterr().err
    assert run_command("evaluate", ["--model_path", "m", "--test_file", str(path), "--task", "regex"]) == 2
    assert "bad.jsonl:2: the gold regex does not parse: range z-a runs backwards" in capsys.readouterr().err


# Real generation is one path for every task (the task scores the reply: canned replies in the tests above and
# tests/evaluation/test_tasks.py); the fast tier runs the regex task, the other two are slow.
@pytest.mark.parametrize("task", [pytest.param("gsm8k", marks=pytest.mark.slow),
                                  pytest.param("exact_match", marks=pytest.mark.slow), "regex"])
def test_each_task_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dirs, nlrx_file, chat_file, task) -> None:
    """Real generation: every row's scores are the task's scoring of the reply recorded beside them."""
    from stepjepa.evaluation.tasks import score_reply

    test_file = chat_file if task == "gsm8k" else nlrx_file
    out = tmp_path / "res.jsonl"
    assert run_evaluate(EvaluateConfig(model_path=str(tiny_model_dirs["gpt2"]), test_file=str(test_file),
                                       output_file=str(out), task=task, max_examples=4, max_new_tokens=6,
                                       device="cpu")) == 0
    rows = read_rows(out)
    assert len(rows) == 4
    for row in rows:
        assert row["question"] and isinstance(row["generated_response"], str)
        expected = score_reply(task, row["generated_response"], row["gt_answer"])
        assert {key: row[key] for key in expected} == expected
    summary = json.loads(summary_path(out).read_text())
    assert summary["task"] == task
    assert summary["correct"] == sum(r["correct"] for r in rows)


@pytest.mark.shared_data
def test_nlrx_test_file_loads_for_the_regex_task() -> None:
    problems = load_problems(str(SHARED_DATA / "nlrx_synth" / "synth_test.jsonl"), task="regex")
    assert len(problems) == 2000
    assert problems[0].messages[0] == {"role": "system", "content": NLRX_SYSTEM}
    assert problems[0].gt_answer == "~((dog.*[0-9].*){3,})"
