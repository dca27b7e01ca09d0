"""stepjepa prepare / validate: each input format on hand-written awkward cases, stats, safety, validation."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA, train_tokenizer
from hypothesis import given
from hypothesis import strategies as st

from stepjepa.core.steps import join_steps, split_steps
from stepjepa.data import DEFAULT_SYSTEM_PROMPT, detect_format, gsm8k_problem, is_hub_id, load_hub_records
from stepjepa.data.config import PrepareConfig, ValidateConfig
from stepjepa.data.prepare import run_prepare, run_validate
from stepjepa.data.stats import percentiles, token_counts
from stepjepa.data.trace import strip_think, trace_steps


def write_lines(path: Path, rows: list) -> Path:
    """Rows as JSONL; a str row is written verbatim (for broken lines)."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    """JSONL rows, split on "\n" only: str.splitlines would also split inside strings at U+2028 (GSM8K has one)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def prepare(tmp_path: Path, rows: list, **flags) -> tuple[list[dict], dict]:
    """Run prepare on ``rows``; returns the output rows and the stats."""
    source = write_lines(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    assert run_prepare(PrepareConfig(input=str(source), output=str(output), **flags)) == 0
    return read_rows(output), json.loads((tmp_path / "out.jsonl.stats.json").read_text())


def assistant(row: dict) -> str:
    return row["messages"][2]["content"]


# ---- gsm8k -----------------------------------------------------------------------------------


def test_gsm8k_row_becomes_blank_line_steps_with_boxed_answer(tmp_path):
    answer = "She has 3 + 4 = <<3+4=7>>7 apples.\nShe gives 2 away: 7 - 2 = <<7-2=5>>5.\n#### 5"
    rows, stats = prepare(tmp_path, [{"question": "How many apples?", "answer": answer}])
    assert rows == [
        {
            "messages": [
                {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": "How many apples?"},
                {
                    "role": "assistant",
                    "content": "She has 3 + 4 = 7 apples.\n\nShe gives 2 away: 7 - 2 = 5.\nThe answer is \\boxed{5}.",
                },
            ],
            "question": "How many apples?",
            "answer": "5",
            "total_steps": 2,
        }
    ]
    assert stats["format"] == "gsm8k"
    assert stats["changed"] == {"calculator annotations removed": 1}
    assert stats["steps_per_example"] == {"2": 1}


def test_gsm8k_final_line_with_dollar_and_commas(tmp_path):
    answer = "Each costs $617.\nTwo cost 2 * 617 = $<<2*617=1234>>1,234.\n#### $1,234"
    rows, _ = prepare(tmp_path, [{"question": "Cost?", "answer": answer}])
    assert rows[0]["answer"] == "1234"
    assert assistant(rows[0]).endswith("Two cost 2 * 617 = $1,234.\nThe answer is \\boxed{1234}.")


def test_gsm8k_keep_calculator(tmp_path):
    answer = "Half of 48 is 48/2=<<48/2=24>>24.\nTotal 48+24=<<48+24=72>>72.\n#### 72"
    rows, stats = prepare(tmp_path, [{"question": "q", "answer": answer}], keep_calculator=True)
    assert assistant(rows[0]) == "Half of 48 is 48/2=<<48/2=24>>24.\n\nTotal 48+24=<<48+24=72>>72.\nThe answer is \\boxed{72}."
    assert stats["changed"] == {}


def test_gsm8k_windows_line_endings_and_trailing_empty_lines(tmp_path):
    answer = "First 2 + 2 = 4.\r\n\r\nThen 4 * 3 = 12.\r\n#### 12\r\n\r\n"
    rows, stats = prepare(tmp_path, [{"question": "Q?\r\nReally?", "answer": answer}])
    assert assistant(rows[0]) == "First 2 + 2 = 4.\n\nThen 4 * 3 = 12.\nThe answer is \\boxed{12}."
    assert rows[0]["question"] == "Q?\nReally?"
    assert stats["changed"] == {"line endings normalised": 1, "empty lines removed": 1}


def test_crlf_file_with_byte_order_mark_and_a_bad_byte(tmp_path):
    good = json.dumps({"question": "q", "answer": "a = 1.\nb = 2.\n#### 2"}).encode()
    (tmp_path / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + b'{"question": "\xff"}\r\n' + good + b"\r\n")
    output = tmp_path / "out.jsonl"
    run_prepare(PrepareConfig(input=str(tmp_path / "in.jsonl"), output=str(output)))
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert (stats["rows_read"], stats["rows_written"], stats["dropped"]) == (3, 2, {"not UTF-8 text": [2]})
    assert [row["answer"] for row in read_rows(output)] == ["2", "2"]


def test_gsm8k_drops_are_counted_by_reason_with_line_numbers(tmp_path):
    good = {"question": "q", "answer": "a = 1.\nb = 2.\n#### 2"}
    rows, stats = prepare(
        tmp_path,
        [
            good,  # line 1
            '{"question": "broken',  # line 2
            {"question": "q", "answer": "only one step.\n#### 3"},  # line 3
            {"question": "q", "answer": "a.\nb.\nThe answer is 3"},  # line 4
            {"question": "", "answer": "a.\nb.\n#### 3"},  # line 5
            [1, 2],  # line 6
        ],
    )
    assert len(rows) == 1
    assert stats["rows_read"] == 6 and stats["rows_written"] == 1
    assert stats["dropped"] == {
        "invalid JSON (Unterminated string starting at)": [2],
        "fewer than 2 steps": [3],
        "no final '#### N' line": [4],
        "no question": [5],
        "not a JSON object": [6],
    }


def test_gsm8k_min_steps_flag_keeps_one_step_rows(tmp_path):
    rows, _ = prepare(tmp_path, [{"question": "q", "answer": "only one step.\n#### 3"}], min_steps=1)
    assert assistant(rows[0]) == "only one step.\nThe answer is \\boxed{3}."
    assert rows[0]["total_steps"] == 1


@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n<"), min_size=1).filter(str.strip),
        min_size=1,
        max_size=6,
    )
)
def test_gsm8k_every_answer_line_is_one_step(lines):
    problem = gsm8k_problem({"question": "q", "answer": "\n".join(lines) + "\n#### 7"}, False, Counter())
    expected = [line.strip() for line in lines]
    expected[-1] += "\nThe answer is \\boxed{7}."
    assert problem.steps == expected
    assert split_steps(join_steps(problem.steps)) == expected


