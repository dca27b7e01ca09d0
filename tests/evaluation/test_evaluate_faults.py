"""`stepjepa evaluate` faults (issue 24): resuming under other generation settings is refused in one line naming
the difference (before: old and new replies were mixed and the summary claimed the new settings); --restart
starts over, and only discards a results file of stepjepa evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepjepa.cli import run_command


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def evaluated(tmp_path, tiny_model_dirs, chat_file):
    """A finished evaluation of two problems (3 new tokens each, greedy); its argv and results file."""
    out = tmp_path / "res.jsonl"
    argv = ["--model_path", str(tiny_model_dirs["gpt2"]), "--test_file", str(chat_file), "--output_file", str(out),
            "--max_examples", "2", "--max_new_tokens", "3", "--device", "cpu"]
    assert run_command("evaluate", argv) == 0
    return argv, out


@pytest.mark.parametrize(("changed", "message"), [
    (["--max_new_tokens", "5"], "generated with --max_new_tokens 3, not 5"),
    (["--temperature", "0.7"], "generated with --temperature 0.0, not 0.7"),
    (["--use_test_prompts"], "generated with --use_test_prompts False, not True"),
])
def test_resume_under_other_generation_settings_is_refused(evaluated, capsys, changed, message) -> None:
    argv, out = evaluated
    before, summary = out.read_bytes(), (out.parent / "res_summary.json").read_bytes()
    capsys.readouterr()
    assert run_command("evaluate", [*argv, *changed]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "--restart" in err, err
    assert out.read_bytes() == before and (out.parent / "res_summary.json").read_bytes() == summary


def test_settings_that_change_no_reply_still_resume(evaluated, capsys) -> None:
    """Greedy decoding ignores the seed; the batch size changes no reply."""
    argv, out = evaluated
    assert run_command("evaluate", [*argv, "--seed", "7", "--batch_size", "1"]) == 0
    assert len(rows(out)) == 2
    assert json.loads((out.parent / "res_summary.json").read_text())["generated_this_run"] == 0


def test_sampling_resumed_with_another_seed_is_refused(tmp_path, tiny_model_dirs, chat_file, capsys) -> None:
    out = tmp_path / "res.jsonl"
    argv = ["--model_path", str(tiny_model_dirs["gpt2"]), "--test_file", str(chat_file), "--output_file", str(out),
            "--max_examples", "1", "--max_new_tokens", "2", "--device", "cpu", "--temperature", "0.8"]
    assert run_command("evaluate", [*argv, "--seed", "1"]) == 0
    assert run_command("evaluate", [*argv, "--seed", "2"]) == 2
    assert "generated with --seed 1, not 2" in capsys.readouterr().err


def test_restart_regenerates_every_problem_under_the_new_settings(evaluated, capsys) -> None:
    argv, out = evaluated
    assert run_command("evaluate", [*argv, "--max_new_tokens", "5", "--restart"]) == 0
    assert sorted(row["index"] for row in rows(out)) == [0, 1]
    assert [row["generation"]["max_new_tokens"] for row in rows(out)] == [5, 5]
    summary = json.loads((out.parent / "res_summary.json").read_text())
    assert (summary["max_new_tokens"], summary["generated_this_run"]) == (5, 2)
    # The new settings resume as usual.
    assert run_command("evaluate", [*argv, "--max_new_tokens", "5"]) == 0


def test_restart_discards_only_results_of_evaluate(tiny_model_dirs, chat_file, tmp_path, capsys) -> None:
    """--restart with a chat file that is not evaluate's results as --output_file: refused, the file kept. (The test
    file itself as --output_file is refused earlier, as an output over its input: tests/training/test_faults.py.)"""
    other = tmp_path / "other_chats.jsonl"
    other.write_bytes(chat_file.read_bytes())
    before = other.read_bytes()
    argv = ["--model_path", str(tiny_model_dirs["gpt2"]), "--test_file", str(chat_file), "--output_file",
            str(other), "--max_examples", "1", "--max_new_tokens", "2", "--device", "cpu", "--restart"]
    assert run_command("evaluate", argv) == 2
    assert "not a result row of stepjepa evaluate" in capsys.readouterr().err
    assert other.read_bytes() == before


def test_debug_0_draws_no_progress_bar_but_still_reports(evaluated, tmp_path, capsys) -> None:
    """A sweep's evaluations run at --debug 0: no per-problem bar on the console, the same result lines."""
    argv, _ = evaluated
    outputs = {}
    for debug in ("1", "0"):
        capsys.readouterr()
        out = tmp_path / f"debug{debug}.jsonl"
        assert run_command("evaluate", [*argv, "--output_file", str(out), "--debug", debug]) == 0
        outputs[debug] = capsys.readouterr()
    assert "problem" in outputs["1"].err and outputs["0"].err == ""  # tqdm draws on stderr
    assert outputs["0"].out.replace("debug0", "debug1") == outputs["1"].out

