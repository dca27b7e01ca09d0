"""The console of a run: the Trainer's step bar shows for a run watched live (--debug 2 and up; 5 is the default)
and not for a sweep's children (--debug 1), so a sweep's console is one line per stage, not one bar per child."""

from __future__ import annotations

import pytest

from stepjepa.commands import parse_config
from stepjepa.training.training_args import training_arguments


@pytest.mark.parametrize(("debug", "bar"), [("0", False), ("1", False), ("2", True), ("5", True)])
def test_the_step_bar_follows_debug(tmp_path, debug, bar):
    cfg = parse_config("train", ["--train_file", "x.jsonl", "--output_dir", str(tmp_path), "--debug", debug])
    assert training_arguments(cfg, has_eval=False).disable_tqdm is (not bar)


def test_a_run_at_debug_1_draws_no_step_bar(tiny_model_dirs, chat_file, tmp_path, capsys):
    """--debug 1 (the sweep's children): the run's output holds no tqdm step bar ("2/2 [" of max_steps 2)."""
    from stepjepa.cli import run_command

    argv = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["gpt2"]), "--regular",
            "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--batch_size", "2", "--debug", "1"]
    assert run_command("train", argv) == 0
    captured = capsys.readouterr()
    assert "2/2 [" not in captured.out + captured.err