# ---- steps: split and join -------------------------------------------------------------------

# A step: lines that each hold something besides spaces, joined by single newlines (no blank line inside).
STEP = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1).filter(str.strip),
    min_size=1,
    max_size=3,
).map("\n".join)


@given(st.lists(STEP, min_size=1, max_size=8))
def test_split_steps_inverts_join_steps(steps):
    assert split_steps(join_steps(steps)) == steps


# ---- trace -----------------------------------------------------------------------------------


def test_trace_step_markers_merge_continuations_and_drop_trivial_fragments():
    text = (
        "**Solution:**\n\n"
        "**Step 1:** Find the apples.\n\n"
        "Ann has 3 apples.\n\n"
        "---\n\n"
        "**Step 2:** Add Bob's.\n\n"
        "1. Bob has 4.\n\n"
        "2. Together 3 + 4 = 7.\n\n"
        "**Final Answer:**\n\\boxed{7}"
    )
    changes = Counter()
    assert trace_steps(text, changes) == [
        "**Step 1:** Find the apples.\nAnn has 3 apples.",
        "**Step 2:** Add Bob's.\n1. Bob has 4.\n2. Together 3 + 4 = 7.\n**Final Answer:**\n\\boxed{7}",
    ]
    # "**Solution:**" and "---" are trivial; the "1." and "2." items are not markers when "Step N" is used.
    assert changes == {"trivial fragments dropped": 2, "continuation paragraphs merged": 4}


def test_trace_numbered_markers_and_plain_paragraphs():
    assert trace_steps("Intro text here.\n\n1. First.\nstill first.\n\nmore first.\n\n2) Second.", Counter()) == [
        "Intro text here.",
        "1. First.\nstill first.\nmore first.",
        "2) Second.",
    ]
    assert trace_steps("\n\nA paragraph.\n\n\n\nAnother one.\n  \n", Counter()) == ["A paragraph.", "Another one."]


def test_strip_think_nested_lone_close_and_unclosed():
    assert strip_think("<think>a <think>b</think> c</think>\n\nStep 1: x") == ("\n\nStep 1: x", True)
    assert strip_think("I think so.\n</think>\n\nAnswer: 5") == ("\n\nAnswer: 5", True)
    # Nothing outside the thinking: the thinking is the solution.
    assert strip_think("<think>Only thoughts.") == ("Only thoughts.", False)
    assert strip_think("No tags.") == ("No tags.", False)


