"""Evaluation: batched generation equals one-at-a-time, resume after an interruption, summaries, flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import stepjepa.evaluation.evaluate as evaluate
from stepjepa.data import DEFAULT_SYSTEM_PROMPT
from stepjepa.evaluation.config import EvaluateConfig
from stepjepa.evaluation.evaluate import load_problems, run_evaluate, summary_path
from stepjepa.evaluation.generation import (
    END_OF_TURN,
    Generation,
    end_of_turn_ids,
    generate_responses,
    render_prompts,
)

# Four GSM8K rows as published (the first two of the test split, two shortened).
GSM8K_ROWS = [
    {"question": "Janet's ducks lay 16 eggs per day. She eats three... How much does she make?",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts\n#### 3"},
    {"question": "Josh buys a house for $80,000 and puts in $50,000 in repairs. How much profit did he make?",
     "answer": "So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70,000"},
    {"question": "James runs 3 sprints 3 times a week, 60 meters each. How many meters a week?",
     "answer": "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=540>>540 meters\n#### 540"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def gsm8k_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "test.jsonl", GSM8K_ROWS)


# --- flags and test files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_file": "t.jsonl"}, "--model_path"),
        ({"model_path": "m"}, "--test_file"),
        ({"model_path": "m", "test_file": "t", "max_new_tokens": 0}, "--max_new_tokens"),
        ({"model_path": "m", "test_file": "t", "temperature": -0.5}, "--temperature"),
        ({"model_path": "m", "test_file": "t", "temperature": float("nan")}, "--temperature"),
        ({"model_path": "m", "test_file": "t", "batch_size": 0}, "--batch_size"),
        ({"model_path": "m", "test_file": "t", "max_examples": 0}, "--max_examples"),
        ({"model_path": "m", "test_file": "t", "device": "gpu"}, "--device"),
        ({"model_path": "m", "test_file": "t", "compare": ["m"]}, "twice"),
    ],
)
def test_bad_flags_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EvaluateConfig(**kwargs)


def test_compare_alone_names_the_models() -> None:
    cfg = EvaluateConfig(test_file="t", compare=["a", "b"])
    assert cfg.model_paths() == ["a", "b"]
    assert EvaluateConfig(model_path="a", test_file="t", compare=["b"]).model_paths() == ["a", "b"]


def test_gsm8k_file_uses_training_prompt_unless_asked(gsm8k_file) -> None:
    problems = load_problems(str(gsm8k_file))
    assert [p.gt_answer for p in problems] == ["18", "3", "70000", "540"]
    assert problems[1].messages == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": GSM8K_ROWS[1]["question"]},
    ]
    # GSM8K as published has no system prompt of its own.
    own = load_problems(str(gsm8k_file), use_test_prompts=True)
    assert own[1].messages == [{"role": "user", "content": GSM8K_ROWS[1]["question"]}]


def test_chat_file_answer_field_or_assistant_message(tmp_path) -> None:
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "2 + 2 = 4\n\nSo \\boxed{4}."}]},
        {"messages": [{"role": "user", "content": "Half of 9?"}], "answer": "4.5"},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    default = load_problems(str(path))
    assert [p.gt_answer for p in default] == ["4", "4.5"]
    assert [p.question for p in default] == ["2+2?", "Half of 9?"]
    assert default[0].messages[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert len(default[0].messages) == 2  # the assistant's reply is never part of the prompt
    own = load_problems(str(path), use_test_prompts=True)
    assert own[0].messages[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q", "answer": "no number here"}, "no numeric ground-truth"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no numeric ground-truth"),
        ({"messages": [{"role": "assistant", "content": "5"}]}, "no user message"),
        ({"prompt": "q"}, "expected"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_rows_name_their_line(tmp_path, row, message) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GSM8K_ROWS[0], row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{message}"):
        load_problems(str(path))


# --- generation on tiny models ------------------------------------------------------------------------------------


def load_tiny(path: Path):
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_batched_greedy_equals_batch_size_one(tiny_model_dir, tiny_chats) -> None:
    model, tokenizer = load_tiny(tiny_model_dir)
    # Questions repeated 1-3 times: prompts of several lengths, so batches need padding.
    chats = [
        [chat["messages"][0], {"role": "user", "content": " ".join([chat["messages"][1]["content"]] * (1 + i % 3))}]
        for i, chat in enumerate(tiny_chats[:6])
    ]
    lengths = {len(ids) for ids in render_prompts(tokenizer, chats)}
    assert len(lengths) > 1, "prompts of one length would not exercise the padding"
    one = generate_responses(model, tokenizer, chats, batch_size=1, max_new_tokens=10)
    assert any(one)
    # Batches of 4 and 2: a full one and a short last one.
    assert generate_responses(model, tokenizer, chats, batch_size=4, max_new_tokens=10) == one


def test_generation_stops_at_end_of_turn(tiny_model_dirs, tiny_chats) -> None:
    model, tokenizer = load_tiny(tiny_model_dirs["llama"])
    prompt = render_prompts(tokenizer, [tiny_chats[0]["messages"][:2]])
    free = model.generate(
        input_ids=torch.tensor(prompt), max_new_tokens=8, do_sample=False, eos_token_id=None
    )[0, len(prompt[0]) :].tolist()
    # Pretend the third token the model writes ends the turn: the reply must stop right before it.
    stop = free[2]
    cut = free.index(stop)
    model.generation_config.eos_token_id = stop
    [response] = generate_responses(model, tokenizer, [tiny_chats[0]["messages"][:2]], max_new_tokens=8)
    assert response == tokenizer.decode(free[:cut], skip_special_tokens=True).strip()


def test_sampling_repeats_with_its_seed(tmp_path, tiny_model_dirs, chat_file) -> None:
    def responses(name: str, seed: int) -> dict[int, str]:
        out = tmp_path / f"{name}.jsonl"
        run_evaluate(EvaluateConfig(
            model_path=str(tiny_model_dirs["llama"]), test_file=str(chat_file), output_file=str(out),
            max_examples=3, max_new_tokens=8, temperature=1.0, seed=seed, device="cpu",
        ))
        return {r["index"]: r["generated_response"] for r in read_rows(out)}

    first = responses("a", seed=1)
    assert responses("b", seed=1) == first
    # Near-uniform sampling over ~500 tokens: another seed repeating 24 tokens would be a plumbing bug.
    assert responses("c", seed=2) != first


def test_end_of_turn_ids_include_the_template_token(tiny_model_dirs) -> None:
    model, tokenizer = load_tiny(tiny_model_dirs["llama"])
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in end_of_turn_ids(model, tokenizer)


# --- the command: rows, resume, summary, compare -----------------------------------------------------------------


def fake_generations(responses: dict[str, str], calls: list[int]):
    """Stands in for the model: the canned response of each prompt whose question it contains."""

    def iter_generations(model, tokenizer, prompts, batch_size, max_new_tokens, temperature=0.0):
        calls.append(len(prompts))
        texts = [tokenizer.decode(ids) for ids in prompts]
        positions = list(range(len(prompts)))
        for start in range(0, len(positions), batch_size):
            yield [Generation(i, reply, len(tokenizer(reply)["input_ids"]), END_OF_TURN)
                   for i in positions[start : start + batch_size]
                   for reply in [next(r for q, r in responses.items() if q in texts[i])]]

    return iter_generations


@pytest.fixture
def canned(monkeypatch, tiny_model_dirs):
    """The tiny Llama's tokenizer with canned replies: right/boxed, right/last number only, right/####, wrong."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    monkeypatch.setattr(evaluate, "_load", lambda model_path, device, dtype: (None, tokenizer))
    responses = {
        GSM8K_ROWS[0]["question"]: "16 - 3 - 4 = 9 eggs.\n\n9 * 2 = 18 dollars.\n\nSo \\boxed{18}.",
        GSM8K_ROWS[1]["question"]: "It takes 2 / 2 = 1 white bolt, 2 + 1 = 3 bolts.",
        GSM8K_ROWS[2]["question"]: "Profit: 200,000 - 130,000.\n#### 70,000",
        GSM8K_ROWS[3]["question"]: "He runs 9 times 6 = 54 meters. \\boxed{54}",
    }
    calls: list[int] = []
    monkeypatch.setattr(evaluate, "iter_generations", fake_generations(responses, calls))
    return calls


