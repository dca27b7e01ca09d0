"""Termination diagnostics: how generations ended (end of turn or the --max_new_tokens cap), their length, and
accuracy among those that ended; per row, in the summary (also after a resume) and in the tables."""

from __future__ import annotations

import json

import pytest
import torch
from test_evaluate import GSM8K_ROWS, load_tiny, read_rows, write_jsonl
from transformers import AutoTokenizer

import stepjepa.evaluation.evaluate as evaluate
from stepjepa.evaluation.config import EvaluateConfig
from stepjepa.evaluation.evaluate import format_table, run_evaluate, summary_path, termination_line, termination_stats
from stepjepa.evaluation.generation import (
    END_OF_TURN,
    MAX_NEW_TOKENS,
    Generation,
    end_of_turn_ids,
    finish_of,
    iter_generations,
    render_prompts,
)


def test_finish_of_cuts_at_the_first_stop_token() -> None:
    stops = {2, 9}
    assert finish_of([5, 6, 9, 2, 2], stops) == (2, END_OF_TURN)  # 5 6 then a stop; the rest is padding
    assert finish_of([2, 2, 2], stops) == (0, END_OF_TURN)  # an empty reply still ended
    assert finish_of([5, 6, 7, 8], stops) == (4, MAX_NEW_TOKENS)  # no stop: ran to the cap
    assert finish_of([5, 6, 7, 9], stops) == (3, END_OF_TURN)  # the stop as the last allowed token


# Hand-made rows: three ended (10, 20, 30 tokens; two right), two cut at the cap of 64 (one right anyway),
# one row of an older version without the fields (not counted).
ROWS = [
    {"finish": END_OF_TURN, "generated_tokens": 10, "correct": True},
    {"finish": END_OF_TURN, "generated_tokens": 20, "correct": False},
    {"finish": MAX_NEW_TOKENS, "generated_tokens": 64, "correct": False},
    {"finish": END_OF_TURN, "generated_tokens": 30, "correct": True},
    {"finish": MAX_NEW_TOKENS, "generated_tokens": 64, "correct": True},
    {"correct": True},
]


def test_termination_stats_of_hand_made_rows() -> None:
    """5 rows with the fields: 3 ended (3/5 = 0.6), 2 capped (0.4); lengths 10 20 64 30 64: mean 188/5 = 37.6,
    median of 10 20 30 64 64 = 30; accuracy when ended: rows 0 and 3 of the three = 2/3."""
    stats = termination_stats(ROWS)
    assert stats == {
        "termination_rows": 5, "ended_at_end_of_turn": 3, "hit_max_new_tokens": 2, "end_of_turn_share": 0.6,
        "max_new_tokens_share": 0.4, "mean_generated_tokens": pytest.approx(37.6), "median_generated_tokens": 30,
        "accuracy_when_ended": pytest.approx(2 / 3),
    }


def test_termination_stats_without_data_are_none() -> None:
    assert termination_stats([{"correct": True}]) == {
        "termination_rows": 0, "ended_at_end_of_turn": 0, "hit_max_new_tokens": 0, "end_of_turn_share": None,
        "max_new_tokens_share": None, "mean_generated_tokens": None, "median_generated_tokens": None,
        "accuracy_when_ended": None,
    }
    # Every reply capped: no accuracy among the ended ones, not 0%.
    capped = termination_stats([{"finish": MAX_NEW_TOKENS, "generated_tokens": 8, "correct": True}])
    assert capped["accuracy_when_ended"] is None and capped["max_new_tokens_share"] == 1.0


def test_termination_line_and_table() -> None:
    summary = {"model_path": "m", "total_examples": 6, "accuracy": 0.5, "strict_accuracy": 0.25, "examples_per_s": 2.0,
               "max_new_tokens": 64, **termination_stats(ROWS)}
    assert termination_line(summary) == (
        "termination: 3/5 ended at end of turn (60.0%), 2 hit --max_new_tokens 64 (40.0%); reply length mean 37.6, "
        "median 30 tokens; accuracy when ended 66.7%")
    header, _, row = format_table([summary]).splitlines()
    assert header.split() == ["model", "examples", "accuracy", "strict", "ended", "capped", "mean", "tokens", "acc",
                              "ended", "examples/s"]
    assert row.split() == ["m", "6", "50.0%", "25.0%", "60.0%", "40.0%", "37.6", "66.7%", "2.00"]


