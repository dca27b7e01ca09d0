"""`stepjepa train --packing`: several conversations per row in every mode, and the flags' refusals."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from stepjepa.cli import run_command

MODES = {
    "regular": ["--regular"],
    "llm_jepa": ["--predictors", "1"],
    "step_jepa": ["--step_jepa", "--predictors", "2"],
    "step_jepa_random": ["--step_jepa", "--predictors", "1", "--step_pairs", "random", "--target_stop_grad"],
}


def packed_run(tiny_model_dirs, chat_file: Path, out: Path, flags: list[str], capsys) -> tuple[int, int, str]:
    """Train one epoch packed; the rows and examples the start line names, and everything printed."""
    argv = ["--train_file", str(chat_file), *flags, "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir",
            str(out), "--packing", "--pack_length", "300", "--batch_size", "2", "--logging_steps", "1",
            "--debug", "1", "--learning_rate", "1e-3"]
    assert run_command("train", argv) == 0
    printed = capsys.readouterr().out
    found = re.search(r"packing: (\d+) examples in (\d+) rows of at most 300 tokens", printed)
    assert found, printed
    return int(found.group(1)), int(found.group(2)), printed


# The fast tier trains the richest path (Step-JEPA's random pairs: packs, one pair per example, select_pairs); the
# modes' packed rows are checked against separate passes in tests/core/test_packing.py, so their runs are slow.
@pytest.mark.parametrize("mode", [pytest.param("step_jepa", marks=pytest.mark.slow),
                                  pytest.param("regular", marks=pytest.mark.slow),
                                  pytest.param("llm_jepa", marks=pytest.mark.slow), "step_jepa_random"])
def test_packing_trains_every_mode(tiny_model_dirs, chat_file, tmp_path, capsys, mode):
    """An epoch of 20 chats (about 100 tokens each, with their views) in rows of 300: several a row, so fewer
    steps than the 10 an unpacked epoch at --batch_size 2 takes; every step's losses finite."""
    out = tmp_path / "out"
    examples, rows, _ = packed_run(tiny_model_dirs, chat_file, out, MODES[mode], capsys)
    assert examples == 20 and rows < 20
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == math.ceil(rows / 2) < 10
    assert summary["config"]["packing"] is True and summary["config"]["pack_length"] == 300
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, summary["global_step"] + 1))
    assert all(math.isfinite(row["loss"]) and math.isfinite(row["lm_loss"]) for row in logged)
    if mode == "regular":
        assert all(row["jepa_loss"] is None for row in logged)
    else:
        assert all(row["jepa_loss"] is not None and math.isfinite(row["jepa_loss"]) for row in logged)
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("flags,message", [
    (["--pack_length", "256"], "--pack_length sizes the rows of --packing; add --packing or drop --pack_length"),
    (["--packing", "--pack_length", "0"], "--pack_length must be >= 1, got 0"),
    (["--packing", "--streaming", "--max_steps", "2"], "--packing plans its rows over the whole data set; it cannot "
                                                      "with --streaming"),
    (["--packing", "--group_by_length"], "--packing fills each row already; drop --group_by_length"),
])
def test_packing_flags_refused_in_one_line(chat_file, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert run_command("train", ["--train_file", str(chat_file), "--output_dir", str(out), *flags]) == 2
    assert capsys.readouterr().err == f"stepjepa train: error: {message}\n"
    assert not out.exists()


def test_debug_7_prints_each_pack_as_one_row(tiny_model_dirs, chat_file, tmp_path, capsys):
    """The layout print shows the rows as trained: two conversations in the first row, the second seeing only
    itself (its first token's mask row has one mark, on itself), each with its own pair."""
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--packing", "--pack_length", "300",
            "--debug", "7", "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(tmp_path / "out")]
    assert run_command("train", argv) == 0
    printed = capsys.readouterr().out
    first = printed.split("--- row 1")[0]
    assert first.count("pair p") >= 2 and first.count("predictor p1") >= 2
    lines = [line for line in first.splitlines() if line[:4].strip().isdigit()]
    restarts = [line for line in lines[1:] if line.split()[1] == "0" and "prompt" in line]  # position 0 again
    assert restarts, first
    index = int(restarts[0].split()[0])
    assert restarts[0].split()[-1] == "." * index + "#" + "." * (len(lines) - index - 1)
    assert not (tmp_path / "out").exists()


def test_default_pack_length_holds_an_example_with_its_views():
    """--max_length, or twice that for LLM-JEPA (its two views about double an example's row)."""
    from stepjepa.training.config import TrainConfig

    rows = {flags: TrainConfig(train_file="t.jsonl", packing=True, max_length=300, **dict(flags)).row_length
            for flags in ((("regular", True),), (("step_jepa", True),), ())}
    assert rows == {(("regular", True),): 300, (("step_jepa", True),): 300, (): 600}
    assert TrainConfig(train_file="t.jsonl", packing=True, pack_length=128).row_length == 128