def test_rows_and_summary(tmp_path, gsm8k_file, canned) -> None:
    """Flexible: rows 0, 1, 2 right (3/4 = 0.75); strict: row 1 has no box or ####, so 0 and 2 (2/4 = 0.5)."""
    out = tmp_path / "res.jsonl"
    cfg = EvaluateConfig(model_path="m", test_file=str(gsm8k_file), output_file=str(out), batch_size=3)
    assert run_evaluate(cfg) == 0
    rows = sorted(read_rows(out), key=lambda r: r["index"])
    assert [r["gen_answer"] for r in rows] == ["18", "3", "70000", "54"]
    assert [r["gen_answer_strict"] for r in rows] == ["18", None, "70000", "54"]
    assert [r["correct"] for r in rows] == [True, True, True, False]
    assert [r["strict_correct"] for r in rows] == [True, False, True, False]
    assert rows[2]["ground_truth"] == GSM8K_ROWS[2]["answer"] and rows[2]["gt_answer"] == "70000"
    for row in rows:
        assert {"index", "question", "ground_truth", "generated_response", "gt_answer", "gen_answer", "correct",
                "accuracy_so_far"} <= row.keys()
    # The last row written carries the accuracy over all four.
    assert read_rows(out)[-1]["accuracy_so_far"] == 0.75
    summary = json.loads(summary_path(out).read_text())
    assert summary_path(out) == tmp_path / "res_summary.json"
    assert summary["total_examples"] == 4 and summary["correct"] == 3
    assert summary["accuracy"] == summary["flexible_accuracy"] == 0.75
    assert summary["strict_accuracy"] == 0.5
    assert summary["model_path"] == "m" and summary["test_file"] == str(gsm8k_file)
    assert summary["max_new_tokens"] == 512 and summary["temperature"] == 0.0
    assert summary["examples_per_s"] > 0
    # A rerun finds everything done: nothing is generated, the summary (and its measured speed) stays.
    assert run_evaluate(cfg) == 0
    assert canned == [4]
    assert json.loads(summary_path(out).read_text())["examples_per_s"] == summary["examples_per_s"]