def test_generation_reports_how_it_ended(tiny_model_dirs, tiny_chats) -> None:
    """A tiny Llama, greedy: with the third token it writes made a stop token, the reply ends there after 2 tokens;
    with a cap of 2 new tokens it is cut before reaching it, at 2 tokens."""
    model, tokenizer = load_tiny(tiny_model_dirs["llama"])
    prompt = render_prompts(tokenizer, [tiny_chats[0]["messages"][:2]])
    free = model.generate(input_ids=torch.tensor(prompt), max_new_tokens=8, do_sample=False,
                          eos_token_id=None)[0, len(prompt[0]):].tolist()
    stop = free[2]
    assert stop not in free[:2] and not set(free[:2]) & set(end_of_turn_ids(model, tokenizer))
    model.generation_config.eos_token_id = stop
    [[ended]] = list(iter_generations(model, tokenizer, prompt, 1, 8))
    assert (ended.position, ended.tokens, ended.finish) == (0, 2, END_OF_TURN)
    assert ended.text == tokenizer.decode(free[:2], skip_special_tokens=True).strip()
    [[capped]] = list(iter_generations(model, tokenizer, prompt, 1, 2))
    assert (capped.tokens, capped.finish) == (2, MAX_NEW_TOKENS)


def test_evaluate_stores_and_resumes_termination(tmp_path, monkeypatch, tiny_model_dirs, capsys) -> None:
    """Canned replies: problems 0 and 2 end (12 and 7 tokens), 1 and 3 hit the cap of 40. Rows keep the fields,
    the summary holds 2/4 ended, mean (12 + 40 + 7 + 40) / 4 = 24.75, median (12 + 40) / 2 = 26, and accuracy
    when ended 1/2 (problem 0's 18 is right, problem 2's 7 wrong); a resumed run that generates nothing keeps them."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    monkeypatch.setattr(evaluate, "_load", lambda model_path, device, dtype: (None, tokenizer))
    canned = {0: ("So \\boxed{18}.", 12, END_OF_TURN), 1: ("2 + 2 = 4 and then", 40, MAX_NEW_TOKENS),
              2: ("#### 7", 7, END_OF_TURN), 3: ("He runs 9 times", 40, MAX_NEW_TOKENS)}
    questions = [row["question"] for row in GSM8K_ROWS]

    def iter_generations(model, tokenizer, prompts, batch_size, max_new_tokens, temperature=0.0):
        texts = [tokenizer.decode(ids) for ids in prompts]
        problem = [next(k for k, q in enumerate(questions) if q in text) for text in texts]
        yield [Generation(i, *canned[problem[i]]) for i in range(len(prompts))]

    monkeypatch.setattr(evaluate, "iter_generations", iter_generations)
    test_file = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    out = tmp_path / "res.jsonl"
    cfg = EvaluateConfig(model_path="m", test_file=str(test_file), output_file=str(out), max_new_tokens=40)
    assert run_evaluate(cfg) == 0
    rows = {r["index"]: r for r in read_rows(out)}
    assert {i: (r["generated_tokens"], r["finish"]) for i, r in rows.items()} == {
        i: (tokens, finish) for i, (_, tokens, finish) in canned.items()}
    expected = {"termination_rows": 4, "ended_at_end_of_turn": 2, "hit_max_new_tokens": 2, "end_of_turn_share": 0.5,
                "max_new_tokens_share": 0.5, "mean_generated_tokens": 24.75, "median_generated_tokens": 26,
                "accuracy_when_ended": 0.5}
    summary = json.loads(summary_path(out).read_text())
    assert {k: summary[k] for k in expected} == expected
    assert summary["accuracy"] == 0.25  # only problem 0
    assert "m: termination: 2/4 ended at end of turn (50.0%), 2 hit --max_new_tokens 40 (50.0%)" in capsys.readouterr().out
    provenance = summary["provenance"]
    assert provenance["precision"] == summary["precision"] and provenance["stepjepa_version"]
    assert {"git_commit", "git_dirty", "machine", "command"} <= provenance.keys()
    summary_path(out).unlink()
    assert run_evaluate(cfg) == 0  # everything done: the summary is rebuilt from the rows
    again = json.loads(summary_path(out).read_text())
    assert again["generated_this_run"] == 0 and {k: again[k] for k in expected} == expected