def test_trace_rows(tmp_path):
    response = (
        "<think>\nHmm <think>nested</think> ok\n</think>\r\n\r\n"
        "**Step 1:** Ann has 3.\r\n\r\n**Step 2:** Bob adds 4, so 3 + 4 = 7.\r\n\r\nThat is 7 in all.\r\n\r\n\\boxed{7}"
    )
    rows, stats = prepare(
        tmp_path,
        [
            {"question": "Sum?", "deepseek_response": response, "ground_truth": "7"},
            {"question": "Sum?", "deepseek_response": "Step 1: 1 + 1 = 2.\n\nStep 2: so \\boxed{3}", "ground_truth": "2"},
            {"problem": "Sum?", "deepseek_response": "Step 1: a.\n\nStep 2: b is 2.", "answer": "x\n#### 2"},
            {"question": "Sum?", "deepseek_response": "Step 1: a.\n\nStep 2: b."},
        ],
    )
    assert [row["answer"] for row in rows] == ["7", "2"]
    assert assistant(rows[0]) == "**Step 1:** Ann has 3.\n\n**Step 2:** Bob adds 4, so 3 + 4 = 7.\nThat is 7 in all.\n\\boxed{7}"
    assert assistant(rows[1]) == "Step 1: a.\n\nStep 2: b is 2.\nThe answer is \\boxed{2}."
    assert stats["format"] == "trace"
    assert stats["dropped"] == {
        "boxed answer differs from the reference answer": [2],
        "no final answer (no \\boxed{} and no reference answer)": [4],
    }
    # Rows with each change: row 1 merged two paragraphs, counted once.
    assert stats["changed"] == {
        "line endings normalised": 1,
        "think blocks removed": 1,
        "continuation paragraphs merged": 1,
        "boxed answer appended": 1,
    }


def test_trace_needs_a_response_field(tmp_path):
    for first_row in ({"question": "q", "output": "x"}, 5):
        source = write_lines(tmp_path / "in.jsonl", [first_row])
        with pytest.raises(ValueError, match="--response_field"):
            run_prepare(PrepareConfig(input=str(source), output=str(tmp_path / "o.jsonl"), format="trace"))
    rows, _ = prepare(tmp_path, [{"question": "q", "output": "A.\n\nB \\boxed{1}"}], response_field="output")
    assert assistant(rows[0]) == "A.\n\nB \\boxed{1}"


# ---- chat ------------------------------------------------------------------------------------


def test_chat_rows_are_normalised(tmp_path):
    rows, stats = prepare(
        tmp_path,
        [
            {
                "messages": [
                    {"role": "user", "content": "Q\r\n"},
                    {"role": "assistant", "content": "\nStep a.\r\n\r\n\r\n \r\nStep b \\boxed{4}\n\n"},
                ]
            },
            {
                "messages": [
                    {"role": "system", "content": "Convert natural language to regular expression."},
                    {"role": "user", "content": "lines with dog"},
                    {"role": "assistant", "content": ".*dog.*"},
                ]
            },
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        ],
    )
    assert rows[0]["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Q\n"},
        {"role": "assistant", "content": "Step a.\n\nStep b \\boxed{4}"},
    ]
    assert (rows[0]["answer"], rows[0]["total_steps"]) == ("4", 2)
    # One-step text-to-code rows are kept (chat needs one step by default); the last step is the answer.
    assert rows[1]["messages"][0]["content"] == "Convert natural language to regular expression."
    assert (rows[1]["question"], rows[1]["answer"], rows[1]["total_steps"]) == ("lines with dog", ".*dog.*", 1)
    assert stats["format"] == "chat"
    assert stats["dropped"] == {
        "roles are ['assistant', 'user'], expected [system,] user, assistant": [3],
        "assistant content is empty": [4],
    }
    assert stats["changed"] == {"line endings normalised": 1, "step separators normalised": 1, "system prompt added": 1}