def test_max_examples_takes_the_first_problems(tmp_path, gsm8k_file, canned) -> None:
    out = tmp_path / "res.jsonl"
    run_evaluate(EvaluateConfig(model_path="m", test_file=str(gsm8k_file), output_file=str(out), max_examples=2))
    assert sorted(r["index"] for r in read_rows(out)) == [0, 1]
    assert json.loads(summary_path(out).read_text())["total_examples"] == 2


def test_results_of_another_model_are_not_reused(tmp_path, gsm8k_file, canned) -> None:
    out = tmp_path / "res.jsonl"
    run_evaluate(EvaluateConfig(model_path="a", test_file=str(gsm8k_file), output_file=str(out)))
    before = out.read_text()
    with pytest.raises(ValueError, match="holds results of model 'a', not 'b'"):
        run_evaluate(EvaluateConfig(model_path="b", test_file=str(gsm8k_file), output_file=str(out)))
    assert out.read_text() == before


def test_resume_after_interruption(tmp_path, monkeypatch, tiny_model_dirs, chat_file, capsys) -> None:
    """Ctrl-C after 5 of 8 problems: one line, status 130; a rerun generates the other 3, each problem once."""
    out = tmp_path / "res.jsonl"
    cfg = EvaluateConfig(
        model_path=str(tiny_model_dirs["gpt2"]), test_file=str(chat_file), output_file=str(out),
        max_examples=8, max_new_tokens=6, batch_size=2, device="cpu",
    )
    real_append, appended = evaluate.append_jsonl, []

    def append_then_die(path, row):
        if len(appended) == 5:
            raise KeyboardInterrupt
        appended.append(row["index"])
        real_append(path, row)

    monkeypatch.setattr(evaluate, "append_jsonl", append_then_die)
    assert run_evaluate(cfg) == 130
    err = capsys.readouterr().err  # progress bars, then the one line
    assert err.endswith(f"\nstepjepa evaluate: interrupted by SIGINT; the problems finished so far are kept in {out}; "
                        "run the same command again to resume\n")
    assert "Traceback" not in err
    assert len(read_rows(out)) == 5 and not summary_path(out).exists()

    monkeypatch.setattr(evaluate, "append_jsonl", real_append)
    generated = []
    real_iter = evaluate.iter_generations

    def counting(model, tokenizer, prompts, *args):
        generated.append(len(prompts))
        return real_iter(model, tokenizer, prompts, *args)

    monkeypatch.setattr(evaluate, "iter_generations", counting)
    run_evaluate(cfg)
    rows = read_rows(out)
    assert generated == [3]
    assert sorted(r["index"] for r in rows) == list(range(8))
    assert json.loads(summary_path(out).read_text())["total_examples"] == 8


def test_compare_prints_one_table(tmp_path, tiny_model_dirs, chat_file, capsys) -> None:
    llama, gpt2 = str(tiny_model_dirs["llama"]), str(tiny_model_dirs["gpt2"])
    out = tmp_path / "cmp.jsonl"
    cfg = EvaluateConfig(
        test_file=str(chat_file), output_file=str(out), compare=[llama, gpt2], max_examples=3, max_new_tokens=4,
        device="cpu",
    )
    assert run_evaluate(cfg) == 0
    table = capsys.readouterr().out.splitlines()[-4:]
    assert table[0].split() == ["model", "examples", "accuracy", "strict", "ended", "capped", "mean", "tokens", "acc",
                                "ended", "examples/s"]
    assert table[2].startswith(llama) and table[3].startswith(gpt2)
    for model in (llama, gpt2):
        results = evaluate.output_for(str(out), model, several=True)
        assert results.parent == tmp_path and results.name.startswith("cmp_") and results.suffix == ".jsonl"
        assert len(read_rows(results)) == 3
        assert json.loads(summary_path(results).read_text())["model_path"] == model