def test_chat_system_prompt_flag_replaces_the_rows_own(tmp_path):
    chat = {"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    rows, stats = prepare(tmp_path, [chat], system_prompt="new")
    assert rows[0]["messages"][0] == {"role": "system", "content": "new"}
    assert stats["changed"] == {"system prompt replaced": 1}


def test_detect_format():
    assert detect_format({"messages": []}) == "chat"
    assert detect_format({"question": "q", "answer": "a\n#### 1"}) == "gsm8k"
    # A trace row that also carries the GSM8K answer is a trace.
    assert detect_format({"question": "q", "answer": "a\n#### 1", "deepseek_response": "r"}) == "trace"
    assert detect_format({"question": "q", "solution": "s"}, response_field="solution") == "trace"
    with pytest.raises(ValueError, match="--format"):
        detect_format({"question": "q", "answer": "no hashes"})


# ---- safety, flags, hub ----------------------------------------------------------------------


def test_existing_output_is_kept_without_force(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [{"question": "q", "answer": "a.\nb.\n#### 1"}])
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    with pytest.raises(ValueError, match="--force"):
        run_prepare(PrepareConfig(input=str(source), output=str(output)))
    assert output.read_text() == "precious\n"
    assert run_prepare(PrepareConfig(input=str(source), output=str(output), force=True)) == 0
    assert json.loads(output.read_text())["answer"] == "1"


def test_input_with_no_convertible_row_writes_nothing(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [{"question": "q", "answer": "one.\n#### 1"}])
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    with pytest.raises(ValueError, match="fewer than 2 steps: 1"):
        run_prepare(PrepareConfig(input=str(source), output=str(output), force=True))
    assert output.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ({}, "either --input or --synthetic"),
        ({"input": "x.jsonl", "synthetic": 5}, "either --input or --synthetic"),
        ({"synthetic": -1}, "--synthetic"),
        ({"synthetic": 5, "format": "gsm8k"}, "--format"),
        ({"input": "x.jsonl", "format": "csv"}, "gsm8k, trace, chat"),
        ({"input": "x.jsonl", "max_length": 512}, "--model_name"),
        ({"input": "x.jsonl", "min_steps": 0}, "--min_steps"),
    ],
)
def test_prepare_flags_are_checked(flags, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PrepareConfig(output="o.jsonl", **flags)


def test_missing_input_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_prepare(PrepareConfig(input=str(tmp_path / "nope.jsonl"), output=str(tmp_path / "o.jsonl")))


def test_hub_ids():
    assert is_hub_id("openai/gsm8k")
    assert not is_hub_id("data/train.jsonl")
    assert not is_hub_id("gsm8k")
    assert not is_hub_id("a/b/c")
    assert not is_hub_id("../data")


def test_hub_dataset_without_network_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ValueError, match=r"cannot load openai/gsm8k \(config main, split train\).*--input"):
        load_hub_records("openai/gsm8k", "main", "train")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ValueError, match="pip install datasets"):
        load_hub_records("openai/gsm8k", "main", "train")


def test_hub_rows_are_converted(monkeypatch, tmp_path):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "q", "answer": "a.\nb.\n#### 9"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    output = tmp_path / "out.jsonl"
    run_prepare(PrepareConfig(input="openai/gsm8k", hf_config="main", split="test", output=str(output)))
    assert calls == [("openai/gsm8k", "main", "test")]
    assert json.loads(output.read_text())["answer"] == "9"


# ---- tokens ----------------------------------------------------------------------------------


def test_percentiles_nearest_rank():
    # Ten values: p50 is the 5th smallest, p90 the 9th, p95 and p99 the 10th (ceil(9.5), ceil(9.9)).
    assert percentiles([10, 9, 8, 7, 6, 5, 4, 3, 2, 1]) == {"p50": 5, "p90": 9, "p95": 10, "p99": 10, "max": 10}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p95": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {}


CHAT = [
    {"role": "system", "content": "Solve step by step."},
    {"role": "user", "content": "Ann has 3 apples and buys 4 more. How many apples does Ann have?"},
    {"role": "assistant", "content": "Ann starts with 3 apples.\n\nAfter buying 4 more, Ann has 3 + 4 = 7 apples.\n\nThe answer is \\boxed{7}."},
]
STEP_2 = "After buying 4 more, Ann has 3 + 4 = 7 apples.\n\n"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A Llama-3-style tokenizer (".\\n\\n" merges into one token) saved alone: enough for load_tokenizer."""
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer("llama3").save_pretrained(path)
    return path


def test_token_counts_step_2_end(tokenizer_dir):
    from stepjepa.models import load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir))
    length, end = token_counts(tokenizer, CHAT)
    ids = tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)["input_ids"]
    assert length == len(ids)  # the template closes the turn with <|eot_id|>: nothing appended
    # Step 2's tokens, separator included, end exactly at `end`.
    assert tokenizer.decode(ids[:end]).endswith(STEP_2)
    assert not tokenizer.decode(ids[: end - 1]).endswith(STEP_2)
    one_step = CHAT[:2] + [{"role": "assistant", "content": "Seven."}]
    assert token_counts(tokenizer, one_step)[1] is None


def test_validate_step_2_beyond_max_length(tmp_path, tokenizer_dir, capsys):
    from stepjepa.models import load_tokenizer

    _, end = token_counts(load_tokenizer(str(tokenizer_dir)), CHAT)
    path = write_lines(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    assert run_validate(ValidateConfig(file=str(path), model_name=str(tokenizer_dir), max_length=end)) == 0
    assert run_validate(ValidateConfig(file=str(path), model_name=str(tokenizer_dir), max_length=end - 1)) == 1
    out = capsys.readouterr().out
    assert f"{path}:1: step 2 ends at token {end}, beyond max_length {end - 1}" in out


def test_prepare_token_stats(tmp_path, tokenizer_dir):
    from stepjepa.models import load_tokenizer

    length, end = token_counts(load_tokenizer(str(tokenizer_dir)), CHAT)
    _, stats = prepare(tmp_path, [{"messages": CHAT}], model_name=str(tokenizer_dir), max_length=end - 1)
    one = {"p50": length, "p90": length, "p95": length, "p99": length, "max": length}
    assert stats["tokens"]["conversation_tokens"] == one
    assert stats["tokens"]["step2_end_tokens"]["max"] == end
    assert stats["tokens"]["step2_beyond_max_length"] == 1


# ---- validate --------------------------------------------------------------------------------


def chat(*contents: str, roles: tuple[str, ...] = ("system", "user", "assistant"), **extra) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, contents)], **extra}


def test_validate_reports_every_problem_with_its_line(tmp_path, capsys):
    path = write_lines(
        tmp_path / "data.jsonl",
        [
            chat("s", "q", "one.\n\ntwo.", total_steps=2),  # line 1: clean
            "{not json",  # line 2
            chat("s", "q", "a", roles=("system", "assistant", "user")),  # line 3
            chat("s", "", "a.\n\nb."),  # line 4
            "",  # line 5: blank lines are skipped
            chat("s", "q", "one step only"),  # line 6
            chat("s", "q", "a.\n\nb.\n\nc.", total_steps=2),  # line 7
        ],
    )
    assert run_validate(ValidateConfig(file=str(path), step_jepa=True)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes)",
        f"{path}:3: roles are ['system', 'assistant', 'user'], expected [system,] user, assistant",
        f"{path}:4: user content is empty",
        f"{path}:6: fewer than two steps (1); Step-JEPA needs steps 1 and 2",
        f"{path}:7: total_steps is 2 but the assistant message has 3 steps",
        f"{path}: 6 rows, 5 problems in 5 rows",
    ]
    # Without --step_jepa a one-step row is fine.
    assert run_validate(ValidateConfig(file=str(write_lines(tmp_path / "one.jsonl", [chat("s", "q", "x")])))) == 0


def test_validate_unusable_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_validate(ValidateConfig(file=str(tmp_path / "missing.jsonl")))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        run_validate(ValidateConfig(file=str(tmp_path / "empty.jsonl")))
    (tmp_path / "table.csv").write_text("question,answer\nq,1\n")
    with pytest.raises(ValueError, match="no line is JSON"):
        run_validate(ValidateConfig(file=str(tmp_path / "table.csv")))


# ---- the published GSM8K training set --------------------------------------------------------

GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"


@pytest.mark.shared_data
@pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason="needs ../shared/data/gsm8k/train.jsonl")
def test_gsm8k_train_converts_completely(tmp_path):
    output = tmp_path / "gsm8k_step_jepa.jsonl"
    assert run_prepare(PrepareConfig(input=str(GSM8K_TRAIN), output=str(output))) == 0
    source, rows = read_rows(GSM8K_TRAIN), read_rows(output)
    assert len(source) == len(rows) == 7473
    for before, after in zip(source, rows):
        published = before["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", assistant(after))
        assert boxed == [published] and after["answer"] == published
        assert after["total_steps"] >= 2 and after["total_steps"] == len(assistant(after).split("\n\n"))
        assert "<<" not in assistant(after)
    assert run_validate(ValidateConfig(file=str(output), step_jepa=True)) == 0


def test_outputs_get_the_mode_of_a_plain_open_under_umask_022(tmp_path):
    from stepjepa.cli import main

    old = os.umask(0o022)
    try:
        assert main(["prepare", "--synthetic", "6", "--output", str(tmp_path / "train.jsonl")]) == 0
    finally:
        os.umask(old)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["train.jsonl", "train.jsonl.stats.json", "train_test.jsonl"]
    assert {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in written} == dict.fromkeys(written, 0o644)
